package web

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// CookieName is the console session cookie: the API token, base64url
// encoded, HttpOnly so page scripts cannot read it.
const CookieName = "mamori_console"

// HeaderName must be present on every console API, login and logout
// request. A custom header cannot be sent cross-origin without a CORS
// preflight, which this server never grants: that is the CSRF defence,
// together with SameSite=Strict and the Origin / Sec-Fetch-Site checks.
const HeaderName = "X-Mamori-Console"

// failedLoginDelay slows down token guessing through the login form.
const failedLoginDelay = 300 * time.Millisecond

var errCrossOrigin = errors.New("cross-origin console request refused")

// checkOrigin refuses requests that did not come from a console page of
// this origin.
func checkOrigin(r *http.Request) error {
	if r.Header.Get(HeaderName) != "1" {
		return errCrossOrigin
	}
	if s := r.Header.Get("Sec-Fetch-Site"); s != "" && s != "same-origin" {
		return errCrossOrigin
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || !strings.EqualFold(u.Host, r.Host) {
			return errCrossOrigin
		}
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// tokenOf returns the session's token, "" without a valid cookie.
func tokenOf(r *http.Request) string {
	c, err := r.Cookie(CookieName)
	if err != nil {
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(c.Value)
	if err != nil {
		return ""
	}
	return string(b)
}

// statusOnly is a ResponseWriter keeping only the status of the check
// request made at login.
type statusOnly struct {
	h      http.Header
	status int
}

func (s *statusOnly) Header() http.Header { return s.h }
func (s *statusOnly) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return len(b), nil
}
func (s *statusOnly) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
}

// check asks the API whether token is accepted, returning its status.
func (h *Handler) check(r *http.Request, token string) int {
	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, h.opt.CheckPath, nil)
	if err != nil {
		return http.StatusInternalServerError
	}
	req.RemoteAddr, req.Host = r.RemoteAddr, r.Host
	req.Header.Set("Authorization", "Bearer "+token)
	sw := &statusOnly{h: http.Header{}}
	h.opt.API.ServeHTTP(sw, req)
	if sw.status == 0 {
		sw.status = http.StatusOK
	}
	return sw.status
}

func (h *Handler) setCookie(w http.ResponseWriter, r *http.Request, token string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name: CookieName, Value: base64.RawURLEncoding.EncodeToString([]byte(token)), Path: "/",
		MaxAge: maxAge, HttpOnly: true, SameSite: http.SameSiteStrictMode,
		Secure: r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https",
	})
}

// login checks the token in the JSON body {"token": "..."} against the API
// and, when accepted, sets the session cookie.
func (h *Handler) login(w http.ResponseWriter, r *http.Request) {
	if err := checkOrigin(r); err != nil {
		writeError(w, http.StatusForbidden, err.Error())
		return
	}
	var body struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&body); err != nil || body.Token == "" {
		writeError(w, http.StatusBadRequest, "expected {\"token\": \"...\"}")
		return
	}
	token := strings.TrimSpace(body.Token)
	switch st := h.check(r, token); st {
	case http.StatusOK:
		h.setCookie(w, r, token, 0)
		writeJSON(w, http.StatusOK, map[string]bool{"loggedIn": true})
	case http.StatusUnauthorized, http.StatusForbidden:
		h.opt.Logger.Info("console login refused", "remote", r.RemoteAddr, "status", st)
		time.Sleep(failedLoginDelay)
		writeError(w, http.StatusUnauthorized, "the API did not accept this token")
	default:
		h.opt.Logger.Warn("console login check failed", "status", st)
		writeError(w, http.StatusBadGateway, "the API answered the login check with status "+http.StatusText(st))
	}
}

func (h *Handler) logout(w http.ResponseWriter, r *http.Request) {
	if err := checkOrigin(r); err != nil {
		writeError(w, http.StatusForbidden, err.Error())
		return
	}
	h.setCookie(w, r, "", -1)
	writeJSON(w, http.StatusOK, map[string]bool{"loggedIn": false})
}

// session tells the page whether its cookie is still accepted.
func (h *Handler) session(w http.ResponseWriter, r *http.Request) {
	if err := checkOrigin(r); err != nil {
		writeError(w, http.StatusForbidden, err.Error())
		return
	}
	tok := tokenOf(r)
	ok := tok != "" && h.check(r, tok) == http.StatusOK
	writeJSON(w, http.StatusOK, map[string]bool{"loggedIn": ok})
}

// proxy hands /console/api/X to the API as /api/X with the session's token.
func (h *Handler) proxy(w http.ResponseWriter, r *http.Request) {
	if err := checkOrigin(r); err != nil {
		writeError(w, http.StatusForbidden, err.Error())
		return
	}
	tok := tokenOf(r)
	if tok == "" {
		writeError(w, http.StatusUnauthorized, "not logged in")
		return
	}
	r2 := r.Clone(r.Context())
	r2.URL.Path = "/api/" + strings.TrimPrefix(r.URL.Path, "/console/api/")
	if r.URL.RawPath != "" {
		r2.URL.RawPath = "/api/" + strings.TrimPrefix(r.URL.RawPath, "/console/api/")
	}
	r2.RequestURI = r2.URL.RequestURI()
	r2.Header.Del("Cookie")
	r2.Header.Set("Authorization", "Bearer "+tok)
	h.opt.API.ServeHTTP(w, r2)
}

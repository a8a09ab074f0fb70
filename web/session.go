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

// CookieName is the console session cookie: a session token the API mints
// at login (see api.DefaultSessionTTL), base64url encoded, HttpOnly so page
// scripts cannot read it.
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

// recorder is a ResponseWriter keeping the status and the start of the
// body of a request the console makes to the API itself.
type recorder struct {
	h      http.Header
	status int
	body   []byte
}

const maxRecorded = 64 << 10

func (s *recorder) Header() http.Header { return s.h }
func (s *recorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	if room := maxRecorded - len(s.body); room > 0 {
		s.body = append(s.body, b[:min(len(b), room)]...)
	}
	return len(b), nil
}
func (s *recorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
}

// call makes an API request with token on behalf of r.
func (h *Handler) call(r *http.Request, method, path, token string) *recorder {
	rec := &recorder{h: http.Header{}}
	req, err := http.NewRequestWithContext(r.Context(), method, path, nil)
	if err != nil {
		rec.status = http.StatusInternalServerError
		return rec
	}
	req.RemoteAddr, req.Host = r.RemoteAddr, r.Host
	req.Header.Set("Authorization", "Bearer "+token)
	h.opt.API.ServeHTTP(rec, req)
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	return rec
}

// check asks the API whether token is accepted, returning its status.
func (h *Handler) check(r *http.Request, token string) int {
	return h.call(r, http.MethodGet, h.opt.CheckPath, token).status
}

func (h *Handler) setCookie(w http.ResponseWriter, r *http.Request, token string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name: CookieName, Value: base64.RawURLEncoding.EncodeToString([]byte(token)), Path: "/",
		MaxAge: maxAge, HttpOnly: true, SameSite: http.SameSiteStrictMode,
		Secure: r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https",
	})
}

// login opens a session with the token in the JSON body {"token": "..."}:
// the API mints a short-lived session token, which the cookie carries, so
// the browser never keeps the token itself.
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
	res := h.call(r, http.MethodPost, h.opt.SessionPath, strings.TrimSpace(body.Token))
	switch res.status {
	case http.StatusCreated:
		var sess struct {
			Token     string    `json:"token"`
			ExpiresAt time.Time `json:"expiresAt"`
		}
		if err := json.Unmarshal(res.body, &sess); err != nil || sess.Token == "" {
			h.opt.Logger.Error("console login: unreadable session", "err", err)
			writeError(w, http.StatusBadGateway, "the API answered the login with no session")
			return
		}
		// A browser-session cookie: closing the browser forgets it, and
		// the server ends the session at expiresAt anyway.
		h.setCookie(w, r, sess.Token, 0)
		writeJSON(w, http.StatusOK, map[string]any{"loggedIn": true, "expiresAt": sess.ExpiresAt})
	case http.StatusUnauthorized, http.StatusForbidden:
		h.opt.Logger.Info("console login refused", "remote", r.RemoteAddr, "status", res.status)
		time.Sleep(failedLoginDelay)
		writeError(w, http.StatusUnauthorized, "the API did not accept this token")
	default:
		h.opt.Logger.Warn("console login failed", "status", res.status, "answer", string(res.body))
		writeError(w, http.StatusBadGateway, "the API answered the login with status "+http.StatusText(res.status))
	}
}

// logout ends the session on the server, then forgets the cookie.
func (h *Handler) logout(w http.ResponseWriter, r *http.Request) {
	if err := checkOrigin(r); err != nil {
		writeError(w, http.StatusForbidden, err.Error())
		return
	}
	if tok := tokenOf(r); tok != "" {
		switch res := h.call(r, http.MethodDelete, h.opt.SessionPath+"/current", tok); res.status {
		case http.StatusNoContent, http.StatusUnauthorized:
			// Ended now, or already (expired, or its parent revoked).
		default:
			h.opt.Logger.Warn("console logout: the session was not ended on the server", "status", res.status, "answer", string(res.body))
			h.setCookie(w, r, "", -1)
			writeError(w, http.StatusBadGateway, "logged out here, but the server did not end the session: status "+http.StatusText(res.status))
			return
		}
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

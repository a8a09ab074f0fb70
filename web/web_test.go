package web

import (
	"context"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/mamori-dev/mamori/internal/finding"
	"github.com/mamori-dev/mamori/internal/server/api"
	"github.com/mamori-dev/mamori/internal/server/store"
)

// TestGuideCoversCatalogue: every finding type has its "what this means /
// what to do" text, and the guide names no type the catalogue lacks.
func TestGuideCoversCatalogue(t *testing.T) {
	g, err := Guides()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range finding.Catalogue {
		e, ok := g[k.Type]
		if !ok {
			t.Errorf("%s: no guide entry", k.Type)
			continue
		}
		if len(e.Means) < 40 || len(e.Do) == 0 {
			t.Errorf("%s: guide too thin: %+v", k.Type, e)
		}
		for _, d := range e.Do {
			if strings.TrimSpace(d) == "" {
				t.Errorf("%s: empty step", k.Type)
			}
		}
	}
	for typ := range g {
		if _, ok := finding.Lookup(typ); !ok {
			t.Errorf("guide entry for %s, which the catalogue does not have", typ)
		}
	}
}

// TestAssetsAreInert checks the scripts never hand strings to the HTML
// parser or to eval, and the page has no inline script or style (the CSP
// would block them anyway; this keeps the page working under it).
func TestAssetsAreInert(t *testing.T) {
	banned := regexp.MustCompile(`innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|setAttribute\(\s*['"]on|javascript:`)
	n := 0
	err := fs.WalkDir(assets, "assets", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, _ := assets.ReadFile(p)
		switch {
		case strings.HasSuffix(p, ".js"):
			n++
			// dom.js names the banned sink in a comment explaining its absence.
			src := regexp.MustCompile(`(?m)^\s*//.*$`).ReplaceAll(b, nil)
			if m := banned.Find(src); m != nil {
				t.Errorf("%s uses %q", p, m)
			}
		case strings.HasSuffix(p, ".html"):
			for _, m := range regexp.MustCompile(`<script[^>]*>`).FindAll(b, -1) {
				if !strings.Contains(string(m), "src=") {
					t.Errorf("%s: inline script %s", p, m)
				}
			}
			if regexp.MustCompile(`\sstyle=|\son[a-z]+=`).Match(b) {
				t.Errorf("%s: inline style or event handler attribute", p)
			}
		}
		return nil
	})
	if err != nil || n < 5 {
		t.Fatalf("walked %d scripts: %v", n, err)
	}
}

// apiWithEcho is the server's real API (its token file, sessions and
// scope checks) for /api/v1/sessions and /api/v1/tokens, and for every
// other path a handler that checks the bearer token against the same token
// file and echoes what it was asked, so these tests see exactly what the
// console's proxy forwards. It returns the handler and a write token.
func apiWithEcho(t *testing.T) (http.Handler, string) {
	t.Helper()
	dir := t.TempDir()
	st, err := store.OpenSQLite(context.Background(), filepath.Join(dir, "mamori.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	tokens, err := api.OpenTokenFile(filepath.Join(dir, "tokens.json"))
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := tokens.Create(api.NewToken{Name: "tester", Scope: api.ScopeWrite})
	if err != nil {
		t.Fatal(err)
	}
	real, err := api.New(api.Options{Store: st, Tokens: tokens})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(api.Prefix+"/sessions", real)
	mux.Handle(api.Prefix+"/sessions/", real)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if _, err := tokens.Check(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")); err != nil {
			http.Error(w, `{"error":"unauthorized"}`, http.StatusUnauthorized)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]string{
			"path": r.URL.Path, "query": r.URL.RawQuery, "cookie": r.Header.Get("Cookie"), "method": r.Method,
			"authorization": r.Header.Get("Authorization")})
	})
	return mux, tok
}

func newServer(t *testing.T) (*httptest.Server, string) {
	t.Helper()
	a, tok := apiWithEcho(t)
	h, err := New(Options{API: a})
	if err != nil {
		t.Fatal(err)
	}
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s, tok
}

func do(t *testing.T, s *httptest.Server, method, path, body string, hdr map[string]string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(method, s.URL+path, strings.NewReader(body))
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := s.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func TestPageAndHeaders(t *testing.T) {
	s, _ := newServer(t)
	for _, p := range []string{"/", "/assets/js/app.js", "/assets/app.css", "/console/types", "/nope"} {
		r := do(t, s, "GET", p, "", nil)
		if got := r.Header.Get("Content-Security-Policy"); got != CSP {
			t.Errorf("%s: CSP %q", p, got)
		}
		if r.Header.Get("X-Content-Type-Options") != "nosniff" || r.Header.Get("X-Frame-Options") != "DENY" {
			t.Errorf("%s: missing nosniff/frame headers", p)
		}
	}
	r := do(t, s, "GET", "/", "", nil)
	b, _ := io.ReadAll(r.Body)
	m := regexp.MustCompile(`src="/assets/v-([0-9a-f]{12})/js/app.js"`).FindSubmatch(b)
	if r.StatusCode != 200 || m == nil {
		t.Fatalf("index does not load the versioned app.js: %d %s", r.StatusCode, b)
	}
	// Every module is preloaded, so the browser fetches them in parallel.
	entries, _ := fs.ReadDir(assets, "assets/js")
	for _, e := range entries {
		if !strings.Contains(string(b), `href="/assets/v-`+string(m[1])+`/js/`+e.Name()+`"`) && e.Name() != "app.js" {
			t.Errorf("index does not preload %s", e.Name())
		}
	}
	// This build's versioned assets are immutable; others revalidate.
	r = do(t, s, "GET", "/assets/v-"+string(m[1])+"/js/dom.js", "", nil)
	if r.StatusCode != 200 || !strings.Contains(r.Header.Get("Cache-Control"), "immutable") {
		t.Errorf("versioned asset: %d %q", r.StatusCode, r.Header.Get("Cache-Control"))
	}
	r = do(t, s, "GET", "/assets/v-000000000000/js/dom.js", "", nil)
	if r.StatusCode != 200 || r.Header.Get("Cache-Control") != "no-cache" {
		t.Errorf("other version's asset: %d %q", r.StatusCode, r.Header.Get("Cache-Control"))
	}
	if r = do(t, s, "GET", "/assets/index.html", "", nil); r.StatusCode != 404 {
		t.Errorf("the page template is served as an asset: %d", r.StatusCode)
	}
	r = do(t, s, "GET", "/assets/js/app.js", "", nil)
	if ct := r.Header.Get("Content-Type"); !strings.Contains(ct, "javascript") {
		t.Errorf("app.js content type %q", ct)
	}
	etag := r.Header.Get("ETag")
	if r = do(t, s, "GET", "/assets/js/app.js", "", map[string]string{"If-None-Match": etag}); r.StatusCode != http.StatusNotModified {
		t.Errorf("revalidation: %d, want 304", r.StatusCode)
	}
	// Compressed when the browser takes gzip, with its own validator.
	r = do(t, s, "GET", "/assets/js/findings.js", "", map[string]string{"Accept-Encoding": "gzip, br"})
	if r.Header.Get("Content-Encoding") != "gzip" || r.Header.Get("ETag") == etag || !strings.Contains(r.Header.Get("Vary"), "Accept-Encoding") {
		t.Errorf("gzip: encoding %q etag %q vary %q", r.Header.Get("Content-Encoding"), r.Header.Get("ETag"), r.Header.Get("Vary"))
	}
	var types []map[string]any
	r = do(t, s, "GET", "/console/types", "", nil)
	if err := json.NewDecoder(r.Body).Decode(&types); err != nil || len(types) != len(finding.Catalogue) {
		t.Fatalf("types: %d entries, %v", len(types), err)
	}
	if types[0]["means"] == "" || types[0]["tactic"] == "" {
		t.Errorf("types entry lacks guide or tactic: %v", types[0])
	}
}

func TestLoginAndProxy(t *testing.T) {
	s, tok := newServer(t)
	con := map[string]string{HeaderName: "1", "Content-Type": "application/json"}
	login := `{"token":"` + tok + `"}`

	// Without a session the API proxy answers 401, without the header 403.
	if r := do(t, s, "GET", "/console/api/v1/findings", "", con); r.StatusCode != 401 {
		t.Fatalf("no session: %d", r.StatusCode)
	}
	if r := do(t, s, "POST", "/console/login", login, nil); r.StatusCode != 403 {
		t.Fatalf("login without console header: %d", r.StatusCode)
	}
	if r := do(t, s, "POST", "/console/login", `{"token":"wrong"}`, con); r.StatusCode != 401 || len(r.Cookies()) != 0 {
		t.Fatalf("wrong token: %d cookies %v", r.StatusCode, r.Cookies())
	}
	r := do(t, s, "POST", "/console/login", login, con)
	if r.StatusCode != 200 || len(r.Cookies()) != 1 {
		t.Fatalf("login: %d", r.StatusCode)
	}
	c := r.Cookies()[0]
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Name != CookieName {
		t.Fatalf("cookie %+v", c)
	}
	// The cookie holds a session token the API minted, not the token typed in.
	sessionTok := tokenOf(&http.Request{Header: http.Header{"Cookie": {c.Name + "=" + c.Value}}})
	if !strings.HasPrefix(sessionTok, "mat1.") || sessionTok == tok {
		t.Fatalf("cookie carries %q, want a session token other than the login token", sessionTok)
	}
	with := func(extra map[string]string) map[string]string {
		m := map[string]string{"Cookie": c.Name + "=" + c.Value}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	r = do(t, s, "GET", "/console/api/v1/findings?limit=5&type=a%2Fb", "", with(con))
	var echo map[string]string
	if err := json.NewDecoder(r.Body).Decode(&echo); err != nil || r.StatusCode != 200 {
		t.Fatalf("proxy: %d %v", r.StatusCode, err)
	}
	if echo["path"] != "/api/v1/findings" || echo["query"] != "limit=5&type=a%2Fb" || echo["cookie"] != "" ||
		echo["authorization"] != "Bearer "+sessionTok {
		t.Fatalf("proxied as %v", echo)
	}
	// CSRF: the cookie alone, a foreign Origin or a cross-site fetch are refused.
	for name, h := range map[string]map[string]string{
		"no header":      with(nil),
		"foreign origin": with(map[string]string{HeaderName: "1", "Origin": "http://evil.example"}),
		"cross-site":     with(map[string]string{HeaderName: "1", "Sec-Fetch-Site": "cross-site"}),
	} {
		if r := do(t, s, "POST", "/console/api/v1/findings/archive", `{"ids":["x"]}`, h); r.StatusCode != 403 {
			t.Errorf("%s: %d, want 403", name, r.StatusCode)
		}
	}
	r = do(t, s, "POST", "/console/api/v1/findings/archive", `{}`, with(map[string]string{HeaderName: "1", "Origin": s.URL, "Sec-Fetch-Site": "same-origin"}))
	if r.StatusCode != 200 {
		t.Errorf("same-origin archive: %d", r.StatusCode)
	}
	var sess map[string]bool
	r = do(t, s, "GET", "/console/session", "", with(con))
	if _ = json.NewDecoder(r.Body).Decode(&sess); !sess["loggedIn"] {
		t.Errorf("session not recognised")
	}
	r = do(t, s, "POST", "/console/logout", "", with(con))
	if r.StatusCode != 200 || len(r.Cookies()) != 1 || r.Cookies()[0].MaxAge >= 0 {
		t.Errorf("logout did not clear the cookie: %d %v", r.StatusCode, r.Cookies())
	}
	// Logging out ended the session on the server: a copy of the cookie
	// (kept by an attacker, or a browser that ignored the clearing) no
	// longer works, while the login token still does.
	if r := do(t, s, "GET", "/console/api/v1/findings", "", with(con)); r.StatusCode != 401 {
		t.Errorf("the cookie still works after logout: %d", r.StatusCode)
	}
	r = do(t, s, "GET", "/console/session", "", with(con))
	if sess = nil; json.NewDecoder(r.Body).Decode(&sess) != nil || sess["loggedIn"] {
		t.Errorf("session after logout: %v", sess)
	}
	if r := do(t, s, "POST", "/console/login", login, con); r.StatusCode != 200 {
		t.Errorf("login token refused after a logout: %d", r.StatusCode)
	}
	// A session token pasted in as a login cannot renew itself.
	r = do(t, s, "POST", "/console/login", login, con)
	again := tokenOf(&http.Request{Header: http.Header{"Cookie": {r.Cookies()[0].Name + "=" + r.Cookies()[0].Value}}})
	if r := do(t, s, "POST", "/console/login", `{"token":"`+again+`"}`, con); r.StatusCode != 401 || len(r.Cookies()) != 0 {
		t.Errorf("a session logged in as a token: %d %v", r.StatusCode, r.Cookies())
	}
}

package api

import (
	"encoding/json"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// placeholder fills path parameters so every route can be called.
func placeholder(path string) string {
	r := strings.NewReplacer("{id}", "0123456789abcdef0123456789abcdef", "{nodeId}", "node-x", "{kind}", "rules")
	return r.Replace(path)
}

// TestAuth calls every route without a token, with broken and unknown
// tokens (401), with the scope just below the one it needs (403) and with
// the one it needs (neither).
func TestAuth(t *testing.T) {
	e := newEnv(t)
	tf := e.api.opt.Tokens
	expired, _, err := tf.Create(NewToken{Name: "expired", Scope: ScopeAdmin, TTL: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	revoked, rec, err := tf.Create(NewToken{Name: "revoked", Scope: ScopeAdmin})
	if err != nil {
		t.Fatal(err)
	}
	if err := tf.Revoke(rec.ID); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond)
	admin := e.tokens[ScopeAdmin]
	forged := admin[:len(admin)-4] + "AAAA" // right id, wrong secret
	below := map[Scope]Scope{ScopeAgent: "", ScopeRead: ScopeAgent, ScopeWrite: ScopeRead, ScopeAdmin: ScopeWrite}
	checked := 0
	for _, rt := range e.api.routes {
		path := placeholder(rt.path)
		body := any(nil)
		if rt.method == "POST" || rt.method == "PUT" {
			body = "{}"
		}
		if rt.scope == "" {
			if code, b := e.do(rt.method, path, "", body); code != http.StatusOK {
				t.Errorf("%s %s without a token: %d %s", rt.method, path, code, b)
			}
			continue
		}
		for name, tok := range map[string]string{"no token": "", "garbage": "hello", "forged": forged,
			"expired": expired, "revoked": revoked, "unknown": "mat1.000000000000.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"} {
			code, b := e.do(rt.method, path, tok, body)
			if code != http.StatusUnauthorized {
				t.Errorf("%s %s with %s: %d, want 401: %s", rt.method, path, name, code, b)
			}
		}
		if low := below[rt.scope]; low != "" {
			code, b := e.do(rt.method, path, e.tokens[low], body)
			if code != http.StatusForbidden {
				t.Errorf("%s %s with scope %s (needs %s): %d, want 403: %s", rt.method, path, low, rt.scope, code, b)
			}
		}
		code, b := e.do(rt.method, path, e.tokens[rt.scope], body)
		if code == http.StatusUnauthorized || code == http.StatusForbidden {
			t.Errorf("%s %s with scope %s: %d: %s", rt.method, path, rt.scope, code, b)
		}
		checked++
	}
	if checked < 15 {
		t.Fatalf("only %d authenticated routes checked", checked)
	}
	// The 401 names the scheme, as RFC 6750 asks.
	req, _ := http.NewRequest("GET", e.srv.URL+Prefix+"/findings", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
		t.Errorf("WWW-Authenticate %q", resp.Header.Get("WWW-Authenticate"))
	}
}

// TestTokenFile checks tokens are stored hashed in a 0600 file and that
// the bootstrap admin token survives a restart.
func TestTokenFile(t *testing.T) {
	e := newEnv(t)
	b, err := os.ReadFile(e.local.TokensPath())
	if err != nil {
		t.Fatal(err)
	}
	for s, tok := range e.tokens {
		secret := tok[strings.LastIndexByte(tok, '.')+1:]
		if strings.Contains(string(b), secret) {
			t.Errorf("the %s token's secret is stored in clear", s)
		}
	}
	for _, p := range []string{e.local.TokensPath(), e.local.AdminTokenPath(), e.local.Dir} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %v", p, st.Mode().Perm())
		}
	}
	_, again, err := e.local.OpenTokens()
	if err != nil || again != e.tokens[ScopeAdmin] {
		t.Fatalf("a restart made a new admin token (%v)", err)
	}
	// A revoked bootstrap token is replaced at the next start.
	tf := e.api.opt.Tokens
	rec, err := tf.Check(again)
	if err != nil {
		t.Fatal(err)
	}
	if err := tf.Revoke(rec.ID); err != nil {
		t.Fatal(err)
	}
	_, fresh, err := e.local.OpenTokens()
	if err != nil || fresh == again {
		t.Fatalf("revoked admin token kept (%v)", err)
	}
}

func TestTokensAPI(t *testing.T) {
	e := newEnv(t)
	var created TokenResponse
	e.must(http.StatusCreated, "POST", "/tokens", ScopeAdmin, TokenRequest{Name: "ci reader", Scope: ScopeRead, TTL: "1h"}, &created)
	if !strings.HasPrefix(created.Value, tokenPrefix) || created.Scope != ScopeRead || created.ExpiresAt.IsZero() {
		t.Fatalf("created %+v", created)
	}
	if code, _ := e.do("GET", "/findings", created.Value, nil); code != http.StatusOK {
		t.Fatalf("new token refused: %d", code)
	}
	var list struct{ Tokens []Token }
	e.must(http.StatusOK, "GET", "/tokens", ScopeAdmin, nil, &list)
	if !slices.ContainsFunc(list.Tokens, func(x Token) bool { return x.ID == created.ID && x.SecretHash == "" }) {
		t.Fatalf("list %+v", list)
	}
	// An enrolled node's token is listed only on request.
	var agentTok TokenResponse
	e.must(http.StatusCreated, "POST", "/tokens", ScopeAdmin, TokenRequest{Name: AgentTokenName("n9"), Scope: ScopeAgent}, &agentTok)
	listed := func(q string) bool {
		var l struct{ Tokens []Token }
		e.must(http.StatusOK, "GET", "/tokens"+q, ScopeAdmin, nil, &l)
		if !slices.ContainsFunc(l.Tokens, func(x Token) bool { return x.ID == created.ID }) {
			t.Fatalf("GET /tokens%s left out the person's token: %+v", q, l)
		}
		return slices.ContainsFunc(l.Tokens, func(x Token) bool { return x.ID == agentTok.ID })
	}
	if listed("") || listed("?agents=false") || !listed("?agents=true") {
		t.Errorf("agent token listed by default %v, with agents=false %v, with agents=true %v", listed(""), listed("?agents=false"), listed("?agents=true"))
	}
	if code, _ := e.do("GET", "/tokens?agents=maybe", e.tokens[ScopeAdmin], nil); code != http.StatusBadRequest {
		t.Errorf("agents=maybe: %d, want 400", code)
	}
	for _, bad := range []any{TokenRequest{Name: "x", Scope: "root"}, TokenRequest{Scope: ScopeRead}, TokenRequest{Name: "x", Scope: ScopeRead, TTL: "-1h"},
		`{"name":"x","scope":"read","extra":1}`} {
		if code, b := e.do("POST", "/tokens", e.tokens[ScopeAdmin], bad); code != http.StatusBadRequest {
			t.Errorf("token request %v: %d %s", bad, code, b)
		}
	}
	e.must(http.StatusNoContent, "DELETE", "/tokens/"+created.ID, ScopeAdmin, nil, nil)
	time.Sleep(1100 * time.Millisecond) // the file is rechecked at most once a second
	if code, _ := e.do("GET", "/findings", created.Value, nil); code != http.StatusUnauthorized {
		t.Fatalf("revoked token still works: %d", code)
	}
	e.must(http.StatusNotFound, "DELETE", "/tokens/"+created.ID, ScopeAdmin, nil, nil)
}

// TestOpenAPIMatchesRoutes keeps the document and the route table in
// step: every route is described with its scope, every described
// operation is served.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	e := newEnv(t)
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	code, b := e.do("GET", "/openapi.json", "", nil)
	if code != http.StatusOK {
		t.Fatalf("openapi.json: %d", code)
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi %q", doc.OpenAPI)
	}
	described := map[string]bool{}
	for p, ops := range doc.Paths {
		for m, raw := range ops {
			var op struct {
				Scope string `json:"x-mamori-scope"`
			}
			if err := json.Unmarshal(raw, &op); err != nil {
				t.Fatal(err)
			}
			described[strings.ToUpper(m)+" "+p+" "+op.Scope] = true
		}
	}
	for _, rt := range e.api.routes {
		k := rt.method + " " + rt.path + " " + string(rt.scope)
		if !described[k] {
			t.Errorf("route %s (scope %q) is not in openapi.json", rt.method+" "+rt.path, rt.scope)
		}
		delete(described, k)
	}
	for k := range described {
		t.Errorf("openapi.json describes %s, which is not served", k)
	}
	if _, err := openAPIRouter(); err != nil {
		t.Fatal(err)
	}
}

func TestUnknownRouteAndBodyLimit(t *testing.T) {
	e := newEnv(t)
	if code, _ := e.do("GET", "/nope", e.tokens[ScopeAdmin], nil); code != http.StatusNotFound {
		t.Errorf("unknown route: %d", code)
	}
	big := `{"ids":["` + strings.Repeat("a", 2<<20) + `"]}`
	if code, b := e.do("POST", "/findings/archive", e.tokens[ScopeWrite], big); code != http.StatusRequestEntityTooLarge {
		t.Errorf("2 MiB body: %d %.200s", code, b)
	}
	if code, _ := e.do("POST", "/findings/archive", e.tokens[ScopeWrite], "{not json"); code != http.StatusBadRequest {
		t.Errorf("bad JSON: %d", code)
	}
}

// /health answers without a token as a liveness check, "ok"; to a caller
// with a read token it says "degraded" — still 200, since the API serves
// meanwhile — with the problems that keep the server from taking or
// storing agent messages.
func TestHealthReportsProblems(t *testing.T) {
	e := newEnv(t)
	get := func(token string) (int, map[string]any) {
		t.Helper()
		code, b := e.do("GET", "/health", token, nil)
		var out map[string]any
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatalf("health: %v: %s", err, b)
		}
		return code, out
	}
	if code, out := get(""); code != http.StatusOK || out["status"] != "ok" || out["problems"] != nil {
		t.Fatalf("healthy: %d %v", code, out)
	}
	e.api.opt.Problems = func() []string { return []string{"database unavailable since 2026-03-01T12:00:00Z"} }
	for _, tok := range []string{"", "mat1.000000000000.wrong", e.tokens[ScopeAgent]} {
		if code, out := get(tok); code != http.StatusOK || out["status"] != "ok" || out["problems"] != nil {
			t.Fatalf("degraded, token %q: %d %v, want liveness only", tok, code, out)
		}
	}
	code, out := get(e.tokens[ScopeRead])
	problems, _ := out["problems"].([]any)
	if code != http.StatusOK || out["status"] != "degraded" || len(problems) != 1 || problems[0] != "database unavailable since 2026-03-01T12:00:00Z" {
		t.Fatalf("degraded, read token: %d %v", code, out)
	}
}

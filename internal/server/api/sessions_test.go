package api

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestSessions opens console sessions and checks what ends them: closing,
// revoking the parent, expiry, and the parent's own expiry bounding them.
func TestSessions(t *testing.T) {
	e := newEnv(t)
	var s TokenResponse
	e.must(http.StatusCreated, "POST", "/sessions", ScopeWrite, nil, &s)
	parent, err := e.api.opt.Tokens.Check(e.tokens[ScopeWrite])
	if err != nil {
		t.Fatal(err)
	}
	if s.Value == "" || s.Value == e.tokens[ScopeWrite] || s.Parent != parent.ID || s.Scope != ScopeWrite {
		t.Fatalf("session %+v of %+v", s.Token, parent)
	}
	if d := time.Until(s.ExpiresAt); d > DefaultSessionTTL || d < DefaultSessionTTL-time.Minute {
		t.Errorf("session expires in %v, want %v", d, DefaultSessionTTL)
	}
	// The session acts with its parent's scope, and no more.
	if code, b := e.do("POST", "/findings/archive", s.Value, `{"ids":["0123456789abcdef0123456789abcdef"]}`); code != http.StatusOK {
		t.Errorf("session archive: %d %s", code, b)
	}
	if code, _ := e.do("GET", "/tokens", s.Value, nil); code != http.StatusForbidden {
		t.Errorf("write session listed tokens: %d", code)
	}
	// A session cannot open another (it would renew itself for ever).
	if code, b := e.do("POST", "/sessions", s.Value, nil); code != http.StatusForbidden {
		t.Errorf("session opened a session: %d %s", code, b)
	}
	// A session cannot make lasting credentials (they would survive its
	// logout and its parent's revocation).
	var admin TokenResponse
	e.must(http.StatusCreated, "POST", "/sessions", ScopeAdmin, nil, &admin)
	for _, c := range []struct{ path, body string }{
		{"/tokens", `{"name":"persist","scope":"admin"}`},
		{"/join-tokens", `{}`},
	} {
		if code, b := e.do("POST", c.path, admin.Value, c.body); code != http.StatusForbidden {
			t.Errorf("a session made credentials at %s: %d %s", c.path, code, b)
		}
	}
	// A token sent in the wrong scheme is told how to send it.
	req, _ := http.NewRequest("GET", e.srv.URL+Prefix+"/findings", nil)
	req.Header.Set("Authorization", "Token "+e.tokens[ScopeRead])
	if res, err := http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	} else {
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusUnauthorized || !strings.Contains(string(b), "Bearer TOKEN") {
			t.Errorf("Authorization: Token ...: %d %s", res.StatusCode, b)
		}
	}
	// Admins see sessions with their parent.
	var list struct{ Tokens []Token }
	e.must(http.StatusOK, "GET", "/tokens", ScopeAdmin, nil, &list)
	found := false
	for _, tk := range list.Tokens {
		found = found || tk.ID == s.ID && tk.Parent == parent.ID
	}
	if !found {
		t.Errorf("session %s not listed with its parent: %+v", s.ID, list.Tokens)
	}

	// Logout revokes the session on the server: a copy stops working.
	if code, b := e.do("DELETE", "/sessions/current", s.Value, nil); code != http.StatusNoContent {
		t.Fatalf("close session: %d %s", code, b)
	}
	if code, _ := e.do("GET", "/findings", s.Value, nil); code != http.StatusUnauthorized {
		t.Errorf("closed session still works: %d", code)
	}
	// Closing is for sessions only: a person's token is not revoked by it.
	if code, _ := e.do("DELETE", "/sessions/current", e.tokens[ScopeRead], nil); code != http.StatusBadRequest {
		t.Errorf("close with a plain token: %d", code)
	}
	if code, _ := e.do("GET", "/findings", e.tokens[ScopeRead], nil); code != http.StatusOK {
		t.Errorf("plain token revoked by closing: %d", code)
	}

	// Revoking the parent ends its sessions, and only its.
	var s1, s2, other TokenResponse
	e.must(http.StatusCreated, "POST", "/sessions", ScopeWrite, nil, &s1)
	e.must(http.StatusCreated, "POST", "/sessions", ScopeWrite, nil, &s2)
	e.must(http.StatusCreated, "POST", "/sessions", ScopeRead, nil, &other)
	e.must(http.StatusNoContent, "DELETE", "/tokens/"+parent.ID, ScopeAdmin, nil, nil)
	for _, v := range []string{s1.Value, s2.Value} {
		if code, _ := e.do("GET", "/findings", v, nil); code != http.StatusUnauthorized {
			t.Errorf("session outlived its revoked parent: %d", code)
		}
	}
	if code, _ := e.do("GET", "/findings", other.Value, nil); code != http.StatusOK {
		t.Errorf("another token's session was revoked: %d", code)
	}

	// A session never outlives its parent; an expired one is purged at the
	// next login.
	short, _, err := e.api.opt.Tokens.Create(NewToken{Name: "short", Scope: ScopeRead, TTL: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var ss TokenResponse
	code, b := e.do("POST", "/sessions", short, nil)
	if code != http.StatusCreated {
		t.Fatalf("session of a short token: %d %s", code, b)
	}
	if err := json.Unmarshal(b, &ss); err != nil {
		t.Fatal(err)
	}
	if d := time.Until(ss.ExpiresAt); d > 3*time.Second {
		t.Errorf("session of a 3 s token expires in %v", d)
	}
	time.Sleep(time.Until(ss.ExpiresAt) + 100*time.Millisecond)
	if code, _ := e.do("GET", "/findings", ss.Value, nil); code != http.StatusUnauthorized {
		t.Errorf("expired session works: %d", code)
	}
	e.must(http.StatusCreated, "POST", "/sessions", ScopeRead, nil, nil)
	e.must(http.StatusOK, "GET", "/tokens", ScopeAdmin, nil, &list)
	for _, tk := range list.Tokens {
		if tk.ID == ss.ID {
			t.Errorf("expired session %s kept after a later login", ss.ID)
		}
	}
}

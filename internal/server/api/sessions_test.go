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
	var after struct{ Tokens []Token } // fresh: decoding into used elements keeps their old fields
	e.must(http.StatusOK, "GET", "/tokens", ScopeAdmin, nil, &after)
	for _, tk := range after.Tokens {
		if tk.ID == ss.ID {
			t.Errorf("expired session %s kept after a later login", ss.ID)
		}
	}
	// One token's live sessions are bounded (the oldest end; within one
	// second, which of them is not defined).
	var all []TokenResponse
	for range maxSessionsPerToken + 5 {
		var x TokenResponse
		e.must(http.StatusCreated, "POST", "/sessions", ScopeRead, nil, &x)
		all = append(all, x)
	}
	var now struct{ Tokens []Token }
	e.must(http.StatusOK, "GET", "/tokens", ScopeAdmin, nil, &now)
	readParent, _ := e.api.opt.Tokens.Check(e.tokens[ScopeRead])
	live := 0
	for _, tk := range now.Tokens {
		if tk.Parent == readParent.ID {
			live++
		}
	}
	if live > maxSessionsPerToken {
		t.Errorf("%d live sessions of one token, bound %d", live, maxSessionsPerToken)
	}
	if code, _ := e.do("GET", "/findings", all[len(all)-1].Value, nil); code != http.StatusOK {
		t.Errorf("the newest session ended: %d", code)
	}

	// A parent revoked without its cascade (a half-done revocation): its
	// sessions go at the next login, and repeating the revocation ends them.
	p2, p2rec, err := e.api.opt.Tokens.Create(NewToken{Name: "p2", Scope: ScopeRead})
	if err != nil {
		t.Fatal(err)
	}
	var orphan TokenResponse
	if code, b := e.do("POST", "/sessions", p2, nil); code != http.StatusCreated || json.Unmarshal(b, &orphan) != nil {
		t.Fatalf("session of p2: %d %s", code, b)
	}
	if err := e.api.opt.Tokens.Revoke(p2rec.ID); err != nil {
		t.Fatal(err)
	}
	e.must(http.StatusNoContent, "DELETE", "/tokens/"+p2rec.ID, ScopeAdmin, nil, nil)
	if code, _ := e.do("GET", "/findings", orphan.Value, nil); code != http.StatusUnauthorized {
		t.Errorf("a session outlived its parent's repeated revocation: %d", code)
	}
	e.must(http.StatusNotFound, "DELETE", "/tokens/"+p2rec.ID, ScopeAdmin, nil, nil)
	p3, p3rec, err := e.api.opt.Tokens.Create(NewToken{Name: "p3", Scope: ScopeRead})
	if err != nil {
		t.Fatal(err)
	}
	if code, b := e.do("POST", "/sessions", p3, nil); code != http.StatusCreated || json.Unmarshal(b, &orphan) != nil {
		t.Fatalf("session of p3: %d %s", code, b)
	}
	if err := e.api.opt.Tokens.Revoke(p3rec.ID); err != nil {
		t.Fatal(err)
	}
	e.must(http.StatusCreated, "POST", "/sessions", ScopeAdmin, nil, nil) // any login tidies
	if code, _ := e.do("GET", "/findings", orphan.Value, nil); code != http.StatusUnauthorized {
		t.Errorf("an orphaned session survived a later login: %d", code)
	}

}

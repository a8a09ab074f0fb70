package api

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"

	"github.com/mamori-dev/mamori/internal/server/store"
	"github.com/mamori-dev/mamori/internal/transport"
)

// An admin makes a join token, an agent enrolls with it, the agent is
// listed, and removing it revokes its key; each route checks its scope.
func TestAgentAdministration(t *testing.T) {
	e := newEnv(t)
	// Without an agent transport the routes say so.
	e.must(http.StatusNotImplemented, "GET", "/agents", ScopeRead, nil, nil)
	e.must(http.StatusNotImplemented, "GET", "/agent/transport", ScopeAgent, nil, nil)

	dir := t.TempDir()
	auth, err := transport.LoadOrCreateAuth(filepath.Join(dir, "auth.json"))
	if err != nil {
		t.Fatal(err)
	}
	tlsm, err := transport.LoadOrCreateTLS(filepath.Join(dir, "tls"), []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	var revoked []string
	enr, err := transport.NewEnroller(transport.EnrollerConfig{Auth: auth, Tokens: transport.NewTokens(transport.NewMemStore[transport.TokenRecord]()),
		Nodes: transport.NewMemStore[transport.NodeRecord](), NATSURLs: []string{"tls://127.0.0.1:4222"}, CAPEM: tlsm.CAPEM,
		Revoke: func(pub string) error { revoked = append(revoked, pub); return nil }})
	if err != nil {
		t.Fatal(err)
	}
	e.api.opt.Agents = enr
	enrollSrv := httptest.NewServer(enr)
	t.Cleanup(enrollSrv.Close)
	// Agents ask where NATS is now with their own (agent-scope) token.
	var tr AgentTransport
	e.must(http.StatusOK, "GET", "/agent/transport", ScopeAgent, nil, &tr)
	if len(tr.NATSURLs) != 1 || tr.NATSURLs[0] != "tls://127.0.0.1:4222" {
		t.Fatalf("agent transport %+v", tr)
	}

	var list struct{ Agents []transport.NodeRecord }
	e.must(http.StatusOK, "GET", "/agents", ScopeRead, nil, &list)
	if len(list.Agents) != 0 {
		t.Fatalf("agents before any enrollment: %+v", list.Agents)
	}
	// Join tokens are an admin's to make.
	e.must(http.StatusForbidden, "POST", "/join-tokens", ScopeWrite, JoinTokenRequest{}, nil)
	e.must(http.StatusBadRequest, "POST", "/join-tokens", ScopeAdmin, JoinTokenRequest{TTL: "soon"}, nil)
	e.must(http.StatusBadRequest, "POST", "/join-tokens", ScopeAdmin, JoinTokenRequest{MaxUses: -7}, nil)
	var jt JoinTokenResponse
	e.must(http.StatusCreated, "POST", "/join-tokens", ScopeAdmin, JoinTokenRequest{Description: "rack 4", TTL: "1h", MaxUses: 2}, &jt)
	if jt.Token == "" || jt.MaxUses != 2 || jt.ExpiresAt.IsZero() || jt.SecretHash != "" {
		t.Fatalf("join token %+v", jt)
	}
	if _, raw := e.do("POST", "/join-tokens", e.tokens[ScopeAdmin], JoinTokenRequest{}); strings.Contains(string(raw), "secretHash") {
		t.Fatalf("join token answer shows the stored hash: %s", raw)
	}
	creds, err := transport.Enroll(context.Background(), transport.EnrollOptions{URL: enrollSrv.URL, Token: jt.Token, NodeID: "rack4-n1"})
	if err != nil {
		t.Fatalf("enroll with the API's join token: %v", err)
	}
	e.must(http.StatusOK, "GET", "/agents", ScopeRead, nil, &list)
	if len(list.Agents) != 1 || list.Agents[0].NodeID != "rack4-n1" || list.Agents[0].TokenID != jt.ID {
		t.Fatalf("agents %+v", list.Agents)
	}

	// Join tokens are listed without secrets, and a revoked one enrolls no more.
	var jts struct{ JoinTokens []transport.TokenRecord }
	e.must(http.StatusForbidden, "GET", "/join-tokens", ScopeWrite, nil, nil)
	e.must(http.StatusOK, "GET", "/join-tokens", ScopeAdmin, nil, &jts)
	var listed *transport.TokenRecord
	for i := range jts.JoinTokens {
		if jts.JoinTokens[i].ID == jt.ID {
			listed = &jts.JoinTokens[i]
		}
	}
	if listed == nil || listed.Uses != 1 || listed.SecretHash != "" {
		t.Fatalf("join tokens listed: %+v", jts.JoinTokens)
	}
	e.must(http.StatusNotFound, "DELETE", "/join-tokens/000000000000", ScopeAdmin, nil, nil)
	e.must(http.StatusNoContent, "DELETE", "/join-tokens/"+jt.ID, ScopeAdmin, nil, nil)
	if _, err := transport.Enroll(context.Background(), transport.EnrollOptions{URL: enrollSrv.URL, Token: jt.Token, NodeID: "rack4-n2"}); err == nil {
		t.Fatal("enrolled with a revoked join token")
	}

	// Removal: admin only, unknown and invalid ids answered as such, and the
	// agent's key is revoked.
	e.must(http.StatusForbidden, "DELETE", "/agents/rack4-n1", ScopeWrite, nil, nil)
	e.must(http.StatusNotFound, "DELETE", "/agents/rack4-n9", ScopeAdmin, nil, nil)
	e.must(http.StatusBadRequest, "DELETE", "/agents/rack4%20n1", ScopeAdmin, nil, nil)
	if _, _, err := e.st.UpdateNode(context.Background(), "rack4-n1", func(*store.Node) (*store.Node, *store.CoverageEvent, error) {
		return &store.Node{NodeID: "rack4-n1", Status: "Healthy", LastHeartbeat: time.Now()}, nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	e.must(http.StatusOK, "GET", "/coverage/rack4-n1", ScopeRead, nil, nil)
	e.must(http.StatusNoContent, "DELETE", "/agents/rack4-n1", ScopeAdmin, nil, nil)
	// A removed node leaves coverage (it would read "not reporting" for ever).
	e.must(http.StatusNotFound, "GET", "/coverage/rack4-n1", ScopeRead, nil, nil)
	// A coverage node left over (removed before this, or back from a late
	// heartbeat) is removed by removing it again.
	if _, _, err := e.st.UpdateNode(context.Background(), "rack4-n1", func(*store.Node) (*store.Node, *store.CoverageEvent, error) {
		return &store.Node{NodeID: "rack4-n1", Status: "Unhealthy", LastHeartbeat: time.Now()}, nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	e.must(http.StatusNoContent, "DELETE", "/agents/rack4-n1", ScopeAdmin, nil, nil)
	e.must(http.StatusNotFound, "GET", "/coverage/rack4-n1", ScopeRead, nil, nil)
	e.must(http.StatusNotFound, "DELETE", "/agents/rack4-n1", ScopeAdmin, nil, nil)
	uc, err := jwt.DecodeUserClaims(creds.JWT)
	if err != nil {
		t.Fatal(err)
	}
	if len(revoked) != 1 || revoked[0] != uc.Subject {
		t.Fatalf("revoked %v, want the agent's key %s", revoked, uc.Subject)
	}
	e.must(http.StatusOK, "GET", "/agents", ScopeRead, nil, &list)
	if len(list.Agents) != 0 {
		t.Fatalf("agents after removal: %+v", list.Agents)
	}
}

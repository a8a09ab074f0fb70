package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mamori-dev/mamori/internal/server/store"
)

// Agents' tokens are rows in the store: issuing one leaves the people's
// token file untouched, a node has one token at a time, the union store
// checks, lists and revokes both kinds, and a token an earlier build put in
// the file is revoked when its node enrolls again.
func TestAgentTokensAlongsidePeople(t *testing.T) {
	e := newEnv(t)
	ctx, dir, st, admin := context.Background(), e.dir, e.st, e.tokens[ScopeAdmin]
	tf, _, err := e.local.OpenTokens()
	if err != nil {
		t.Fatal(err)
	}
	legacy, _, err := tf.Create(NewToken{Name: AgentTokenName("n1"), Scope: ScopeAgent})
	if err != nil {
		t.Fatal(err)
	}
	ts := WithAgentTokens(tf, st)
	at := AgentTokens{Store: st, Legacy: tf}
	if _, err := ts.Check(legacy); err != nil {
		t.Fatalf("legacy agent token before re-enrollment: %v", err)
	}

	n1, err := at.Issue(ctx, "n1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ts.Check(legacy); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("legacy token after its node enrolled again: %v", err)
	}
	before, err := os.Stat(LocalFor(dir).TokensPath())
	if err != nil {
		t.Fatal(err)
	}
	n2, err := at.Issue(ctx, "n2")
	if err != nil {
		t.Fatal(err)
	}
	if after, err := os.Stat(LocalFor(dir).TokensPath()); err != nil || !after.ModTime().Equal(before.ModTime()) || after.Size() != before.Size() {
		t.Errorf("enrolling n2 rewrote the token file (%v)", err)
	}
	for node, tok := range map[string]string{"n1": n1, "n2": n2} {
		got, err := ts.Check(tok)
		if err != nil || got.Scope != ScopeAgent || got.Name != AgentTokenName(node) {
			t.Errorf("%s's token: %+v %v", node, got, err)
		}
	}
	if got, err := ts.Check(admin); err != nil || got.Scope != ScopeAdmin {
		t.Errorf("people's admin token through the union: %+v %v", got, err)
	}
	forged := n2[:len(n2)-1] + "A"
	if n2[len(n2)-1] == 'A' {
		forged = n2[:len(n2)-1] + "B"
	}
	if _, err := ts.Check(forged); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("agent token with a wrong secret: %v", err)
	}

	// Enrolling again replaces the node's token.
	n1b, err := at.Issue(ctx, "n1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ts.Check(n1); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("n1's first token after re-enrollment: %v", err)
	}
	list, err := ts.List()
	if err != nil {
		t.Fatal(err)
	}
	agents := map[string]string{}
	for _, tok := range list {
		if tok.SecretHash != "" {
			t.Errorf("listed %s with its hash", tok.ID)
		}
		if tok.Scope == ScopeAgent && strings.HasPrefix(tok.Name, "agent:") {
			agents[tok.Name] = tok.ID
		}
	}
	if len(agents) != 2 || agents[AgentTokenName("n1")] == "" || agents[AgentTokenName("n2")] == "" {
		t.Fatalf("agent tokens listed: %v", agents)
	}
	if got, err := ts.Get(agents[AgentTokenName("n1")]); err != nil || got.Scope != ScopeAgent || got.SecretHash != "" {
		t.Errorf("get an agent's token through the union: %+v %v", got, err)
	}

	// Revocation by token id (the tokens API) and by node (removal).
	if err := ts.Revoke(agents[AgentTokenName("n2")]); err != nil {
		t.Fatal(err)
	}
	if err := ts.Revoke(agents[AgentTokenName("n2")]); !errors.Is(err, errNotFound) {
		t.Errorf("second revoke: %v", err)
	}
	if _, err := ts.Check(n2); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("revoked n2 token: %v", err)
	}
	if err := at.Revoke(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.Check(n1b); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("n1's token after the node was removed: %v", err)
	}
	if err := at.Revoke(ctx, "n1"); err != nil {
		t.Errorf("revoking a node without a token: %v", err)
	}
}

// BenchmarkIssueAgentToken issues one more agent token in a fleet of n:
// into the store (now) and into the token file (how earlier builds did it,
// rewriting the whole file each time).
func BenchmarkIssueAgentToken(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		dir := b.TempDir()
		ctx := context.Background()
		st, err := store.OpenSQLite(ctx, filepath.Join(dir, "mamori.db"), store.Options{Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		tf, _, err := LocalFor(dir).OpenTokens()
		if err != nil {
			b.Fatal(err)
		}
		at := AgentTokens{Store: st, Legacy: tf}
		for i := range n {
			node := fmt.Sprintf("fleet-%d", i)
			if _, err := at.Issue(ctx, node); err != nil {
				b.Fatal(err)
			}
			_, rec, _ := newToken(time.Now(), NewToken{Name: AgentTokenName(node), Scope: ScopeAgent})
			tf.tokens[rec.ID] = rec
		}
		tf.mu.Lock()
		if err := tf.save(); err != nil {
			b.Fatal(err)
		}
		tf.mu.Unlock()
		b.Run(fmt.Sprintf("store/fleet=%d", n), func(b *testing.B) {
			at := AgentTokens{Store: st}
			for i := 0; b.Loop(); i++ {
				if _, err := at.Issue(ctx, fmt.Sprintf("new-%d", i)); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("file/fleet=%d", n), func(b *testing.B) {
			for i := 0; b.Loop(); i++ {
				if _, _, err := tf.Create(NewToken{Name: AgentTokenName(fmt.Sprintf("new-%d", i)), Scope: ScopeAgent}); err != nil {
					b.Fatal(err)
				}
			}
		})
		st.Close()
	}
}

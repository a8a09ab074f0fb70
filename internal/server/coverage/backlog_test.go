package coverage_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mamori-dev/mamori/internal/server/coverage"
	"github.com/mamori-dev/mamori/internal/server/store"
	"github.com/mamori-dev/mamori/internal/server/store/storetest"
)

// A node whose heartbeats stop while the server is behind is Unhealthy with
// SERVER_BEHIND — the server has not yet handled a message received before
// the node was due, so its heartbeat may be queued behind it (or in its
// spool, the agent backing off from a full queue) — and AGENT_NOT_REPORTING
// otherwise: when the queue holds nothing from before the node was due, or
// nothing at all, and when the backlog has been unreadable for longer than
// a grace period. A node dead before the backlog began stays dead. The
// issue changes only when its cause does.
func TestSilenceWhileTheServerIsBehind(t *testing.T) {
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	c := &clock{t: start}
	var mu sync.Mutex
	var backlog coverage.Backlog
	var backlogErr error
	st := storetest.Open(t, store.EngineSQLite, store.Options{})
	m, err := coverage.New(coverage.Config{Store: st, Policy: coverage.Policy{NotReportingAfter: 30 * time.Second}, Now: c.now,
		Backlog: func(context.Context) (coverage.Backlog, error) {
			mu.Lock()
			defer mu.Unlock()
			return backlog, backlogErr
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	beat := func(node string) {
		t.Helper()
		if _, err := m.Observe(ctx, healthy(node, c.now()), c.now()); err != nil {
			t.Fatal(err)
		}
	}
	sweep := func(bl coverage.Backlog, blErr error) {
		t.Helper()
		mu.Lock()
		backlog, backlogErr = bl, blErr
		mu.Unlock()
		if err := m.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
	}
	expect := func(step, node, want string) {
		t.Helper()
		s, err := m.Node(ctx, node)
		if err != nil {
			t.Fatal(err)
		}
		if s.Status != coverage.Unhealthy || len(s.Issues) == 0 || s.Issues[0] != s.Issue || !strings.HasPrefix(s.Issue, want) {
			t.Fatalf("%s: %s %s %q (issues %q), want %q", step, node, s.Status, s.Issue, s.Issues, want)
		}
	}
	const behind = "SERVER_BEHIND:no heartbeat stored since "
	const silent = "AGENT_NOT_REPORTING:agent not reporting since "

	beat("n1")         // due at +30s
	c.add(time.Minute) // +60s
	queued := coverage.Backlog{Pending: 5000, OldestPending: start.Add(20 * time.Second)}
	sweep(queued, nil)
	expect("a message from before n1 was due is unhandled", "n1", behind+"2026-03-01T12:00:00Z while the server is behind")
	before, _ := st.CoverageEvents(ctx, 0, 0)
	sweep(coverage.Backlog{Pending: 4000, OldestPending: start.Add(25 * time.Second)}, nil)
	if after, _ := st.CoverageEvents(ctx, 0, 0); len(after) != len(before) {
		t.Fatalf("the backlog moving within the same cause logged %d transitions", len(after)-len(before))
	}
	sweep(coverage.Backlog{Pending: 300, OldestPending: start.Add(45 * time.Second)}, nil)
	expect("only messages received after n1 was due are unhandled", "n1", silent+"2026-03-01T12:00:00Z")
	sweep(coverage.Backlog{}, nil)
	expect("nothing queued", "n1", silent)

	// n2 reports at +55s (due at +85s); the server falls behind at +70s.
	c.add(-5 * time.Second)
	beat("n2")
	c.add(65 * time.Second) // +120s
	behindSince70 := coverage.Backlog{Pending: 60000, OldestPending: start.Add(70 * time.Second)}
	sweep(behindSince70, nil)
	expect("n2 was due after the backlog began", "n2", behind+"2026-03-01T12:00:55Z")
	expect("n1 was silent before the backlog began", "n1", silent)

	// The backlog cannot be read: the last reading stands for a while...
	sweep(coverage.Backlog{}, errors.New("jetstream: timeout"))
	expect("backlog unreadable, within the grace", "n2", behind)
	c.add(31 * time.Second)
	sweep(coverage.Backlog{}, errors.New("jetstream: timeout"))
	// ... and no longer.
	expect("backlog unreadable past the grace", "n2", silent)
	sweep(behindSince70, nil)
	expect("read again", "n2", behind)
}

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
// SERVER_BEHIND — its heartbeat may be queued, or in its spool because the
// queue was already full when the node was due — and AGENT_NOT_REPORTING
// otherwise: when the queue holds nothing from before the node was due, when
// the queue filled only after the node was due (a dead node stays dead),
// and when the backlog has been unreadable for longer than a grace period.
// The issue changes only when its cause does.
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
	queued := coverage.Backlog{Pending: 5000, OldestPending: start.Add(20 * time.Second), Fill: 0.3}
	sweep(queued, nil)
	expect("messages from before n1 was due are queued", "n1", behind+"2026-03-01T12:00:00Z while the server is behind")
	sweep(coverage.Backlog{Pending: 300, OldestPending: start.Add(45 * time.Second), Fill: 0.3}, nil)
	expect("only newer messages queued", "n1", silent+"2026-03-01T12:00:00Z")

	// The queue fills at +60s: n1 was due at +30s, before — it stays silent.
	c.add(-5 * time.Second)
	beat("n2") // at +55s, due at +85s
	c.add(5 * time.Second)
	full := coverage.Backlog{Pending: 0, Fill: 0.97}
	sweep(full, nil)
	expect("queue full after n1 was due", "n1", silent)
	c.add(time.Minute) // +120s: n2 silent, and the queue was full when it was due
	sweep(coverage.Backlog{Fill: 0.85}, nil)
	expect("queue still full (hysteresis) when n2 was due", "n2", behind+"2026-03-01T12:00:55Z")
	expect("queue still full, n1", "n1", silent)
	before, _ := st.CoverageEvents(ctx, 0, 0)
	for _, fill := range []float64{0.9, 0.82, 0.96, 0.85} {
		sweep(coverage.Backlog{Fill: fill}, nil)
	}
	if after, _ := st.CoverageEvents(ctx, 0, 0); len(after) != len(before) {
		t.Fatalf("a fill hovering near the bound logged %d transitions", len(after)-len(before))
	}

	// The backlog cannot be read: the last reading stands for a while...
	sweep(coverage.Backlog{}, errors.New("jetstream: timeout"))
	expect("backlog unreadable, within the grace", "n2", behind)
	c.add(31 * time.Second)
	sweep(coverage.Backlog{}, errors.New("jetstream: timeout"))
	// ... and no longer.
	expect("backlog unreadable past the grace", "n2", silent)

	// Read again, drained below the hysteresis: silence is the agents'.
	sweep(coverage.Backlog{Fill: 0.5}, nil)
	expect("drained", "n2", silent)
}

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
// SERVER_BEHIND — its heartbeat may be queued, or in its spool while the
// queue is full — and with AGENT_NOT_REPORTING once the queue holds nothing
// from before the node was due (or the backlog cannot be read).
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
	if _, err := m.Observe(ctx, healthy("n1", start), c.now()); err != nil {
		t.Fatal(err)
	}
	issueAfterSweep := func(bl coverage.Backlog, blErr error) string {
		t.Helper()
		mu.Lock()
		backlog, backlogErr = bl, blErr
		mu.Unlock()
		if err := m.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
		s, err := m.Node(ctx, "n1")
		if err != nil {
			t.Fatal(err)
		}
		if s.Status != coverage.Unhealthy || len(s.Issues) == 0 || s.Issues[0] != s.Issue {
			t.Fatalf("silent node: %s %q issues %q", s.Status, s.Issue, s.Issues)
		}
		return s.Issue
	}
	c.add(time.Minute) // silent for twice the limit
	const since = "since 2026-03-01T12:00:00Z"
	queuedBeforeDue := coverage.Backlog{Messages: 5000, Oldest: start.Add(20 * time.Second)}
	cases := []struct {
		name string
		bl   coverage.Backlog
		err  error
		want string
	}{
		{"queue holds messages from before the node was due", queuedBeforeDue, nil,
			"SERVER_BEHIND:no heartbeat stored " + since + " while the server is behind: agent messages from before the node was due are still queued"},
		{"queue full", coverage.Backlog{Messages: 60000, Oldest: start.Add(50 * time.Second), Full: true}, nil,
			"SERVER_BEHIND:no heartbeat stored " + since + " while the server is behind: its queue of agent messages is full"},
		{"queue only holds newer messages", coverage.Backlog{Messages: 300, Oldest: start.Add(45 * time.Second)}, nil,
			"AGENT_NOT_REPORTING:agent not reporting " + since},
		{"queue empty", coverage.Backlog{}, nil, "AGENT_NOT_REPORTING:agent not reporting " + since},
		{"backlog unreadable", queuedBeforeDue, errors.New("jetstream: timeout"), "AGENT_NOT_REPORTING:agent not reporting " + since},
	}
	for _, tc := range cases {
		if got := issueAfterSweep(tc.bl, tc.err); !strings.HasPrefix(got, tc.want) {
			t.Errorf("%s: issue %q, want %q", tc.name, got, tc.want)
		}
	}
	// Each change of cause is a logged transition; re-sweeping the same
	// state is not.
	before, _ := st.CoverageEvents(ctx, 0, 0)
	issueAfterSweep(coverage.Backlog{}, nil)
	issueAfterSweep(coverage.Backlog{Messages: 1, Oldest: start.Add(50 * time.Second)}, nil)
	after, _ := st.CoverageEvents(ctx, 0, 0)
	if len(after) != len(before) {
		t.Errorf("re-sweeping an unchanged cause logged %d transitions", len(after)-len(before))
	}
}

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
// backlogEnv is a Monitor on SQLite whose backlog a test sets before each
// sweep, on a clock the test moves.
type backlogEnv struct {
	t       *testing.T
	c       *clock
	st      store.Store
	m       *coverage.Monitor
	mu      sync.Mutex
	backlog coverage.Backlog
	err     error
}

func newBacklogEnv(t *testing.T, start time.Time) *backlogEnv {
	e := &backlogEnv{t: t, c: &clock{t: start}, st: storetest.Open(t, store.EngineSQLite, store.Options{})}
	var err error
	e.m, err = coverage.New(coverage.Config{Store: e.st, Policy: coverage.Policy{NotReportingAfter: 30 * time.Second}, Now: e.c.now,
		Backlog: func(context.Context) (coverage.Backlog, error) {
			e.mu.Lock()
			defer e.mu.Unlock()
			return e.backlog, e.err
		}})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *backlogEnv) beat(node string) {
	e.t.Helper()
	if _, err := e.m.Observe(context.Background(), healthy(node, e.c.now()), e.c.now()); err != nil {
		e.t.Fatal(err)
	}
}

func (e *backlogEnv) sweep(bl coverage.Backlog, blErr error) {
	e.t.Helper()
	e.mu.Lock()
	e.backlog, e.err = bl, blErr
	e.mu.Unlock()
	if err := e.m.Sweep(context.Background()); err != nil {
		e.t.Fatal(err)
	}
}

func (e *backlogEnv) expect(step, node, want string) {
	e.t.Helper()
	s, err := e.m.Node(context.Background(), node)
	if err != nil {
		e.t.Fatal(err)
	}
	if s.Status != coverage.Unhealthy || len(s.Issues) == 0 || s.Issues[0] != s.Issue || !strings.HasPrefix(s.Issue, want) {
		e.t.Fatalf("%s: %s %s %q (issues %q), want %q", step, node, s.Status, s.Issue, s.Issues, want)
	}
}

func (e *backlogEnv) transitions() int {
	e.t.Helper()
	evs, err := e.st.CoverageEvents(context.Background(), 0, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	return len(evs)
}

func TestSilenceWhileTheServerIsBehind(t *testing.T) {
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	e := newBacklogEnv(t, start)
	c, beat, sweep, expect := e.c, e.beat, e.sweep, e.expect
	const behind = "SERVER_BEHIND:no heartbeat stored since "
	const silent = "AGENT_NOT_REPORTING:agent not reporting since "

	beat("n1")         // due at +30s
	c.add(time.Minute) // +60s
	queued := coverage.Backlog{Pending: 5000, OldestPending: start.Add(20 * time.Second)}
	sweep(queued, nil)
	expect("a message from before n1 was due is unhandled", "n1", behind+"2026-03-01T12:00:00Z while the server is behind")
	before := e.transitions()
	sweep(coverage.Backlog{Pending: 4000, OldestPending: start.Add(25 * time.Second)}, nil)
	if after := e.transitions(); after != before {
		t.Fatalf("the backlog moving within the same cause logged %d transitions", after-before)
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

// A server that refuses agent messages (its store's disk is low) is named
// as the cause of the silence of every node that was due after the refusal
// began, whatever its queue holds, until a silence limit after it ends; a
// node silent before stays the agent's. The issue changes when the cause
// does, and only then.
func TestSilenceWhileTheServerRefuses(t *testing.T) {
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	e := newBacklogEnv(t, start)
	const cause = "the server refuses agent messages: the disk is full"
	const refusing = "SERVER_BEHIND:no heartbeat stored since 2026-03-01T12:00:50Z while " + cause
	e.beat("early") // due at +30s
	e.c.add(50 * time.Second)
	e.beat("late")            // due at +80s
	e.c.add(70 * time.Second) // +120s
	outage := coverage.Outage{Cause: cause, Since: start.Add(60 * time.Second)}
	full := coverage.Backlog{Outages: []coverage.Outage{outage}}
	e.sweep(full, nil)
	e.expect("refusing since before late was due", "late", refusing)
	e.expect("early was due before the refusal", "early", "AGENT_NOT_REPORTING:")
	before := e.transitions()
	e.sweep(full, nil)
	if after := e.transitions(); after != before {
		t.Fatalf("an unchanged refusal logged %d transitions", after-before)
	}
	// Still refusing, the queue holding messages from before: the refusal is named.
	e.sweep(coverage.Backlog{Pending: 10, OldestPending: start.Add(55 * time.Second), Outages: full.Outages}, nil)
	e.expect("refusing with a backlog", "late", refusing)
	// Intake resumed: agents are heard again within seconds (they back off
	// for ten at most), so for a silence limit the refusal still explains
	// the silence and nothing changes...
	outage.Until = e.c.now()
	ended := coverage.Backlog{Outages: []coverage.Outage{outage}}
	before = e.transitions()
	e.sweep(ended, nil)
	e.c.add(29 * time.Second)
	e.sweep(ended, nil)
	e.expect("within a silence limit of the resumption", "late", refusing)
	if after := e.transitions(); after != before {
		t.Fatalf("the resumption logged %d transitions within the grace", after-before)
	}
	// ... and after it, what is left on the server's side does.
	e.c.add(2 * time.Second)
	behindToo := coverage.Backlog{Pending: 10, OldestPending: start.Add(55 * time.Second), Outages: ended.Outages}
	e.sweep(behindToo, nil)
	e.expect("behind after the refusal", "late", "SERVER_BEHIND:no heartbeat stored since 2026-03-01T12:00:50Z while the server is behind")
	e.sweep(ended, nil)
	e.expect("nothing on the server's side", "late", "AGENT_NOT_REPORTING:")
	e.sweep(full, nil)
	e.expect("refusing again", "late", refusing)
}

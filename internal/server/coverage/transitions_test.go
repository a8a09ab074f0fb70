package coverage_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mamori-dev/mamori/internal/server/coverage"
	"github.com/mamori-dev/mamori/internal/server/store"
	"github.com/mamori-dev/mamori/internal/server/store/storetest"
)

// TestTransitions runs a Monitor on the real clock: an agent that stops
// sending heartbeats turns Unhealthy "agent not reporting" within the
// configured interval (plus one sweep), a heartbeat with a failed hook
// turns it Unhealthy naming the hook, and a good heartbeat restores it.
// Every change reaches a subscriber.
func TestTransitions(t *testing.T) {
	for _, engine := range storetest.Engines {
		t.Run(engine, func(t *testing.T) {
			const silence, sweep = 1500 * time.Millisecond, 200 * time.Millisecond
			st := storetest.Open(t, engine, store.Options{})
			m, err := coverage.New(coverage.Config{Store: st, Policy: coverage.Policy{NotReportingAfter: silence},
				SweepEvery: sweep, PollEvery: 100 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			events, unsubscribe := m.Subscribe(16)
			defer unsubscribe()
			done := make(chan error, 1)
			go func() { done <- m.Run(ctx) }()
			defer func() { cancel(); <-done }()
			time.Sleep(100 * time.Millisecond) // Run has found the end of the log

			expect := func(to, issuePrefix string, within time.Duration) coverage.Event {
				t.Helper()
				select {
				case ev := <-events:
					if ev.To != to || !strings.HasPrefix(ev.Issue, issuePrefix) || ev.NodeID != "n1" {
						t.Fatalf("event %+v, want %s %q", ev, to, issuePrefix)
					}
					return ev
				case <-time.After(within):
					t.Fatalf("no %s event within %v", to, within)
				}
				return coverage.Event{}
			}
			beat := func(h *coverage.Heartbeat) {
				t.Helper()
				h.Time = time.Now()
				if _, err := m.Observe(ctx, h, time.Now()); err != nil {
					t.Fatal(err)
				}
			}
			beat(healthy("n1", time.Now()))
			expect(coverage.Healthy, "", 2*time.Second)
			for range 5 {
				time.Sleep(200 * time.Millisecond)
				beat(healthy("n1", time.Now()))
			}
			select {
			case ev := <-events:
				t.Fatalf("transition while reporting: %+v", ev)
			default:
			}
			// The agent stops.
			stopped := time.Now()
			ev := expect(coverage.Unhealthy, "AGENT_NOT_REPORTING:agent not reporting since ", silence+2*sweep+time.Second)
			if took := time.Since(stopped); took < silence || took > silence+2*sweep+500*time.Millisecond {
				t.Errorf("not reporting after %v, configured %v", took, silence)
			}
			if ev.From != coverage.Healthy {
				t.Errorf("from %q", ev.From)
			}
			// It comes back with a hook that failed to attach.
			h := healthy("n1", time.Now())
			h.Hooks = append(h.Hooks, coverage.Hook{Program: "mount", Hook: "tracepoint/syscalls/sys_enter_mount", Error: "permission denied"})
			beat(h)
			expect(coverage.Unhealthy, "HOOK_ATTACH_FAILED:hook tracepoint/syscalls/sys_enter_mount failed to attach: permission denied", 2*time.Second)
			// Fixed.
			beat(healthy("n1", time.Now()))
			expect(coverage.Healthy, "", 2*time.Second)
			s, err := m.Node(ctx, "n1")
			if err != nil || s.Status != coverage.Healthy || len(s.Issues) != 0 {
				t.Errorf("final %+v %v", s, err)
			}
			logged, _ := st.CoverageEvents(ctx, 0, 0)
			if len(logged) != 4 {
				t.Errorf("%d transitions logged, want 4", len(logged))
			}
		})
	}
}

// TestTwoReplicasLogOnce runs two Monitors (server replicas) over one
// PostgreSQL database: a silent node's transition is logged once, and both
// replicas' subscribers receive it.
func TestTwoReplicasLogOnce(t *testing.T) {
	dsn := storetest.PostgresDSN(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var chans []<-chan coverage.Event
	var dones []chan error
	var monitors []*coverage.Monitor
	for range 2 {
		st, err := store.Open(ctx, dsn, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		m, err := coverage.New(coverage.Config{Store: st, Policy: coverage.Policy{NotReportingAfter: 500 * time.Millisecond},
			SweepEvery: 50 * time.Millisecond, PollEvery: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		ch, unsub := m.Subscribe(16)
		defer unsub()
		chans = append(chans, ch)
		monitors = append(monitors, m)
		done := make(chan error, 1)
		go func() { done <- m.Run(ctx) }()
		dones = append(dones, done)
	}
	defer func() {
		cancel()
		for _, d := range dones {
			<-d
		}
	}()
	time.Sleep(100 * time.Millisecond)
	if _, err := monitors[0].Observe(ctx, healthy("n1", time.Now()), time.Now()); err != nil {
		t.Fatal(err)
	}
	for i, ch := range chans {
		for _, want := range []string{coverage.Healthy, coverage.Unhealthy} {
			select {
			case ev := <-ch:
				if ev.To != want {
					t.Errorf("replica %d: event %+v, want %s", i, ev, want)
				}
			case <-time.After(3 * time.Second):
				t.Fatalf("replica %d: no %s event", i, want)
			}
		}
	}
	time.Sleep(300 * time.Millisecond) // more sweeps by both
	logged, err := monitors[1].Nodes(ctx)
	if err != nil || len(logged) != 1 {
		t.Fatalf("nodes %v %v", logged, err)
	}
	st2, _ := store.Open(ctx, dsn, store.Options{})
	defer st2.Close()
	evs, _ := st2.CoverageEvents(ctx, 0, 0)
	if len(evs) != 2 {
		t.Errorf("%d transitions logged by two replicas, want 2: %+v", len(evs), evs)
	}
}

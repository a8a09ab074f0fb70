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

// TestHookElision: the list goes out first, on every change and every
// FullEvery-th heartbeat; in between only the digest does.
func TestHookElision(t *testing.T) {
	e := coverage.HookElision{FullEvery: 4}
	at := time.Now()
	var sent []bool
	for i := range 9 {
		h := healthy("n1", at)
		if i >= 6 { // the list changes at the seventh
			h.Hooks[0].Error = "detached"
		}
		e.Apply(h)
		if h.HooksDigest == "" {
			t.Fatalf("heartbeat %d has no digest", i)
		}
		sent = append(sent, len(h.Hooks) > 0)
	}
	want := []bool{true, false, false, false, true, false, true, false, false}
	for i := range want {
		if sent[i] != want[i] {
			t.Fatalf("hook list sent %v, want %v", sent, want)
		}
	}
}

// TestElidedHooksRestored runs digest-only heartbeats through the
// Monitor: the failed hook keeps the node Unhealthy and its list stays in
// the node's view; a second Monitor on the same store (another replica, a
// restart) restores the list from the stored heartbeat; a change is seen
// at once because the agent sends a changed list in full.
func TestElidedHooksRestored(t *testing.T) {
	for _, engine := range storetest.Engines {
		t.Run(engine, func(t *testing.T) {
			st := storetest.Open(t, engine, store.Options{})
			ctx := context.Background()
			c := &clock{t: time.Now().UTC()}
			newMon := func() *coverage.Monitor {
				m, err := coverage.New(coverage.Config{Store: st, Now: c.now})
				if err != nil {
					t.Fatal(err)
				}
				return m
			}
			m1, m2 := newMon(), newMon()
			var e coverage.HookElision
			beat := func(m *coverage.Monitor, broken bool) *coverage.NodeStatus {
				t.Helper()
				c.add(10 * time.Second)
				h := healthy("n1", c.now())
				if broken {
					h.Hooks[0].Attached, h.Hooks[0].Error = false, "permission denied"
				}
				e.Apply(h)
				ns, err := m.Observe(ctx, h, c.now())
				if err != nil {
					t.Fatal(err)
				}
				return ns
			}
			check := func(ns *coverage.NodeStatus, status, issue string, what string) {
				t.Helper()
				if ns.Status != status || !strings.HasPrefix(ns.Issue, issue) {
					t.Fatalf("%s: %s %q, want %s %q", what, ns.Status, ns.Issue, status, issue)
				}
				if len(ns.Hooks) != 2 {
					t.Fatalf("%s: view has %d hooks, want the 2 last sent", what, len(ns.Hooks))
				}
			}
			check(beat(m1, true), coverage.Unhealthy, "HOOK_ATTACH_FAILED:hook tp_btf/sched_process_exec", "full list")
			check(beat(m1, true), coverage.Unhealthy, "HOOK_ATTACH_FAILED:hook tp_btf/sched_process_exec", "digest only, same replica")
			check(beat(m2, true), coverage.Unhealthy, "HOOK_ATTACH_FAILED:hook tp_btf/sched_process_exec", "digest only, other replica")
			check(beat(m1, false), coverage.Healthy, "", "repaired (full list)")
			check(beat(m2, false), coverage.Healthy, "", "digest only after the repair, other replica")

			// Stored apart: the heartbeat row without the list, the list
			// under the digest of the repaired one.
			n, err := st.GetNode(ctx, "n1")
			if err != nil {
				t.Fatal(err)
			}
			want := healthy("n1", c.now())
			if strings.Contains(string(n.Heartbeat), `"hooks":`) || len(n.Hooks) == 0 || n.HooksDigest != coverage.HooksDigest(want.Hooks) {
				t.Errorf("stored row: heartbeat %s, hooks %d bytes, digest %q (want %q)", n.Heartbeat, len(n.Hooks),
					n.HooksDigest, coverage.HooksDigest(want.Hooks))
			}
		})
	}
}

package store_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/mamori-dev/mamori/internal/server/store"
	"github.com/mamori-dev/mamori/internal/server/store/storetest"
)

// fakeClock is a settable clock for the store.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func backlogOf(t *testing.T, st store.Store, sink string) store.ExportBacklog {
	t.Helper()
	bs, err := st.ExportBacklogs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bs {
		if b.Sink == sink {
			return b
		}
	}
	return store.ExportBacklog{Sink: sink}
}

// TestExportOutbox: finding changes are queued per sink in their own
// transaction — new at once, updates coalesced and due after the delay,
// suppressed ones never —, claimed under a lease no one else can take, and
// a change that lands while its row is out keeps the row for itself.
func TestExportOutbox(t *testing.T) {
	forEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		clk := &fakeClock{t: time.Now().UTC()}
		st := storetest.Open(t, engine, store.WithClock(store.Options{}, clk.now))
		st.SetExports([]string{"hook", "file"}, 15*time.Minute)

		spec := storetest.Spec{Node: "n1", Actor: "/tmp/x", Seen: clk.now().Add(-time.Minute)}
		a := storetest.Finding(spec)
		spec.Actor = "/tmp/suppressed"
		s := storetest.Finding(spec)
		suppress := func(r *store.Record) string {
			if r.ID == s.ID {
				return "rule-1"
			}
			return ""
		}
		upsert(t, st, store.Upsert{Finding: a, MsgKey: "m1", Reporter: "n1", Suppress: suppress},
			store.Upsert{Finding: s, MsgKey: "m2", Reporter: "n1", Suppress: suppress})
		for _, sink := range []string{"hook", "file"} {
			if b := backlogOf(t, st, sink); b.Pending != 1 || b.Leased != 0 {
				t.Fatalf("%s after one new and one suppressed finding: %+v", sink, b)
			}
		}

		// Two updates coalesce into one row, not due for 15 minutes.
		upsert(t, st, store.Upsert{Finding: cumulative(a, 2, clk.now()), MsgKey: "m3", Reporter: "n1"})
		upsert(t, st, store.Upsert{Finding: cumulative(a, 3, clk.now()), MsgKey: "m4", Reporter: "n1"})
		if b := backlogOf(t, st, "hook"); b.Pending != 2 {
			t.Fatalf("after two updates: %+v, want the new row and one update row", b)
		}
		items, err := st.ClaimExports(ctx, "hook", "r1", time.Minute, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(items) != 1 || items[0].Kind != store.ExportNew || items[0].FindingID != a.ID {
			t.Fatalf("claimed %+v, want only the new row", items)
		}
		// Leased: another replica gets nothing, even once the update is due.
		clk.add(16 * time.Minute)
		if err := st.RenewExports(ctx, "hook", items, time.Minute); err != nil {
			t.Fatal(err)
		}
		other, err := st.ClaimExports(ctx, "hook", "r2", time.Minute, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(other) != 1 || other[0].Kind != store.ExportUpdate {
			t.Fatalf("second claimer got %+v, want the due update only", other)
		}
		if err := st.SettleExport(ctx, items[0], clk.now()); err != nil {
			t.Fatal(err)
		}
		// A change while the update is out: settling keeps the row, due
		// after the delay again.
		upsert(t, st, store.Upsert{Finding: cumulative(a, 4, clk.now()), MsgKey: "m5", Reporter: "n1"})
		if err := st.SettleExport(ctx, other[0], clk.now().Add(15*time.Minute)); err != nil {
			t.Fatal(err)
		}
		if b := backlogOf(t, st, "hook"); b.Pending != 1 || b.Leased != 0 {
			t.Fatalf("after settling an update overtaken by a change: %+v", b)
		}
		if got, _ := st.ClaimExports(ctx, "hook", "r1", time.Minute, 10); len(got) != 0 {
			t.Fatalf("the requeued update is due in 15 minutes, claimed now: %+v", got)
		}
		clk.add(15 * time.Minute)
		got, err := st.ClaimExports(ctx, "hook", "r1", time.Minute, 10)
		if err != nil || len(got) != 1 {
			t.Fatalf("requeued update: %+v %v", got, err)
		}
		// A lapsed lease (its replica died) lets another replica take it.
		clk.add(2 * time.Minute)
		got2, err := st.ClaimExports(ctx, "hook", "r2", time.Minute, 10)
		if err != nil || len(got2) != 1 {
			t.Fatalf("after the lease lapsed: %+v %v", got2, err)
		}
		if err := st.SettleExport(ctx, got2[0], clk.now()); err != nil {
			t.Fatal(err)
		}
		if b := backlogOf(t, st, "hook"); b.Pending != 0 {
			t.Fatalf("hook backlog after settling everything: %+v", b)
		}
		// The late holder: r1's claim of a row lapses and r2 claims and
		// settles it; a new change queues a fresh row at the same version.
		// r1's settle, release and renewal, arriving now, must leave the
		// fresh row alone: it has not gone out.
		upsert(t, st, store.Upsert{Finding: cumulative(a, 5, clk.now()), MsgKey: "m6", Reporter: "n1"})
		clk.add(16 * time.Minute)
		stale, err := st.ClaimExports(ctx, "hook", "r1", time.Minute, 10)
		if err != nil || len(stale) != 1 || stale[0].Version != 1 {
			t.Fatalf("r1's claim: %+v %v", stale, err)
		}
		clk.add(2 * time.Minute)
		taken, err := st.ClaimExports(ctx, "hook", "r2", time.Minute, 10)
		if err != nil || len(taken) != 1 {
			t.Fatalf("r2's claim after r1's lapsed: %+v %v", taken, err)
		}
		if err := st.SettleExport(ctx, taken[0], clk.now()); err != nil {
			t.Fatal(err)
		}
		upsert(t, st, store.Upsert{Finding: cumulative(a, 6, clk.now()), MsgKey: "m7", Reporter: "n1"})
		if err := st.RenewExports(ctx, "hook", stale, time.Hour); err != nil {
			t.Fatal(err)
		}
		if b := backlogOf(t, st, "hook"); b.Pending != 1 || b.Leased != 0 {
			t.Fatalf("a lapsed claim's renewal took the fresh row: %+v", b)
		}
		if err := st.SettleExport(ctx, stale[0], clk.now()); err != nil {
			t.Fatal(err)
		}
		if err := st.ReleaseExport(ctx, stale[0], clk.now()); err != nil {
			t.Fatal(err)
		}
		if b := backlogOf(t, st, "hook"); b.Pending != 1 {
			t.Fatalf("a lapsed claim's late settle deleted a change never sent: %+v", b)
		}
		if has, err := st.HasDueExports(ctx, "hook"); err != nil || has {
			t.Fatalf("the fresh update is not due yet, HasDueExports says %v (%v)", has, err)
		}
		clk.add(16 * time.Minute)
		if has, err := st.HasDueExports(ctx, "hook"); err != nil || !has {
			t.Fatalf("the fresh update is due, HasDueExports says %v (%v)", has, err)
		}
		late, err := st.ClaimExports(ctx, "hook", "r2", time.Minute, 10)
		if err != nil || len(late) != 1 || late[0].Kind != store.ExportUpdate {
			t.Fatalf("the fresh update: %+v %v", late, err)
		}
		if err := st.SettleExport(ctx, late[0], clk.now()); err != nil {
			t.Fatal(err)
		}

		// Released rows come back when due; rows of a sink no longer
		// configured are dropped and counted.
		f, err := st.ClaimExports(ctx, "file", "r1", time.Minute, 10)
		if err != nil || len(f) != 2 {
			t.Fatalf("file sink claim: %+v %v", f, err)
		}
		if err := st.ReleaseExport(ctx, f[0], clk.now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		if err := st.ReleaseAllExports(ctx); err != nil {
			t.Fatal(err)
		}
		if b := backlogOf(t, st, "file"); b.Pending != 2 || b.Leased != 0 {
			t.Fatalf("file backlog after release: %+v", b)
		}
		dropped, err := st.DropExports(ctx, []string{"hook"})
		if err != nil || dropped["file"] != 2 || len(dropped) != 1 {
			t.Fatalf("dropped %v %v", dropped, err)
		}
		if b := backlogOf(t, st, "file"); b.Pending != 0 {
			t.Fatalf("file backlog after drop: %+v", b)
		}
	})
}

package transport

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mamori-dev/mamori/internal/testenv"
)

// guardEnv is a bus on a small disk of its own, a consumer collecting
// what reaches the server, one agent's publisher and a disk guard.
type guardEnv struct {
	t     *testing.T
	disk  string
	bus   *testBus
	col   *collector
	pub   *Publisher
	guard *DiskGuard
	m     *Metrics
	ids   map[string]bool
}

func newGuardEnv(t *testing.T, minFree int64) *guardEnv {
	disk := testenv.SmallDisk(t, 256)
	e := &guardEnv{t: t, disk: disk, bus: startBus(t, disk, -1), col: newCollector(), m: NewMetrics(nil), ids: map[string]bool{}}
	e.bus.runConsumer(ConsumerConfig{Handler: e.col.handle})
	e.pub = startPublisher(t, PublisherConfig{Creds: e.bus.enroll("node-a"), SpoolDir: t.TempDir(), Logger: quietLogger(),
		AckTimeout: time.Second, ReplayInterval: 100 * time.Millisecond, BackoffBase: 100 * time.Millisecond, BackoffMax: 500 * time.Millisecond})
	var err error
	e.guard, err = NewDiskGuard(DiskGuardConfig{Embedded: e.bus.emb, JS: e.bus.js, MinFree: minFree, Metrics: e.m, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// publish sends n ~1 KB findings, 10 ms apart.
func (e *guardEnv) publish(n int) {
	e.t.Helper()
	pad := strings.Repeat("f", 900)
	for i := range n {
		id, err := e.pub.Publish(KindFinding, map[string]any{"i": len(e.ids), "pad": pad})
		if err != nil {
			e.t.Fatalf("finding %d: %v", i, err)
		}
		e.ids[msgIDHeader("node-a", id)] = true
		time.Sleep(10 * time.Millisecond)
	}
}

// everyFindingOnce flushes the publisher and checks that every finding
// reached the server exactly once.
func (e *guardEnv) everyFindingOnce() {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := e.pub.Flush(ctx); err != nil {
		e.t.Fatalf("flush: %v", err)
	}
	waitFor(e.t, "every finding consumed", 30*time.Second, func() bool { return e.col.count() >= len(e.ids) })
	time.Sleep(300 * time.Millisecond) // let a duplicate show
	e.col.mu.Lock()
	defer e.col.mu.Unlock()
	for id := range e.ids {
		if n := e.col.byID[id]; n != 1 {
			e.t.Errorf("finding %s reached the server %d times", id, n)
		}
	}
	if len(e.col.msgs) != len(e.ids) {
		e.t.Errorf("server handled %d messages, agent sent %d findings", len(e.col.msgs), len(e.ids))
	}
	if st := e.pub.Stats(); st.Spool.Messages != 0 || st.Losses()["spool"] != 0 || st.Losses()["rejected"] != 0 {
		e.t.Errorf("publisher after the replay: %+v", st)
	}
}

// A disk running low makes the server refuse agent messages before the
// store's writes can fail: the agent keeps its findings in its spool, and
// once the disk has room again every one arrives, once.
func TestDiskGuardPausesIntakeOnALowDisk(t *testing.T) {
	e := newGuardEnv(t, 32<<20)
	ctx := context.Background()
	e.guard.Check(ctx)
	if st := e.guard.State(); st.Refusing != "" || st.Free < 200<<20 {
		t.Fatalf("on an empty disk: %+v", st)
	}
	e.publish(20)
	waitFor(t, "first findings consumed", 10*time.Second, func() bool { return e.col.count() == 20 })

	free := testenv.FillDisk(t, e.disk, 16<<20)
	e.guard.Check(ctx)
	st := e.guard.State()
	if st.Refusing != RefusalDisk || st.Since.IsZero() || st.Free > 16<<20 || st.StoreFailed != "" {
		t.Fatalf("with 16 MiB free and 32 MiB wanted: %+v", st)
	}
	if testutil.ToFloat64(e.m.IntakePaused) != 1 {
		t.Fatal("intake_paused gauge not set")
	}
	e.publish(100)
	waitFor(t, "findings spooled", 10*time.Second, func() bool { return e.pub.Stats().Spooled > 0 })
	if n := e.col.count(); n != 20 {
		t.Fatalf("the server took %d messages while refusing", n)
	}
	if h := e.bus.emb.Server.Healthz(nil); h.Status != "ok" {
		t.Fatalf("the store failed although the guard paused intake first: %s", h.Error)
	}

	// Between the marks intake stays paused, so it does not flap.
	free()
	fillAgain := testenv.FillDisk(t, e.disk, 48<<20)
	e.guard.Check(ctx)
	if got := e.guard.State(); got.Refusing != RefusalDisk || !got.Since.Equal(st.Since) {
		t.Fatalf("with 48 MiB free (resume at 64): %+v", got)
	}
	fillAgain()
	e.guard.Check(ctx)
	if got := e.guard.State(); got.Refusing != "" || !got.Since.Equal(st.Since) || got.Until.Before(st.Since) {
		t.Fatalf("with the disk freed: %+v", got)
	}
	if testutil.ToFloat64(e.m.IntakePaused) != 0 {
		t.Fatal("intake_paused gauge still set")
	}
	e.everyFindingOnce()
	if testutil.ToFloat64(e.m.StoreRestarts) != 0 {
		t.Fatal("a pause must not restart JetStream")
	}
}

// A disk filled between two checks (by another program) fails the store's
// writes: NATS then leaves publishes unanswered, even after space returns,
// until JetStream restarts. The guard restarts it once there is room, and
// every finding — those the agent spooled meanwhile included — arrives once.
func TestDiskGuardRestartsAFailedStore(t *testing.T) {
	e := newGuardEnv(t, 1<<20)
	ctx := context.Background()
	e.publish(20)
	waitFor(t, "first findings consumed", 10*time.Second, func() bool { return e.col.count() == 20 })

	free := testenv.FillDisk(t, e.disk, 0)
	e.publish(50)
	waitFor(t, "the store's write failed", 20*time.Second, func() bool { return e.guard.storeFailed() != "" })
	e.guard.Check(ctx)
	if st := e.guard.State(); st.Refusing != RefusalDisk || !strings.Contains(st.StoreFailed, "no space left") {
		t.Fatalf("with the store failed and the disk full: %+v", st)
	}
	if testutil.ToFloat64(e.m.StoreRestarts) != 0 {
		t.Fatal("restarted JetStream on a full disk")
	}

	free()
	// Without the guard the stream stays failed with the disk free again.
	time.Sleep(time.Second)
	if e.guard.storeFailed() == "" {
		t.Fatal("the stream recovered by itself: this test no longer shows what the guard is for")
	}
	e.guard.Check(ctx)
	if testutil.ToFloat64(e.m.StoreRestarts) != 1 {
		t.Fatal("JetStream not restarted with the disk free")
	}
	if st := e.guard.State(); st.Refusing != "" || st.StoreFailed != "" || st.Until.IsZero() {
		t.Fatalf("after the restart: %+v", st)
	}
	e.publish(10)
	e.everyFindingOnce()
}

// The guard's marks, on a disk whose free space the test sets: it pauses
// below MinFree and resumes at twice that, not in between; a pause outlives
// a restart of the server (a new guard takes it up from the stream before
// EnsureStream resets the bound), keeping its start.
func TestDiskGuardMarksAndRestart(t *testing.T) {
	b := startBus(t, t.TempDir(), -1)
	ctx := context.Background()
	var free atomic.Int64
	newGuard := func() *DiskGuard {
		g, err := NewDiskGuard(DiskGuardConfig{Embedded: b.emb, JS: b.js, MinFree: 32 << 20, Logger: testLogger(t),
			Free: func(string) (int64, error) { return free.Load(), nil }})
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	bound := func() (int64, string) {
		t.Helper()
		st, err := b.js.Stream(ctx, StreamName)
		if err != nil {
			t.Fatal(err)
		}
		c := st.CachedInfo().Config
		return c.MaxBytes, c.Metadata[refusingSinceKey]
	}
	step := func(g *DiskGuard, mib int64, refusing bool, wantBound int64) DiskState {
		t.Helper()
		free.Store(mib << 20)
		g.Check(ctx)
		st := g.State()
		if got, mark := bound(); (st.Refusing != "") != refusing || got != wantBound || (mark != "") != refusing {
			t.Fatalf("%d MiB free: state %+v, stream bound %d (mark %q); want refusing %v, bound %d", mib, st, got, mark, refusing, wantBound)
		}
		return st
	}
	g := newGuard()
	step(g, 100, false, DefaultStreamMaxBytes)
	paused := step(g, 20, true, 1)
	if st := step(g, 50, true, 1); !st.Since.Equal(paused.Since) {
		t.Fatalf("pause start moved: %v → %v", paused.Since, st.Since)
	}

	// The server restarts while paused.
	g = newGuard()
	g.Restore(ctx)
	if st := g.State(); st.Refusing != RefusalDisk || !st.Since.Equal(paused.Since) {
		t.Fatalf("restored: %+v, want refusing since %v", st, paused.Since)
	}
	if _, err := EnsureStream(ctx, b.js, StreamOptions{Duplicates: time.Hour, PausedSince: g.PausedSince()}); err != nil {
		t.Fatal(err)
	}
	if got, mark := bound(); got != 1 || mark == "" {
		t.Fatalf("EnsureStream lifted the pause: bound %d, mark %q", got, mark)
	}
	if st := step(g, 50, true, 1); !st.Since.Equal(paused.Since) {
		t.Fatalf("after the restart the pause starts at %v, want %v", st.Since, paused.Since)
	}
	resumed := step(g, 70, false, DefaultStreamMaxBytes)
	if !resumed.Since.Equal(paused.Since) || resumed.Until.IsZero() {
		t.Fatalf("resumed: %+v", resumed)
	}

	// The server restarts soon after the pause ended: it still knows the
	// pause (coverage excuses agents that back off and replay), also
	// after its start rewrote the stream's configuration.
	for range 2 {
		g = newGuard()
		g.Restore(ctx)
		if st := g.State(); st.Refusing != "" || !st.Since.Equal(resumed.Since) || !st.Until.Equal(resumed.Until) {
			t.Fatalf("restored after the pause ended: %+v, want the pause %v – %v", st, resumed.Since, resumed.Until)
		}
		if _, err := EnsureStream(ctx, b.js, StreamOptions{Duplicates: time.Hour, PausedSince: g.PausedSince()}); err != nil {
			t.Fatal(err)
		}
		step(g, 70, false, DefaultStreamMaxBytes)
	}
	step(g, 50, false, DefaultStreamMaxBytes) // between the marks, open stays open
	if again := step(g, 10, true, 1); !again.Since.After(paused.Since) || !again.Until.IsZero() {
		t.Fatalf("a new pause: %+v", again)
	}
}

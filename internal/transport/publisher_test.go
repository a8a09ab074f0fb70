package transport

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mamori-dev/mamori/internal/testenv"
)

// With the server away and a small spool, heartbeats are dropped (and
// counted) to keep findings; after the server returns, every finding and
// every kept heartbeat arrives once, and nothing else.
func TestPublisherSmallSpoolKeepsFindings(t *testing.T) {
	b := startBus(t, t.TempDir(), -1)
	port := b.port
	creds := b.enroll("node-a")
	m := NewMetrics(nil)
	const limit = 24 << 10
	p := startPublisher(t, PublisherConfig{Creds: creds, SpoolDir: t.TempDir(), SpoolMaxBytes: limit, Metrics: m,
		Logger: quietLogger(), ReplayInterval: 100 * time.Millisecond, ReconnectWait: 100 * time.Millisecond,
		NATSOptions: []nats.Option{nats.ReconnectJitter(0, 0)}})
	b.down()
	waitFor(t, "disconnected", 10*time.Second, func() bool { return !p.Stats().Connected })

	findings := map[string]bool{}
	pad := strings.Repeat("h", 150)
	for i := range 600 {
		if _, err := p.Publish(KindHeartbeat, map[string]any{"i": i, "pad": pad}); err != nil {
			t.Fatalf("heartbeat %d: %v", i, err)
		}
		if i%10 == 0 {
			id, err := p.Publish(KindFinding, map[string]any{"i": i, "type": "X"})
			if err != nil {
				t.Fatalf("finding %d: %v", i, err)
			}
			findings[msgIDHeader("node-a", id)] = true
		}
		if st := p.Stats().Spool; st.Bytes > limit {
			t.Fatalf("spool %d bytes over its %d limit", st.Bytes, limit)
		}
	}
	st := p.Stats()
	dropped := st.Spool.Dropped[KindHeartbeat]
	t.Logf("600 heartbeats + 60 findings into %d bytes: %d heartbeats dropped, %d messages kept",
		limit, dropped, st.Spool.Messages)
	if dropped == 0 || st.Spool.Dropped[KindFinding] != 0 {
		t.Fatalf("drops: %v", st.Spool.Dropped)
	}
	if got := testutil.ToFloat64(m.SpoolDropped.WithLabelValues("heartbeat", "full")); uint64(got) != dropped {
		t.Fatalf("spool_dropped_total{heartbeat,full} = %v, stats say %d", got, dropped)
	}
	// Only heartbeats went: nothing the node's coverage counts as lost.
	if l := st.Losses(); l["spool"] != 0 || l["rejected"] != 0 {
		t.Fatalf("losses %v with only heartbeats dropped, want none", l)
	}
	kept := st.Spool.Messages

	col := backAndFlush(t, b, p, port)
	waitFor(t, "kept messages consumed", 10*time.Second, func() bool { return int64(col.count()) == kept })
	time.Sleep(200 * time.Millisecond)
	col.mu.Lock()
	defer col.mu.Unlock()
	if int64(len(col.msgs)) != kept {
		t.Fatalf("consumed %d, kept %d", len(col.msgs), kept)
	}
	for id := range findings {
		if col.byID[id] != 1 {
			t.Fatalf("finding %s delivered %d times", id, col.byID[id])
		}
	}
}

func TestPublisherRefusesInvalidMessages(t *testing.T) {
	b := startBus(t, t.TempDir(), -1)
	m := NewMetrics(nil)
	p, err := NewPublisher(PublisherConfig{Creds: b.enroll("node-a"), SpoolDir: t.TempDir(), Metrics: m, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	_, err = p.Publish(KindFinding, map[string]string{"pad": strings.Repeat("x", MaxEnvelopeBytes)})
	if RejectReason(err) != ReasonOversized {
		t.Fatalf("oversized publish: %v", err)
	}
	if _, err := p.Publish("secrets", map[string]string{}); RejectReason(err) != ReasonKind {
		t.Fatalf("unknown kind: %v", err)
	}
	if _, err := p.Publish(KindEvent, func() {}); err == nil {
		t.Fatal("unmarshalable payload accepted")
	}
	if testutil.ToFloat64(m.PublishErrors.WithLabelValues(ReasonOversized)) != 1 {
		t.Fatal("oversized publish not counted")
	}
	// Bad credentials are refused up front.
	bad := *p.cfg.Creds
	bad.NodeID = "node-b"
	if _, err := NewPublisher(PublisherConfig{Creds: &bad, SpoolDir: t.TempDir()}); err == nil {
		t.Fatal("publisher accepted credentials whose JWT names another node")
	}
}

// Closing with messages in flight and the server gone keeps them in the spool
// for the next run.
func TestPublisherCloseKeepsUnacked(t *testing.T) {
	b := startBus(t, t.TempDir(), -1)
	port := b.port
	creds := b.enroll("node-a")
	spool := t.TempDir()
	p, err := NewPublisher(PublisherConfig{Creds: creds, SpoolDir: spool, Logger: quietLogger(), AckTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "connected", 10*time.Second, func() bool { return p.Stats().Connected })
	b.down()
	for i := range 50 {
		if _, err := p.Publish(KindFinding, map[string]int{"i": i}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	st := p.Stats()
	t.Logf("closed: %+v", st)
	if st.Spool.Messages != 50 {
		t.Fatalf("spool holds %d of 50 unacknowledged messages after Close", st.Spool.Messages)
	}
	if _, err := p.Publish(KindFinding, map[string]int{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("publish after close: %v", err)
	}

	b.start(port)
	col := newCollector()
	b.runConsumer(ConsumerConfig{Handler: col.handle})
	p2, err := NewPublisher(PublisherConfig{Creds: creds, SpoolDir: spool, Logger: quietLogger(), ReplayInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close(context.Background())
	waitFor(t, "previous run's messages delivered", 15*time.Second, func() bool {
		if col.count() == 50 {
			return true
		}
		t.Logf("consumed %d; publisher %+v", col.count(), p2.Stats())
		time.Sleep(time.Second)
		return false
	})
}

// A full stream (the server's bound, --stream-max-bytes) refuses new
// messages for now: the agent spools them instead of dropping them, and
// replays them once the server has consumed enough to make room. Every
// finding arrives exactly once.
func TestFullStreamSpoolsAndReplays(t *testing.T) {
	b := startBus(t, t.TempDir(), -1)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := EnsureStream(ctx, b.js, StreamOptions{Duplicates: time.Hour, MaxBytes: 64 << 10}); err != nil {
		t.Fatal(err)
	}
	// Every attempt the agent makes reaches this subscription, accepted or
	// refused: it counts what the server has to read.
	var attempts atomic.Int64
	sub, err := b.nc.Subscribe(SubjectFor("node-a", KindFinding), func(*nats.Msg) { attempts.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	m := NewMetrics(nil)
	p := startPublisher(t, PublisherConfig{Creds: b.enroll("node-a"), SpoolDir: t.TempDir(), Logger: quietLogger(),
		Metrics: m, ReplayInterval: 100 * time.Millisecond, BackoffBase: 200 * time.Millisecond, BackoffMax: time.Second})

	// ~1 KB each, 2 s of them: several times the stream's bound.
	const n = 300
	pad := strings.Repeat("f", 900)
	ids := map[string]bool{}
	for i := range n {
		id, err := p.Publish(KindFinding, map[string]any{"i": i, "type": "X", "pad": pad})
		if err != nil {
			t.Fatalf("finding %d: %v", i, err)
		}
		ids[msgIDHeader("node-a", id)] = true
		time.Sleep(7 * time.Millisecond)
	}
	waitFor(t, "refused messages spooled", 20*time.Second, func() bool { st := p.Stats(); return st.Published+st.Spooled >= n })
	time.Sleep(time.Second) // a few more probes
	st := p.Stats()
	held := testutil.ToFloat64(m.PublishErrors.WithLabelValues("backoff"))
	t.Logf("stream bound 64 KiB: %d published live, %d spooled (%.0f held back while backing off); %d attempts reached the server",
		st.Published, st.Spooled, held, attempts.Load())
	if st.Spooled == 0 || st.Rejected != 0 || !st.BackingOff {
		t.Fatalf("with the stream full: %+v, want some spooled, none rejected, and backing off", st)
	}
	// Backing off, the agent does not send what the server cannot take: the
	// server reads the accepted messages, the refused ones of each failed
	// burst, and small probes — not every message plus every replay.
	if held < n/2 || attempts.Load() > n {
		t.Fatalf("%.0f of %d held back, %d attempts: the agent kept sending to a full stream", held, n, attempts.Load())
	}

	col := newCollector()
	b.runConsumer(ConsumerConfig{Handler: col.handle})
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "every finding consumed", 30*time.Second, func() bool { return col.count() >= n })
	time.Sleep(200 * time.Millisecond)
	col.mu.Lock()
	defer col.mu.Unlock()
	if len(col.msgs) != n {
		t.Fatalf("consumed %d, published %d", len(col.msgs), n)
	}
	for id := range ids {
		if col.byID[id] != 1 {
			t.Fatalf("finding %s delivered %d times", id, col.byID[id])
		}
	}
	if st := p.Stats(); st.Rejected != 0 || st.Spool.Messages != 0 {
		t.Fatalf("after the replay: %+v", st)
	}
}

// Lowering the stream's bound below what it holds (a restart with a smaller
// --stream-max-bytes during a backlog) keeps every stored message: the
// stream refuses new ones until the backlog drains, it does not discard.
func TestShrinkingTheStreamKeepsItsMessages(t *testing.T) {
	b := startBus(t, t.TempDir(), -1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pad := strings.Repeat("x", 4000)
	for i := range 600 { // ~2.4 MB
		msg := nats.NewMsg(SubjectFor("node-a", KindEvent))
		msg.Data = []byte(pad)
		msg.Header.Set("Nats-Msg-Id", fmt.Sprintf("m%d", i))
		if _, err := b.js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	st, err := EnsureStream(ctx, b.js, StreamOptions{Duplicates: time.Hour, MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 600 || info.Config.MaxBytes != 1<<20 {
		t.Fatalf("after lowering the bound: %d messages (want 600), bound %d", info.State.Msgs, info.Config.MaxBytes)
	}
	msg := nats.NewMsg(SubjectFor("node-a", KindEvent))
	msg.Data = []byte("one more")
	msg.Header.Set("Nats-Msg-Id", "m-new")
	if _, err := b.js.PublishMsg(ctx, msg); err == nil {
		t.Fatal("a stream over its bound accepted a new message")
	}
}

// Findings the spool has to give up are losses the agent's heartbeat
// reports (coverage: EVENTS_DROPPED, "spool").
func TestLossesCountFindingsTheSpoolDropped(t *testing.T) {
	b := startBus(t, t.TempDir(), -1)
	p := startPublisher(t, PublisherConfig{Creds: b.enroll("node-a"), SpoolDir: t.TempDir(), SpoolMaxBytes: 8 << 10,
		Logger: quietLogger(), ReconnectWait: 100 * time.Millisecond})
	b.down()
	waitFor(t, "disconnected", 10*time.Second, func() bool { return !p.Stats().Connected })
	pad := strings.Repeat("f", 300)
	for i := range 100 {
		_, _ = p.Publish(KindFinding, map[string]any{"i": i, "pad": pad}) // the spool refuses some: counted
	}
	st := p.Stats()
	if lost := st.Spool.Dropped[KindFinding]; lost == 0 || st.Losses()["spool"] != lost {
		t.Fatalf("100 findings into an 8 KiB spool: dropped %v, losses %v", st.Spool.Dropped, st.Losses())
	}
}

// TestPublisherFollowsAMovedBus: the server's NATS comes back on another
// address while an agent runs; the agent, unable to reach the old one,
// asks where it is now (Locate, the server's API in an agent), moves
// there, and everything it published meanwhile arrives once.
func TestPublisherFollowsAMovedBus(t *testing.T) {
	b := startBus(t, t.TempDir(), -1)
	creds := b.enroll("node-m")
	var where atomic.Pointer[[]string]
	first := []string{b.emb.ClientURL()}
	where.Store(&first)
	var asked atomic.Int32
	moved := make(chan []string, 1)
	p := startPublisher(t, PublisherConfig{Creds: creds, SpoolDir: t.TempDir(), Logger: quietLogger(),
		ReplayInterval: 100 * time.Millisecond, ReconnectWait: 100 * time.Millisecond, FollowAfter: time.Second,
		Locate: func(context.Context) ([]string, error) { asked.Add(1); return *where.Load(), nil },
		OnMove: func(urls []string) {
			select {
			case moved <- urls:
			default:
				t.Errorf("moved again, to %v", urls)
			}
		},
		NATSOptions: []nats.Option{nats.ReconnectJitter(0, 0)}})
	col := newCollector()
	b.runConsumer(ConsumerConfig{Handler: col.handle})
	var ids map[string]bool
	publish := func(n int) {
		for i := range n {
			id, err := p.Publish(KindFinding, map[string]any{"i": i, "type": "X"})
			if err != nil {
				t.Fatal(err)
			}
			ids[msgIDHeader("node-m", id)] = true
		}
	}
	ids = map[string]bool{}
	publish(5)
	waitFor(t, "findings before the move", 10*time.Second, func() bool { return col.count() == 5 })

	// The bus moves: the old address stops answering, the server comes
	// back elsewhere (the same state: its stream and the agents' keys).
	oldPort := b.port
	b.down()
	waitFor(t, "disconnected", 10*time.Second, func() bool { return !p.Stats().Connected })
	b.start(-1)
	if b.port == oldPort {
		t.Fatalf("the bus came back on its old port %d", oldPort)
	}
	now := []string{b.emb.ClientURL()}
	where.Store(&now)
	col2 := newCollector()
	b.runConsumer(ConsumerConfig{Handler: col2.handle})
	ids = map[string]bool{}
	publish(20)

	select {
	case got := <-moved:
		if !slices.Equal(got, now) {
			t.Errorf("moved to %v, the server said %v", got, now)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("the publisher did not follow the bus to %v (asked %d times)", now, asked.Load())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "findings published during the move", 10*time.Second, func() bool { return col2.count() >= 20 })
	time.Sleep(200 * time.Millisecond)
	col2.mu.Lock()
	defer col2.mu.Unlock()
	for id := range ids {
		if n := col2.byID[id]; n != 1 {
			t.Errorf("finding %s, published while the bus moved, delivered %d times", id, n)
		}
	}
	st := p.Stats()
	if !st.Connected {
		t.Error("not connected after the move")
	}
	// The server's de-duplication would hide a message sent twice: the
	// publisher's own counts must not.
	if st.Published != 5 || st.Replayed != 20 {
		t.Errorf("published %d, replayed %d; want 5 live and the 20 spooled during the move replayed once each", st.Published, st.Replayed)
	}
}

// TestPublisherAsksAtStart: an agent that starts while its bus is silent
// (AskAtStart) asks where it is at once, not after FollowAfter (an hour
// here), moves there, and what it published meanwhile arrives.
func TestPublisherAsksAtStart(t *testing.T) {
	b := startBus(t, t.TempDir(), -1)
	creds := b.enroll("node-s")
	oldPort := b.port
	b.down()
	b.start(-1)
	if b.port == oldPort {
		t.Fatalf("the bus came back on its old port %d", oldPort)
	}
	now := []string{b.emb.ClientURL()}
	moved := make(chan []string, 1)
	p := startPublisher(t, PublisherConfig{Creds: creds, SpoolDir: t.TempDir(), Logger: quietLogger(),
		ReplayInterval: 100 * time.Millisecond, ReconnectWait: 100 * time.Millisecond, FollowAfter: time.Hour, AskAtStart: true,
		Locate:      func(context.Context) ([]string, error) { return now, nil },
		OnMove:      func(urls []string) { moved <- urls },
		NATSOptions: []nats.Option{nats.ReconnectJitter(0, 0)}})
	col := newCollector()
	b.runConsumer(ConsumerConfig{Handler: col.handle})
	id, err := p.Publish(KindFinding, map[string]any{"type": "X"})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-moved:
		if !slices.Equal(got, now) {
			t.Errorf("moved to %v, the server said %v", got, now)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the publisher did not ask where the bus is at its start")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the finding published before the move", 10*time.Second, func() bool {
		col.mu.Lock()
		defer col.mu.Unlock()
		return col.byID[msgIDHeader("node-s", id)] == 1
	})
}

// TestPublisherKeepsItsBusWhenTheNewAddressIsDead: an answer naming an
// address where nothing answers (a wrong setting, or a hostile answer) is
// not taken, nor kept for the next start; the agent keeps retrying its
// own, and reports once the bus is back there.
func TestPublisherKeepsItsBusWhenTheNewAddressIsDead(t *testing.T) {
	b := startBus(t, t.TempDir(), -1)
	port := b.port
	creds := b.enroll("node-d")
	dead := []string{"tls://127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))}
	var asked atomic.Int32
	var moves atomic.Int32
	p := startPublisher(t, PublisherConfig{Creds: creds, SpoolDir: t.TempDir(), Logger: quietLogger(),
		ReplayInterval: 100 * time.Millisecond, ReconnectWait: 100 * time.Millisecond, FollowAfter: time.Second,
		Locate:      func(context.Context) ([]string, error) { asked.Add(1); return dead, nil },
		OnMove:      func([]string) { moves.Add(1) },
		NATSOptions: []nats.Option{nats.ReconnectJitter(0, 0)}})
	b.down()
	waitFor(t, "disconnected", 10*time.Second, func() bool { return !p.Stats().Connected })
	waitFor(t, "two asks", 15*time.Second, func() bool { return asked.Load() >= 2 })
	if moves.Load() != 0 || !slices.Equal(p.cur().urls, creds.NATSURLs) {
		t.Fatalf("moved to an address that does not answer (%d moves, dialing %v)", moves.Load(), p.cur().urls)
	}
	id, err := p.Publish(KindFinding, map[string]any{"type": "X"})
	if err != nil {
		t.Fatal(err)
	}
	col := backAndFlush(t, b, p, port)
	waitFor(t, "the finding spooled meanwhile", 10*time.Second, func() bool {
		col.mu.Lock()
		defer col.mu.Unlock()
		return col.byID[msgIDHeader("node-d", id)] == 1
	})
}

// backAndFlush starts the bus again on port with a consumer collecting
// what it gets, and waits until p has delivered all it holds.
func backAndFlush(t *testing.T, b *testBus, p *Publisher, port int) *collector {
	t.Helper()
	b.start(port)
	col := newCollector()
	b.runConsumer(ConsumerConfig{Handler: col.handle})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	return col
}

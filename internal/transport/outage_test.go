package transport

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// The server goes away for a while: the agent spools, and after the server
// restarts on the same store every message arrives exactly once.
func TestOutageSpoolReplayExactlyOnce(t *testing.T) {
	b := startBus(t, t.TempDir(), -1)
	port := b.port
	creds := b.enroll("node-a")
	col := newCollector()
	b.runConsumer(ConsumerConfig{Handler: col.handle})

	m := NewMetrics(nil)
	p, err := NewPublisher(PublisherConfig{Creds: creds, SpoolDir: t.TempDir(), Metrics: m, Logger: quietLogger(),
		AckTimeout: time.Second, ReplayInterval: 100 * time.Millisecond, ReconnectWait: 100 * time.Millisecond,
		NATSOptions: []nats.Option{nats.ReconnectJitter(0, 0)}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	waitFor(t, "connected", 10*time.Second, func() bool { return p.Stats().Connected })

	const live, during = 20, 300
	want := map[string]bool{}
	publish := func(i int) {
		kind := []Kind{KindFinding, KindHeartbeat, KindEvent}[i%3]
		id, err := p.Publish(kind, map[string]int{"i": i})
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		want[msgIDHeader("node-a", id)] = true
	}
	for i := range live {
		publish(i)
	}
	waitFor(t, "live messages consumed", 10*time.Second, func() bool { return col.count() == live })

	b.down()
	waitFor(t, "publisher sees the outage", 10*time.Second, func() bool { return !p.Stats().Connected })
	for i := live; i < live+during; i++ {
		publish(i)
	}
	st := p.Stats()
	t.Logf("during outage: %d spooled, spool %d messages / %d bytes", st.Spooled, st.Spool.Messages, st.Spool.Bytes)
	if st.Spool.Messages != during {
		t.Fatalf("spool holds %d messages, want %d", st.Spool.Messages, during)
	}
	time.Sleep(300 * time.Millisecond) // a few failed reconnects

	b.start(port) // same data dir: same keys, certificate and JetStream store
	b.runConsumer(ConsumerConfig{Handler: col.handle})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "all messages consumed", 20*time.Second, func() bool { return col.count() >= live+during })
	time.Sleep(300 * time.Millisecond) // let any duplicate show up

	col.mu.Lock()
	defer col.mu.Unlock()
	if len(col.msgs) != live+during {
		t.Errorf("consumed %d messages, want %d", len(col.msgs), live+during)
	}
	for id, n := range col.byID {
		if !want[id] {
			t.Errorf("unexpected message %s", id)
		}
		if n != 1 {
			t.Errorf("message %s handled %d times", id, n)
		}
	}
	for id := range want {
		if col.byID[id] == 0 {
			t.Errorf("message %s lost", id)
		}
	}
	st = p.Stats()
	if st.Replayed != during || testutil.ToFloat64(m.Replayed.WithLabelValues("finding")) != during/3 {
		t.Errorf("replayed %d (finding metric %v), want %d", st.Replayed,
			testutil.ToFloat64(m.Replayed.WithLabelValues("finding")), during)
	}
	if st.Spool.Messages != 0 || st.Spool.Bytes != 0 {
		t.Errorf("spool not empty after replay: %+v", st.Spool)
	}
}

// A message whose ack was lost is sent again with the same Nats-Msg-Id:
// JetStream drops the copy and the server never sees it twice.
func TestDuplicatePublishDeduplicated(t *testing.T) {
	b := startBus(t, t.TempDir(), -1)
	creds := b.enroll("node-a")
	col := newCollector()
	b.runConsumer(ConsumerConfig{Handler: col.handle})
	nc := agentConn(t, creds, make(chan error, 4))
	js, _ := jetstream.New(nc)

	env, _ := NewEnvelope("node-a", KindFinding, map[string]string{"type": "X"})
	data, _ := env.Encode()
	ctx := context.Background()
	for i := range 3 {
		msg := nats.NewMsg(SubjectFor("node-a", KindFinding))
		msg.Data = data
		msg.Header.Set(jetstream.MsgIDHeader, msgIDHeader("node-a", env.MsgID))
		ack, err := js.PublishMsg(ctx, msg)
		if err != nil {
			t.Fatal(err)
		}
		if ack.Duplicate != (i > 0) {
			t.Fatalf("publish %d: duplicate=%v", i, ack.Duplicate)
		}
	}
	waitFor(t, "message consumed", 5*time.Second, func() bool { return col.count() == 1 })
	time.Sleep(200 * time.Millisecond)
	if n := col.count(); n != 1 {
		t.Fatalf("handled %d times", n)
	}
}

// The server dies while the agent is publishing flat out. Nothing is lost;
// a message whose ack died with the server is replayed, and the copy is
// caught by JetStream's de-duplication or, when the first copy was already
// consumed and removed, reaches the handler again with the same DedupKey
// (the server's upsert is keyed by it).
func TestOutageMidFlight(t *testing.T) {
	b := startBus(t, t.TempDir(), -1)
	port := b.port
	creds := b.enroll("node-a")
	col := newCollector()
	b.runConsumer(ConsumerConfig{Handler: col.handle, AckWait: 2 * time.Second, Logger: testLogger(t)})
	p, err := NewPublisher(PublisherConfig{Creds: creds, SpoolDir: t.TempDir(), Logger: quietLogger(),
		AckTimeout: time.Second, ReplayInterval: 100 * time.Millisecond, ReconnectWait: 100 * time.Millisecond,
		NATSOptions: []nats.Option{nats.ReconnectJitter(0, 0)}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	waitFor(t, "connected", 10*time.Second, func() bool { return p.Stats().Connected })

	want := map[string]bool{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 3000 {
			id, err := p.Publish(KindFinding, map[string]int{"i": i})
			if err != nil {
				t.Errorf("publish %d: %v", i, err)
				return
			}
			want[msgIDHeader("node-a", id)] = true
			if i%100 == 0 {
				time.Sleep(5 * time.Millisecond)
			}
		}
	}()
	time.Sleep(50 * time.Millisecond)
	b.down()
	<-done
	b.start(port)
	b.runConsumer(ConsumerConfig{Handler: col.handle, AckWait: 2 * time.Second, Logger: testLogger(t)})
	// Messages the dying server had handed to the old consumer are redelivered after AckWait.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		col.mu.Lock()
		n := len(col.byID)
		col.mu.Unlock()
		if n >= len(want) {
			break
		}
		if time.Now().After(deadline) {
			st, _ := b.js.Stream(context.Background(), StreamName)
			si, _ := st.Info(context.Background())
			c, _ := st.Consumer(context.Background(), DefaultDurable)
			ci, _ := c.Info(context.Background())
			t.Fatalf("%d of %d consumed; publisher %+v; stream %+v; consumer delivered %+v ackfloor %+v pending %d ackpending %d redelivered %d waiting %d",
				n, len(want), p.Stats(), si.State.Msgs, ci.Delivered, ci.AckFloor, ci.NumPending, ci.NumAckPending, ci.NumRedelivered, ci.NumWaiting)
		}
		time.Sleep(20 * time.Millisecond)
	}
	col.mu.Lock()
	defer col.mu.Unlock()
	for id := range want {
		if col.byID[id] == 0 {
			t.Fatalf("message %s lost", id)
		}
	}
	st := p.Stats()
	t.Logf("3000 published: %d acked live, %d spooled, %d replayed; handler saw %d deliveries of %d distinct",
		st.Published, st.Spooled, st.Replayed, len(col.msgs), len(col.byID))
	if len(col.byID) != len(want) {
		t.Fatalf("%d distinct messages handled, %d published", len(col.byID), len(want))
	}
}

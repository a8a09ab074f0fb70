package ingest_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mamori-dev/mamori/internal/server/coverage"
	"github.com/mamori-dev/mamori/internal/server/ingest"
	"github.com/mamori-dev/mamori/internal/server/store"
	"github.com/mamori-dev/mamori/internal/server/store/storetest"
	"github.com/mamori-dev/mamori/internal/transport"
)

// TestTwoReplicasOverNATS runs the real path: agents' messages on an
// embedded NATS JetStream, two server replicas (each its own NATS
// connection, consumer, ingester and store pool) sharing one durable
// consumer and one PostgreSQL database. Messages are published twice with
// the same id (JetStream drops one), and a third of them re-sent with a new
// id (the store adds nothing). Each finding is stored once with exactly the
// count its agents reported, both replicas did part of the work, and
// forged messages are terminated and counted.
func TestTwoReplicasOverNATS(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	emb, js := startStream(t, quiet)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	dsn := storetest.PostgresDSN(t)
	type replica struct {
		st store.Store
		tm *transport.Metrics
		im *ingest.Metrics
	}
	var reps []replica
	var wg sync.WaitGroup
	for i := range 2 {
		st, err := store.Open(ctx, dsn, store.Options{Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		r := replica{st: st, tm: transport.NewMetrics(nil), im: ingest.NewMetrics(nil)}
		in := newIngester(t, st, ingest.Config{Metrics: r.im, Logger: quiet})
		nc, err := emb.ConnectInProcess("replica")
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		rjs, _ := jetstream.New(nc)
		cons, err := transport.NewConsumer(ctx, rjs, transport.ConsumerConfig{Handler: in.Handle, Metrics: r.tm,
			Logger: quiet, Concurrency: 8})
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			if err := cons.Run(ctx); err != nil {
				t.Errorf("replica %d: %v", i, err)
			}
		})
		reps = append(reps, r)
	}
	defer func() { cancel(); wg.Wait() }()

	s := agentStream(t, 9, 3, 30, 2, 5)
	rng := rand.New(rand.NewPCG(5, 6))
	publish := func(node string, kind transport.Kind, payload []byte, msgID string) {
		publishAs(t, js, node, kind, payload, msgID)
	}
	resent := 0
	for _, msg := range s.Msgs {
		id := transport.NewMsgID()
		publish(msg.NodeID, transport.KindFinding, msg.Payload, id)
		publish(msg.NodeID, transport.KindFinding, msg.Payload, id) // JetStream de-duplicates
		if rng.IntN(3) == 0 {
			publish(msg.NodeID, transport.KindFinding, msg.Payload, transport.NewMsgID())
			resent++
		}
	}
	// Forgeries: a finding of another node on node-0's subject, and garbage.
	publish("node-0", transport.KindFinding, mustJSON(t, validFinding("node-1")), transport.NewMsgID())
	publish("node-0", transport.KindFinding, []byte(`{"id":"x"}`), transport.NewMsgID())

	deadline := time.Now().Add(60 * time.Second)
	want := len(s.Msgs) + resent + 2
	for {
		handled := 0.0
		for _, r := range reps {
			handled += testutil.ToFloat64(r.tm.Consumed.WithLabelValues("finding")) + testutil.ToFloat64(r.tm.Rejected.WithLabelValues("handler"))
		}
		if int(handled) >= want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("handled %v of %d messages in time", handled, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
	checkCounts(t, reps[0].st, s.Want)
	var rejected, unchanged float64
	for i, r := range reps {
		c := testutil.ToFloat64(r.tm.Consumed.WithLabelValues("finding"))
		if c == 0 {
			t.Errorf("replica %d handled nothing: the work was not shared", i)
		}
		rejected += testutil.ToFloat64(r.tm.Rejected.WithLabelValues("handler"))
		unchanged += testutil.ToFloat64(r.im.Messages.WithLabelValues("finding", "unchanged"))
		t.Logf("replica %d: %v findings handled", i, c)
	}
	if rejected != 2 {
		t.Errorf("%v forged messages terminated, want 2", rejected)
	}
	if unchanged < float64(resent) {
		t.Errorf("%v re-sent states reported unchanged, want at least %d", unchanged, resent)
	}
}

// publishAs publishes payload on node's subject as that node's agent would,
// with Nats-Msg-Id node:msgID.
func publishAs(t testing.TB, js jetstream.JetStream, node string, kind transport.Kind, payload []byte, msgID string) {
	t.Helper()
	env := &transport.Envelope{V: transport.EnvelopeVersion, Kind: kind, NodeID: node, MsgID: msgID,
		SentAt: time.Now().UTC(), Payload: payload}
	data, err := env.Encode()
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg(transport.SubjectFor(node, kind))
	m.Data = data
	m.Header.Set(jetstream.MsgIDHeader, node+":"+msgID)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
}

// TestDatabaseOutageLosesNothing stops PostgreSQL under a running server
// (its own NATS consumer and ingester) while agents keep publishing: the
// messages wait in the stream — retried for as long as the outage lasts,
// never given up after MaxDeliver deliveries, which the consumer here sets
// to three — and once the database is back every finding is stored with
// exactly the count its agents reported.
func TestDatabaseOutageLosesNothing(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	_, js := startStream(t, quiet)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pg := storetest.PrivatePostgres(t)
	st, err := store.Open(ctx, pg.DSN(), store.Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	in := newIngester(t, st, ingest.Config{Logger: quiet})
	tm := transport.NewMetrics(nil)
	cons, err := transport.NewConsumer(ctx, js, transport.ConsumerConfig{Handler: in.Handle, Metrics: tm, Logger: quiet,
		Concurrency: 8, MaxDeliver: 3, BackoffBase: 100 * time.Millisecond, BackoffMax: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { _ = cons.Run(ctx) })
	defer func() { cancel(); wg.Wait() }()

	s := agentStream(t, 21, 3, 10, 2, 3)
	consumed := func() int { return int(testutil.ToFloat64(tm.Consumed.WithLabelValues("finding"))) }
	waitConsumed := func(n int, within time.Duration) {
		t.Helper()
		for deadline := time.Now().Add(within); consumed() < n; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d messages stored in time (dead-lettered %v)", consumed(), n, testutil.ToFloat64(tm.DeadLettered))
			}
		}
	}
	half := len(s.Msgs) / 2
	for _, m := range s.Msgs[:half] {
		publishAs(t, js, m.NodeID, transport.KindFinding, m.Payload, transport.NewMsgID())
	}
	waitConsumed(half, 30*time.Second)

	pg.Stop()
	for _, m := range s.Msgs[half:] {
		publishAs(t, js, m.NodeID, transport.KindFinding, m.Payload, transport.NewMsgID())
	}
	// Long enough for three deliveries of every message at the consumer's
	// backoff (0.1 + 0.2 + 0.4 s): with a delivery limit they would be gone.
	time.Sleep(5 * time.Second)
	if testutil.ToFloat64(tm.HandlerErrors) == 0 {
		t.Fatal("no handler failed with the database down: the outage was not exercised")
	}
	if n := consumed(); n != half {
		t.Fatalf("%d messages acknowledged with the database down", n-half)
	}
	// Coverage names this outage as why nodes are silent meanwhile.
	if since, until := cons.Outage(); since.IsZero() || !until.IsZero() {
		t.Fatalf("the consumer's view of the outage: %v – %v, want begun and lasting", since, until)
	}

	pg.Start()
	waitConsumed(len(s.Msgs), 90*time.Second)
	if d := testutil.ToFloat64(tm.DeadLettered); d != 0 {
		t.Fatalf("%v messages given up during the outage", d)
	}
	if _, until := cons.Outage(); until.IsZero() {
		t.Fatal("the outage did not end when the database came back")
	}
	t.Logf("outage: %v handler failures, all %d messages stored after it", testutil.ToFloat64(tm.HandlerErrors), len(s.Msgs))
	checkCounts(t, st, s.Want)
}

// startStream starts an embedded NATS server with the MAMORI stream and
// returns it with a JetStream handle over an in-process connection; both
// end with the test.
func startStream(t testing.TB, log *slog.Logger) (*transport.Embedded, jetstream.JetStream) {
	t.Helper()
	emb, err := transport.StartEmbedded(transport.EmbeddedConfig{DataDir: t.TempDir(), Port: -1, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Shutdown)
	nc, err := emb.ConnectInProcess("server")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := transport.EnsureStream(ctx, js, transport.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	return emb, js
}

// TestClockAheadCannotReviveARemovedNode: a heartbeat an agent queued
// before its node was removed, stamped by a clock running two minutes
// ahead (inside what ingest accepts), is judged by when the stream took it,
// not by the agent's stamp: it does not bring the removed node's coverage
// back. One taken after the removal (the node enrolled again) does.
func TestClockAheadCannotReviveARemovedNode(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	_, js := startStream(t, quiet)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := storetest.Open(t, store.EngineSQLite, store.Options{})
	cov, err := coverage.New(coverage.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	beat := func(node string) {
		hb := coverage.Heartbeat{NodeID: node, Cluster: "prod", AgentVersion: "1", BTF: true,
			Time: time.Now().UTC().Add(2 * time.Minute)}
		publishAs(t, js, node, transport.KindHeartbeat, mustJSON(t, hb), transport.NewMsgID())
	}
	beat("n1")
	if err := st.DeleteNode(ctx, "n1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("remove n1: %v", err)
	}
	time.Sleep(10 * time.Millisecond) // the removal's stamp and the next message's differ
	beat("n2")
	tm := transport.NewMetrics(nil)
	in := newIngester(t, st, ingest.Config{Coverage: cov, Logger: quiet})
	cons, err := transport.NewConsumer(ctx, js, transport.ConsumerConfig{Handler: in.Handle, Metrics: tm, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cons.Run(ctx) }()
	defer func() { cancel(); <-done }()
	for deadline := time.Now().Add(30 * time.Second); testutil.ToFloat64(tm.Consumed.WithLabelValues("heartbeat")) < 2; {
		if time.Now().After(deadline) {
			t.Fatalf("heartbeats consumed: %v of 2", testutil.ToFloat64(tm.Consumed.WithLabelValues("heartbeat")))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n, err := st.GetNode(ctx, "n1"); err == nil {
		t.Errorf("a heartbeat queued before the removal, stamped ahead, brought the node back: %s", n.Status)
	}
	if _, err := st.GetNode(ctx, "n2"); err != nil {
		t.Errorf("a heartbeat of a node never removed: %v", err)
	}
}

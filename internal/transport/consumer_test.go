package transport

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// rawPublish stores data on subject with the given dedup header, using the
// server's unrestricted connection: this is how hostile bytes would look if
// they got past the NATS permissions (or came from a misbehaving agent on
// its own subject).
func (b *testBus) rawPublish(subject, dedup string, data []byte) {
	b.t.Helper()
	msg := nats.NewMsg(subject)
	msg.Data = data
	if dedup != "" {
		msg.Header.Set(jetstream.MsgIDHeader, dedup)
	}
	if _, err := b.js.PublishMsg(context.Background(), msg); err != nil {
		b.t.Fatalf("raw publish on %s: %v", subject, err)
	}
}

func envWith(t *testing.T, nodeID string, kind Kind, mut func(*Envelope)) (*Envelope, []byte) {
	t.Helper()
	env, err := NewEnvelope(nodeID, kind, map[string]string{"type": "X"})
	if err != nil {
		t.Fatal(err)
	}
	if mut != nil {
		mut(env)
	}
	data, err := jsonMarshal(env)
	if err != nil {
		t.Fatal(err)
	}
	return env, data
}

func TestConsumerRejectsHostileMessages(t *testing.T) {
	b := startBus(t, t.TempDir(), -1)
	var handled atomic.Int32
	b.runConsumer(ConsumerConfig{MaxEnvelopeBytes: 2048, Handler: func(_ context.Context, m *Message) error {
		handled.Add(1)
		return nil
	}})
	subj := SubjectFor("n1", KindFinding)
	type hostile struct {
		reason  string
		subject string
		dedup   string
		data    []byte
	}
	var cases []hostile
	add := func(reason string, mut func(*Envelope), subject string, dedup func(*Envelope) string) {
		env, data := envWith(t, "n1", KindFinding, mut)
		if subject == "" {
			subject = subj
		}
		d := msgIDHeader(env.NodeID, env.MsgID)
		if dedup != nil {
			d = dedup(env)
		}
		cases = append(cases, hostile{reason, subject, d, data})
	}
	cases = append(cases,
		hostile{ReasonMalformed, subj, "n1:garbage0000000000", []byte(`{"v":1,"kind":`)},
		hostile{ReasonMalformed, subj, "n1:binary00000000000", []byte{0xff, 0x00, 0x13}},
		hostile{ReasonOversized, subj, "n1:big00000000000000", []byte(`{"pad":"` + strings.Repeat("a", 3000) + `"}`)})
	add(ReasonNodeMismatch, func(e *Envelope) { e.NodeID = "n2" }, "", func(e *Envelope) string { return msgIDHeader("n1", e.MsgID) })
	add(ReasonKindMismatch, func(e *Envelope) { e.Kind = KindHeartbeat }, "", nil)
	add(ReasonHeader, nil, "", func(e *Envelope) string { return "n1:someone-elses-id" })
	add(ReasonHeader, nil, "", func(e *Envelope) string { return "" })
	add(ReasonStale, func(e *Envelope) { e.SentAt = time.Now().Add(-30 * 24 * time.Hour) }, "", nil)
	add(ReasonFuture, func(e *Envelope) { e.SentAt = time.Now().Add(time.Hour) }, "", nil)
	add(ReasonVersion, func(e *Envelope) { e.V = 2 }, "", nil)
	add(ReasonNodeID, func(e *Envelope) { e.NodeID = "n1.x" }, "", nil)

	for _, c := range cases {
		b.rawPublish(c.subject, c.dedup, c.data)
	}
	// One good message after the hostile ones.
	good, data := envWith(t, "n1", KindFinding, nil)
	b.rawPublish(subj, msgIDHeader("n1", good.MsgID), data)

	want := map[string]float64{}
	for _, c := range cases {
		want[c.reason]++
	}
	waitFor(t, "all messages processed", 10*time.Second, func() bool {
		var n float64
		for r := range want {
			n += testutil.ToFloat64(b.metrics.Rejected.WithLabelValues(r))
		}
		return n == float64(len(cases)) && handled.Load() == 1
	})
	for r, n := range want {
		if got := testutil.ToFloat64(b.metrics.Rejected.WithLabelValues(r)); got != n {
			t.Errorf("rejected{%s} = %v, want %v", r, got, n)
		}
	}
	// Rejected messages are terminated, not redelivered: the stream drains.
	st, _ := b.js.Stream(context.Background(), StreamName)
	waitFor(t, "stream empty", 5*time.Second, func() bool {
		info, err := st.Info(context.Background())
		return err == nil && info.State.Msgs == 0
	})
	if handled.Load() != 1 {
		t.Fatalf("handler ran %d times, want 1 (the good message only)", handled.Load())
	}

	// Subjects outside the agents' three never reach the stream.
	msg := nats.NewMsg("mamori.agent.n1.secrets")
	msg.Data = data
	if _, err := b.js.PublishMsg(context.Background(), msg); !errors.Is(err, jetstream.ErrNoStreamResponse) {
		t.Fatalf("publish on a foreign subject: %v, want no stream", err)
	}
}

// Past JetStream's de-duplication window, a replayed message is still caught
// by the consumer's memory of what it handled.
func TestConsumerRejectsReplayBeyondDedupWindow(t *testing.T) {
	b := startBus(t, t.TempDir(), -1)
	ctx := context.Background()
	if _, err := EnsureStream(ctx, b.js, StreamOptions{Duplicates: 100 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	col := newCollector()
	b.runConsumer(ConsumerConfig{Handler: col.handle})
	env, data := envWith(t, "n1", KindHeartbeat, nil)
	subj := SubjectFor("n1", KindHeartbeat)
	b.rawPublish(subj, msgIDHeader("n1", env.MsgID), data)
	waitFor(t, "first copy handled", 5*time.Second, func() bool { return col.count() == 1 })
	time.Sleep(300 * time.Millisecond) // past the window
	b.rawPublish(subj, msgIDHeader("n1", env.MsgID), data)
	waitFor(t, "replay rejected", 5*time.Second, func() bool {
		return testutil.ToFloat64(b.metrics.Rejected.WithLabelValues(ReasonReplay)) == 1
	})
	if col.count() != 1 {
		t.Fatalf("replayed message handled again")
	}
}

// A failing handler gets the message again, later; a permanent failure is
// terminated and counted; a handler failing every time is given up on after
// MaxDeliver.
func TestConsumerRetriesAndGivesUp(t *testing.T) {
	b := startBus(t, t.TempDir(), -1)
	var mu sync.Mutex
	var calls = map[string]int{}
	var times = map[string][]time.Time{}
	handler := func(_ context.Context, m *Message) error {
		p := struct{ Mode string }{modeOf(m)}
		mu.Lock()
		defer mu.Unlock()
		calls[p.Mode]++
		times[p.Mode] = append(times[p.Mode], time.Now())
		switch {
		case p.Mode == "flaky" && calls[p.Mode] < 3:
			return errors.New("database busy")
		case p.Mode == "poison":
			return Permanent(errors.New("not a finding"))
		case p.Mode == "broken":
			return errors.New("always fails")
		}
		return nil
	}
	b.runConsumer(ConsumerConfig{Handler: handler, Concurrency: 1, MaxDeliver: 4,
		BackoffBase: 100 * time.Millisecond, BackoffMax: 200 * time.Millisecond})
	for _, mode := range []string{"flaky", "poison", "broken"} {
		env, err := NewEnvelope("n1", KindFinding, map[string]string{"mode": mode})
		if err != nil {
			t.Fatal(err)
		}
		data, _ := env.Encode()
		b.rawPublish(SubjectFor("n1", KindFinding), msgIDHeader("n1", env.MsgID), data)
	}
	waitFor(t, "flaky handled, poison rejected, broken dead-lettered", 10*time.Second, func() bool {
		return testutil.ToFloat64(b.metrics.Consumed.WithLabelValues("finding")) == 1 &&
			testutil.ToFloat64(b.metrics.Rejected.WithLabelValues("handler")) == 1 &&
			testutil.ToFloat64(b.metrics.DeadLettered) == 1
	})
	time.Sleep(300 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if calls["flaky"] != 3 || calls["poison"] != 1 || calls["broken"] != 4 {
		t.Fatalf("handler calls %v, want flaky 3, poison 1, broken 4", calls)
	}
	// Retries wait: the nak delay doubles from BackoffBase up to BackoffMax.
	ft := times["flaky"]
	if d := ft[1].Sub(ft[0]); d < 90*time.Millisecond {
		t.Fatalf("first retry after %v, want >= 100ms", d)
	}
	if d := ft[2].Sub(ft[1]); d < 190*time.Millisecond {
		t.Fatalf("second retry after %v, want >= 200ms", d)
	}
	if got := testutil.ToFloat64(b.metrics.HandlerErrors); got != 2+3 {
		t.Fatalf("handler_errors_total = %v, want 5 (flaky 2, broken 3)", got)
	}
}

// Two consumers with the same durable name (two server replicas) split the
// work: each message is handled by exactly one.
func TestConsumerReplicasShareWork(t *testing.T) {
	b := startBus(t, t.TempDir(), -1)
	c1, c2 := newCollector(), newCollector()
	b.runConsumer(ConsumerConfig{Handler: c1.handle})
	// The second replica has its own connection, as another process would.
	nc2, err := b.emb.ConnectInProcess("replica-2")
	if err != nil {
		t.Fatal(err)
	}
	defer nc2.Close()
	js2, _ := jetstream.New(nc2)
	ctx, cancel := context.WithCancel(context.Background())
	cons2, err := NewConsumer(ctx, js2, ConsumerConfig{Handler: c2.handle, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cons2.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	const n = 400
	for i := range n {
		env, _ := NewEnvelope("n1", KindEvent, map[string]int{"i": i})
		data, _ := env.Encode()
		b.rawPublish(SubjectFor("n1", KindEvent), msgIDHeader("n1", env.MsgID), data)
	}
	waitFor(t, "all handled", 10*time.Second, func() bool { return c1.count()+c2.count() == n })
	time.Sleep(200 * time.Millisecond)
	t.Logf("replica 1 handled %d, replica 2 handled %d", c1.count(), c2.count())
	if c1.count()+c2.count() != n || c1.count() == 0 || c2.count() == 0 {
		t.Fatalf("split %d + %d of %d", c1.count(), c2.count(), n)
	}
	for id := range c1.byID {
		if c2.byID[id] > 0 {
			t.Fatalf("message %s handled by both replicas", id)
		}
	}
}

func TestIsPermanent(t *testing.T) {
	base := errors.New("bad finding")
	if !IsPermanent(Permanent(base)) || !IsPermanent(fmt.Errorf("ctx: %w", Permanent(base))) || IsPermanent(base) {
		t.Fatal("IsPermanent misclassifies")
	}
	if !errors.Is(Permanent(base), base) {
		t.Fatal("Permanent hides the cause")
	}
}

// While the handler reports the server unavailable (its database down), a
// message is retried for as long as that lasts, however many deliveries it
// takes, and its own failures are counted from zero afterwards. A message
// claiming an outage while others succeed is given up on like any other.
func TestConsumerOutageDoesNotUseUpRetries(t *testing.T) {
	b := startBus(t, t.TempDir(), -1)
	var down atomic.Bool
	down.Store(true)
	var mu sync.Mutex
	calls := map[string]int{}
	patientDone := false
	handler := func(_ context.Context, m *Message) error {
		p := struct{ Mode string }{modeOf(m)}
		mu.Lock()
		defer mu.Unlock()
		calls[p.Mode]++
		switch {
		case p.Mode == "liar":
			return Unavailable(errors.New("claims the database is down"))
		case down.Load():
			return Unavailable(errors.New("database down"))
		case p.Mode == "patient" && !patientDone && calls["patient-after"] == 0:
			calls["patient-after"]++
			return errors.New("one failure of its own")
		case p.Mode == "patient":
			patientDone = true
		}
		return nil
	}
	cons := b.runConsumer(ConsumerConfig{Handler: handler, Concurrency: 2, MaxDeliver: 3,
		BackoffBase: 20 * time.Millisecond, BackoffMax: 50 * time.Millisecond})
	publish := func(mode string) {
		env, err := NewEnvelope("n1", KindFinding, map[string]string{"mode": mode})
		if err != nil {
			t.Fatal(err)
		}
		data, _ := env.Encode()
		b.rawPublish(SubjectFor("n1", KindFinding), msgIDHeader("n1", env.MsgID), data)
	}
	publish("patient")
	waitFor(t, "the message delivered more than MaxDeliver times during the outage", 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return calls["patient"] > 6
	})
	if since, until := cons.Outage(); since.IsZero() || !until.IsZero() {
		t.Fatalf("outage as the consumer sees it: %v – %v, want begun and lasting", since, until)
	}
	if d := testutil.ToFloat64(b.metrics.DeadLettered); d != 0 {
		t.Fatalf("%v messages given up during the outage", d)
	}

	down.Store(false)
	publish("liar")
	stop := make(chan struct{})
	go func() { // other messages succeed meanwhile
		for {
			select {
			case <-stop:
				return
			case <-time.After(30 * time.Millisecond):
				publish("ok")
			}
		}
	}()
	defer close(stop)
	waitFor(t, "the patient message handled and the liar given up on", 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return patientDone && testutil.ToFloat64(b.metrics.DeadLettered) == 1
	})
	mu.Lock()
	defer mu.Unlock()
	if calls["liar"] > 3+3 {
		t.Fatalf("the liar was tried %d times with other messages succeeding; MaxDeliver is 3", calls["liar"])
	}
	if _, until := cons.Outage(); until.IsZero() {
		t.Fatal("the outage did not end with the first success")
	}
}

// modeOf reads the "mode" a test message carries.
func modeOf(m *Message) string {
	var p struct{ Mode string }
	_ = jsonUnmarshal(m.Envelope.Payload, &p)
	return p.Mode
}

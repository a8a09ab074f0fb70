package transport

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestStreamCollectorShowsFillAndBacklog(t *testing.T) {
	b := startBus(t, t.TempDir(), -1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := NewConsumer(ctx, b.js, ConsumerConfig{Handler: func(context.Context, *Message) error { return nil }}); err != nil {
		t.Fatal(err)
	}
	for i := range 25 {
		msg := nats.NewMsg(SubjectFor("node-a", KindEvent))
		msg.Data = []byte(`{"x":1}`)
		msg.Header.Set("Nats-Msg-Id", fmt.Sprintf("m%d", i))
		if _, err := b.js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewStreamCollector(b.js, "", quietLogger()))
	gather := func() map[string]float64 {
		got := map[string]float64{}
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			got[mf.GetName()] = mf.GetMetric()[0].GetGauge().GetValue()
		}
		return got
	}
	// JetStream tells its consumers of new messages asynchronously, so the
	// backlog may lag the publishes' acks for a moment on a busy machine.
	var got map[string]float64
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		got = gather()
		if got["mamori_transport_stream_backlog_messages"] == 25 || time.Now().After(deadline) {
			break
		}
	}
	if got["mamori_transport_stream_messages"] != 25 || got["mamori_transport_stream_backlog_messages"] != 25 ||
		got["mamori_transport_stream_max_bytes"] != DefaultStreamMaxBytes || got["mamori_transport_stream_bytes"] <= 25*7 {
		t.Fatalf("stream gauges %v: want 25 messages, 25 pending, bound %d", got, DefaultStreamMaxBytes)
	}
	if n := testutil.CollectAndCount(NewStreamCollector(b.js, "no-such-consumer", quietLogger())); n != 3 {
		t.Fatalf("without the consumer: %d gauges, want the stream's 3", n)
	}
}

func TestReadStreamStateSeesFillAndBacklog(t *testing.T) {
	b := startBus(t, t.TempDir(), -1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := NewConsumer(ctx, b.js, ConsumerConfig{Handler: func(context.Context, *Message) error { return nil }}); err != nil {
		t.Fatal(err)
	}
	st, err := ReadStreamState(ctx, b.js, "")
	if err != nil || st.Messages != 0 || st.Pending != 0 || !st.OldestPending.IsZero() || st.Bytes != 0 {
		t.Fatalf("empty stream: %+v %v", st, err)
	}
	if _, err := EnsureStream(ctx, b.js, StreamOptions{Duplicates: time.Hour, MaxBytes: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	pad := make([]byte, 8000)
	var sentAt []time.Time
	var refused error
	for i := 0; refused == nil && i < 1000; i++ {
		msg := nats.NewMsg(SubjectFor("node-a", KindEvent))
		msg.Data = pad
		msg.Header.Set("Nats-Msg-Id", fmt.Sprintf("m%d", i))
		sentAt = append(sentAt, time.Now())
		_, refused = b.js.PublishMsg(ctx, msg)
		time.Sleep(time.Millisecond)
	}
	if refused == nil {
		t.Fatal("a 1 MiB stream took 8 MB")
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if st, err = ReadStreamState(ctx, b.js, ""); err != nil {
			t.Fatal(err)
		}
		if st.Pending == st.Messages || time.Now().After(deadline) {
			break // the consumer learns of new messages asynchronously
		}
	}
	if st.Bytes < uint64(st.MaxBytes)*9/10 || st.Pending != st.Messages || st.Pending < 100 ||
		st.OldestPending.Before(sentAt[0].Add(-time.Second)) || st.OldestPending.After(sentAt[1]) {
		t.Fatalf("full stream read as %+v, first message sent at %v", st, sentAt[0])
	}
	// Hand 20 messages to the server (and leave them unacknowledged): the
	// backlog is what waits behind them.
	cons, err := b.js.Consumer(ctx, StreamName, DefaultDurable)
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(20, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for range batch.Messages() {
		got++
	}
	if st, err = ReadStreamState(ctx, b.js, ""); err != nil {
		t.Fatal(err)
	}
	if got != 20 || st.Pending != st.Messages-20 || st.OldestPending.Before(sentAt[19]) || st.OldestPending.After(sentAt[21]) {
		t.Fatalf("after delivering %d: %+v, the 21st message was sent at %v", got, st, sentAt[20])
	}
}

package transport

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
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
	got := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		got[mf.GetName()] = mf.GetMetric()[0].GetGauge().GetValue()
	}
	if got["mamori_transport_stream_messages"] != 25 || got["mamori_transport_stream_backlog_messages"] != 25 ||
		got["mamori_transport_stream_max_bytes"] != DefaultStreamMaxBytes || got["mamori_transport_stream_bytes"] <= 25*7 {
		t.Fatalf("stream gauges %v: want 25 messages, 25 pending, bound %d", got, DefaultStreamMaxBytes)
	}
	if n := testutil.CollectAndCount(NewStreamCollector(b.js, "no-such-consumer", quietLogger())); n != 3 {
		t.Fatalf("without the consumer: %d gauges, want the stream's 3", n)
	}
}

func TestReadStreamStateSeesAFullStream(t *testing.T) {
	b := startBus(t, t.TempDir(), -1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := ReadStreamState(ctx, b.js)
	if err != nil || st.Messages != 0 || !st.Oldest.IsZero() || st.Full() {
		t.Fatalf("empty stream: %+v %v", st, err)
	}
	if _, err := EnsureStream(ctx, b.js, StreamOptions{Duplicates: time.Hour, MaxBytes: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	pad := make([]byte, 8000)
	var refused error
	for i := 0; refused == nil && i < 1000; i++ {
		msg := nats.NewMsg(SubjectFor("node-a", KindEvent))
		msg.Data = pad
		msg.Header.Set("Nats-Msg-Id", fmt.Sprintf("m%d", i))
		_, refused = b.js.PublishMsg(ctx, msg)
	}
	if refused == nil {
		t.Fatal("a 1 MiB stream took 8 MB")
	}
	if st, err = ReadStreamState(ctx, b.js); err != nil {
		t.Fatal(err)
	}
	if !st.Full() || st.Messages < 100 || st.Oldest.Before(before.Add(-time.Second)) || st.Oldest.After(time.Now()) {
		t.Fatalf("full stream read as %+v (full %v)", st, st.Full())
	}
}

package transport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// StreamState is the MAMORI stream's fill and the server consumer's
// backlog. With work-queue retention the stream holds exactly the agent
// messages received and not yet acknowledged by a server replica; Pending of
// those have not even been handed to one yet.
type StreamState struct {
	Messages      uint64
	Bytes         uint64
	MaxBytes      int64
	Pending       uint64    // not yet delivered to a server replica
	OldestPending time.Time // when the first of them was received; zero when none
}

// ReadStreamState asks JetStream for the MAMORI stream's fill and the
// backlog of the durable consumer (DefaultDurable when empty): three
// requests.
func ReadStreamState(ctx context.Context, js jetstream.JetStream, durable string) (StreamState, error) {
	if durable == "" {
		durable = DefaultDurable
	}
	st, err := js.Stream(ctx, StreamName)
	if err != nil {
		return StreamState{}, fmt.Errorf("stream %s: %w", StreamName, err)
	}
	info := st.CachedInfo() // looking the stream up fetched it
	out := StreamState{Messages: info.State.Msgs, Bytes: info.State.Bytes, MaxBytes: info.Config.MaxBytes}
	cons, err := st.Consumer(ctx, durable)
	if err != nil {
		return StreamState{}, fmt.Errorf("consumer %s: %w", durable, err)
	}
	ci := cons.CachedInfo()
	if out.Pending = ci.NumPending; out.Pending == 0 {
		return out, nil
	}
	// The first message not yet delivered: a message redelivered with
	// backoff sits earlier in the stream, but it is not work waiting. Asked
	// as "the first at or after": the server may take, handle and delete
	// that very message between the two requests.
	seq := max(ci.Delivered.Stream+1, info.State.FirstSeq)
	msg, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(">"))
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		out.Pending = 0 // drained meanwhile
	case err != nil:
		return StreamState{}, fmt.Errorf("stream %s message %d: %w", StreamName, seq, err)
	default:
		out.OldestPending = msg.Time
	}
	return out, nil
}

// StreamCollector serves the MAMORI stream's fill and the server consumer's
// backlog as Prometheus gauges, read from JetStream at scrape time. The
// stream is the fleet's shared bounded queue: when it is full agents back
// off into their spools, so its fill is what says why findings are late.
type StreamCollector struct {
	js      jetstream.JetStream
	durable string
	log     *slog.Logger

	bytes, maxBytes, msgs, backlog, ackPending *prometheus.Desc
}

// NewStreamCollector reads the MAMORI stream and the durable consumer
// (DefaultDurable when empty) through js.
func NewStreamCollector(js jetstream.JetStream, durable string, log *slog.Logger) *StreamCollector {
	if durable == "" {
		durable = DefaultDurable
	}
	if log == nil {
		log = slog.Default()
	}
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("mamori_transport_stream_"+name, help, nil, nil)
	}
	return &StreamCollector{js: js, durable: durable, log: log,
		bytes:      d("bytes", "Bytes held in the agents' message stream."),
		maxBytes:   d("max_bytes", "The stream's bound (--stream-max-bytes); at it agents back off into their spools."),
		msgs:       d("messages", "Messages held in the agents' message stream."),
		backlog:    d("backlog_messages", "Messages in the stream not yet delivered to a server replica."),
		ackPending: d("ack_pending_messages", "Messages delivered to server replicas and not yet acknowledged."),
	}
}

// Describe implements prometheus.Collector.
func (c *StreamCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.bytes, c.maxBytes, c.msgs, c.backlog, c.ackPending} {
		ch <- d
	}
}

// Collect implements prometheus.Collector. A JetStream that does not answer
// within two seconds leaves the gauges out of this scrape (and logs why)
// rather than stalling it.
func (c *StreamCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := c.js.Stream(ctx, StreamName)
	if err != nil {
		c.log.Debug("transport: stream metrics unavailable", "err", err)
		return
	}
	info := st.CachedInfo() // looking the stream up fetched it
	ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(info.State.Bytes))
	ch <- prometheus.MustNewConstMetric(c.maxBytes, prometheus.GaugeValue, float64(info.Config.MaxBytes))
	ch <- prometheus.MustNewConstMetric(c.msgs, prometheus.GaugeValue, float64(info.State.Msgs))
	cons, err := st.Consumer(ctx, c.durable) // fetches the consumer's info too
	if err != nil {
		c.log.Debug("transport: consumer metrics unavailable", "err", err)
		return
	}
	ci := cons.CachedInfo()
	ch <- prometheus.MustNewConstMetric(c.backlog, prometheus.GaugeValue, float64(ci.NumPending))
	ch <- prometheus.MustNewConstMetric(c.ackPending, prometheus.GaugeValue, float64(ci.NumAckPending))
}

package transport

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the transport's Prometheus collectors. One Metrics is shared by
// every Publisher, Consumer and Enroller of a process; create it once with
// NewMetrics and pass it in. A nil *Metrics in a config means "private,
// unregistered collectors", which tests use.
type Metrics struct {
	Published     *prometheus.CounterVec // kind: acked by JetStream (live path)
	PublishErrors *prometheus.CounterVec // reason: a live publish failed and went to the spool (or was lost)
	SpoolBytes    prometheus.Gauge
	SpoolMessages prometheus.Gauge
	SpoolDropped  *prometheus.CounterVec // kind, reason: full | disk_full | write_error | corrupt | rejected
	SpoolWriteErr prometheus.Counter
	Replayed      *prometheus.CounterVec // kind: spooled messages acked after reconnect
	Consumed      *prometheus.CounterVec // kind: handled and acked by a server consumer
	HandlerErrors prometheus.Counter     // handler returned an error: message nak'ed for redelivery
	DeadLettered  prometheus.Counter     // handler kept failing until MaxDeliver: message terminated
	Rejected      *prometheus.CounterVec // reason: hostile or broken input refused on ingress
	Enrollments   *prometheus.CounterVec // result: ok | bad_request | bad_token | conflict | error
	PermissionErr prometheus.Counter     // the NATS server refused one of our publishes or subscriptions
	StoreFree     prometheus.Gauge       // free bytes under the embedded JetStream store (DiskGuard)
	IntakePaused  prometheus.Gauge       // 1 while the server refuses agent messages for its disk (DiskGuard)
	StoreRestarts prometheus.Counter     // JetStream restarts after a failed store write (DiskGuard)
}

// NewMetrics creates the collectors and registers them with reg (skipped when reg is nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	const ns, sub = "mamori", "transport"
	m := &Metrics{
		Published: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "published_total", Help: "Messages acknowledged by JetStream on first publish, by kind."}, []string{"kind"}),
		PublishErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "publish_errors_total", Help: "Live publishes that failed or were held back while backing off (reason backoff), then spooled, by reason."}, []string{"reason"}),
		SpoolBytes: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "spool_bytes", Help: "Bytes held in the on-disk spool."}),
		SpoolMessages: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "spool_messages", Help: "Messages held in the on-disk spool."}),
		SpoolDropped: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "spool_dropped_total", Help: "Messages lost by the spool, by kind and reason."}, []string{"kind", "reason"}),
		SpoolWriteErr: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "spool_write_errors_total", Help: "Spool writes that failed (disk full, I/O error)."}),
		Replayed: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "replayed_total", Help: "Spooled messages acknowledged after replay, by kind."}, []string{"kind"}),
		Consumed: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "consumed_total", Help: "Messages handled and acknowledged by the server, by kind."}, []string{"kind"}),
		HandlerErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "handler_errors_total", Help: "Ingest handler failures (message redelivered later)."}),
		DeadLettered: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "dead_lettered_total", Help: "Messages given up on after the maximum number of deliveries."}),
		Rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "rejected_total", Help: "Incoming messages refused, by reason."}, []string{"reason"}),
		Enrollments: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "enrollments_total", Help: "Agent enrollment attempts, by result."}, []string{"result"}),
		PermissionErr: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "permission_errors_total", Help: "Publishes or subscriptions refused by the NATS server."}),
		StoreFree: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "store_free_bytes", Help: "Free bytes on the disk under the embedded JetStream store."}),
		IntakePaused: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "intake_paused", Help: "1 while the server refuses agent messages because its store's disk is low or its store failed to write."}),
		StoreRestarts: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "store_restarts_total", Help: "JetStream restarts after a store write failed (disk full)."}),
	}
	if reg != nil {
		reg.MustRegister(m.Published, m.PublishErrors, m.SpoolBytes, m.SpoolMessages, m.SpoolDropped,
			m.SpoolWriteErr, m.Replayed, m.Consumed, m.HandlerErrors, m.DeadLettered, m.Rejected,
			m.Enrollments, m.PermissionErr, m.StoreFree, m.IntakePaused, m.StoreRestarts)
	}
	return m
}

func orNewMetrics(m *Metrics) *Metrics {
	if m == nil {
		return NewMetrics(nil)
	}
	return m
}

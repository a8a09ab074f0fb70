package coverage

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the coverage collectors; one per process (NewMetrics), nil
// in a Config means private ones.
type Metrics struct {
	Heartbeats        *prometheus.CounterVec // result: ok | error
	Transitions       *prometheus.CounterVec // to: Healthy | Unhealthy
	Nodes             *prometheus.GaugeVec   // status, as of the last sweep
	SubscriberDropped prometheus.Counter
	HeartbeatBatch    prometheus.Histogram // heartbeats per store transaction
	HooksUnknown      prometheus.Counter   // digest-only heartbeats whose list was not known
}

// NewMetrics creates the collectors and registers them with reg (skipped when nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	const ns, sub = "mamori", "coverage"
	m := &Metrics{
		Heartbeats: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "heartbeats_total", Help: "Heartbeats folded into coverage, by result."}, []string{"result"}),
		Transitions: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "transitions_total", Help: "Node status changes logged by this replica, by new status."}, []string{"to"}),
		Nodes: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "nodes", Help: "Nodes by coverage status at the last sweep."}, []string{"status"}),
		SubscriberDropped: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "subscriber_dropped_total", Help: "Transitions a slow subscriber did not receive."}),
		HeartbeatBatch: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub,
			Name: "heartbeat_batch", Help: "Heartbeats committed per store transaction.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10)}),
		HooksUnknown: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "heartbeat_hooks_unknown_total", Help: "Heartbeats carrying only a hook-list digest this replica did not know (the last stored list stood in until the agent's next full list)."}),
	}
	if reg != nil {
		reg.MustRegister(m.Heartbeats, m.Transitions, m.Nodes, m.SubscriberDropped, m.HeartbeatBatch, m.HooksUnknown)
	}
	return m
}

package ingest

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the ingest collectors; one per process (NewMetrics), nil in
// a Config means private ones.
type Metrics struct {
	Messages   *prometheus.CounterVec   // kind, outcome
	Rejected   *prometheus.CounterVec   // kind, reason
	Duration   *prometheus.HistogramVec // kind: time to apply (including waiting for the batch)
	Lag        *prometheus.HistogramVec // kind: agent send to applied
	Batch      prometheus.Histogram     // findings per store transaction
	Suppressed prometheus.Counter

	logMu   sync.Mutex
	lastLog map[string]time.Time
}

// NewMetrics creates the collectors and registers them with reg (skipped when nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	const ns, sub = "mamori", "ingest"
	m := &Metrics{
		Messages: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "messages_total", Help: "Agent messages applied, by kind and outcome (created, updated, unchanged, duplicate, ok, ignored, rejected, error)."},
			[]string{"kind", "outcome"}),
		Rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "rejected_total", Help: "Agent messages refused, by kind and reason."}, []string{"kind", "reason"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub,
			Name: "apply_seconds", Help: "Time to apply one message, including waiting for its batch.",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2.5, 12)}, []string{"kind"}),
		Lag: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub,
			Name: "lag_seconds", Help: "From the agent sending a message to its effect being stored.",
			// Fine around the 250 ms objective, coarse beyond it.
			Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5, 10, 30, 60, 120, 300}},
			[]string{"kind"}),
		Batch: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub,
			Name: "batch_findings", Help: "Findings committed per store transaction.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10)}),
		Suppressed: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "suppressed_total", Help: "Findings stored archived by a suppression rule."}),
		lastLog: map[string]time.Time{},
	}
	if reg != nil {
		reg.MustRegister(m.Messages, m.Rejected, m.Duration, m.Lag, m.Batch, m.Suppressed)
	}
	return m
}

func (m *Metrics) shouldLog(key string, now time.Time) bool {
	m.logMu.Lock()
	defer m.logMu.Unlock()
	if now.Sub(m.lastLog[key]) < time.Second {
		return false
	}
	if len(m.lastLog) > 1000 {
		clear(m.lastLog)
	}
	m.lastLog[key] = now
	return true
}

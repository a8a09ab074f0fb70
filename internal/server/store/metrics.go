package store

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the store's Prometheus collectors. Create one per process
// with NewMetrics and pass it in Options; nil means private, unregistered
// collectors (tests).
type Metrics struct {
	OpDuration *prometheus.HistogramVec // engine, op
	OpErrors   *prometheus.CounterVec   // engine, op
	Upserts    *prometheus.CounterVec   // engine, outcome
	Retries    *prometheus.CounterVec   // engine: transactions retried after a conflict
	Purged     *prometheus.CounterVec   // engine, what
}

// NewMetrics creates the collectors and registers them with reg (skipped
// when nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	const ns, sub = "mamori", "store"
	m := &Metrics{
		OpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub,
			Name: "operation_seconds", Help: "Store operation latency, by engine and operation.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 12)}, []string{"engine", "op"}),
		OpErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "errors_total", Help: "Store operations that failed, by engine and operation."}, []string{"engine", "op"}),
		Upserts: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "finding_upserts_total", Help: "Finding upserts, by engine and outcome."}, []string{"engine", "outcome"}),
		Retries: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "tx_retries_total", Help: "Transactions retried after losing a race (deadlock, serialisation, busy)."}, []string{"engine"}),
		Purged: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "purged_total", Help: "Rows deleted by retention, by engine and kind."}, []string{"engine", "what"}),
	}
	if reg != nil {
		reg.MustRegister(m.OpDuration, m.OpErrors, m.Upserts, m.Retries, m.Purged)
	}
	return m
}

// StatsCollector exports Store.Stats as gauges. Counting is done at most
// once per statsMaxAge, however often (and however many) scrapers ask: the
// counts cost index scans that grow with the store.
type StatsCollector struct {
	st Store

	mu   sync.Mutex
	at   time.Time
	last Stats
}

const statsMaxAge = 10 * time.Second

// NewStatsCollector returns a collector over st; register it once.
func NewStatsCollector(st Store) *StatsCollector { return &StatsCollector{st: st} }

func (c *StatsCollector) stats() (Stats, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.at.IsZero() && time.Since(c.at) < statsMaxAge {
		return c.last, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := c.st.Stats(ctx)
	if err != nil {
		return st, err
	}
	c.at, c.last = time.Now(), st
	return st, nil
}

var descStored = prometheus.NewDesc("mamori_store_findings", "Stored findings, by state (all, archived, suppressed).", []string{"state"}, nil)
var descRules = prometheus.NewDesc("mamori_store_rules", "Saved filters and suppression rules.", nil, nil)
var descNodes = prometheus.NewDesc("mamori_store_nodes", "Nodes with a coverage row.", nil, nil)

// Describe implements prometheus.Collector.
func (c *StatsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descStored
	ch <- descRules
	ch <- descNodes
}

// Collect implements prometheus.Collector.
func (c *StatsCollector) Collect(ch chan<- prometheus.Metric) {
	st, err := c.stats()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descStored, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(descStored, prometheus.GaugeValue, float64(st.Findings), "all")
	ch <- prometheus.MustNewConstMetric(descStored, prometheus.GaugeValue, float64(st.Archived), "archived")
	ch <- prometheus.MustNewConstMetric(descStored, prometheus.GaugeValue, float64(st.Suppressed), "suppressed")
	ch <- prometheus.MustNewConstMetric(descRules, prometheus.GaugeValue, float64(st.Rules))
	ch <- prometheus.MustNewConstMetric(descNodes, prometheus.GaugeValue, float64(st.Nodes))
}

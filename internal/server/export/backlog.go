package export

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mamori-dev/mamori/internal/server/store"
)

// BacklogStore reads the outbox's size.
type BacklogStore interface {
	ExportBacklogs(ctx context.Context) ([]store.ExportBacklog, error)
}

// Backlog reports the export outbox per sink, read from the store (so it
// counts every replica's rows): gauges at each scrape, and the sinks that
// fell behind for the server's health.
type Backlog struct {
	st                       BacklogStore
	names                    map[string]string // outbox key → name in metrics and messages
	pending, oldest, overdue *prometheus.Desc
}

// NewBacklog returns a Backlog naming each sink key by names[key].
func NewBacklog(st BacklogStore, names map[string]string) *Backlog {
	l := []string{"sink"}
	return &Backlog{st: st, names: names,
		pending: prometheus.NewDesc("mamori_export_outbox_pending", "Finding changes waiting in the export outbox, due or not.", l, nil),
		oldest:  prometheus.NewDesc("mamori_export_outbox_oldest_age_seconds", "Age of the oldest change waiting in the export outbox.", l, nil),
		overdue: prometheus.NewDesc("mamori_export_outbox_overdue_seconds", "How long the longest-due change in the export outbox has been due: how far behind its sink is.", l, nil)}
}

// name is a sink key's display name.
func (b *Backlog) name(key string) string {
	if n, ok := b.names[key]; ok {
		return n
	}
	return key
}

// Describe implements prometheus.Collector.
func (b *Backlog) Describe(ch chan<- *prometheus.Desc) {
	ch <- b.pending
	ch <- b.oldest
	ch <- b.overdue
}

// Collect implements prometheus.Collector.
func (b *Backlog) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	bs, err := b.st.ExportBacklogs(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(b.pending, err)
		return
	}
	now := time.Now()
	seen := map[string]bool{}
	for _, x := range bs {
		seen[x.Sink] = true
		name := b.name(x.Sink)
		ch <- prometheus.MustNewConstMetric(b.pending, prometheus.GaugeValue, float64(x.Pending), name)
		ch <- prometheus.MustNewConstMetric(b.oldest, prometheus.GaugeValue, ageOf(x.Oldest, now), name)
		ch <- prometheus.MustNewConstMetric(b.overdue, prometheus.GaugeValue, ageOf(x.OldestDue, now), name)
	}
	for key, name := range b.names {
		if !seen[key] {
			for _, d := range []*prometheus.Desc{b.pending, b.oldest, b.overdue} {
				ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, 0, name)
			}
		}
	}
}

func ageOf(t, now time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return max(now.Sub(t).Seconds(), 0)
}

// Problems names the sinks whose due records have waited longer than
// after — a receiver down or refusing, a full disk under an export file —
// for the server's health; the outbox keeps the records meanwhile.
func (b *Backlog) Problems(ctx context.Context, after time.Duration) []string {
	bs, err := b.st.ExportBacklogs(ctx)
	if err != nil {
		return []string{fmt.Sprintf("export outbox unreadable: %v", err)}
	}
	return b.overdueOf(bs, time.Now(), after)
}

func (b *Backlog) overdueOf(bs []store.ExportBacklog, now time.Time, after time.Duration) []string {
	var out []string
	for _, x := range bs {
		if x.OldestDue.IsZero() || now.Sub(x.OldestDue) < after {
			continue
		}
		if _, ok := b.names[x.Sink]; !ok {
			continue // another replica's sink, or one no longer configured
		}
		out = append(out, fmt.Sprintf("export to %s is behind: %d records due, the oldest for %s (kept in the export outbox; see mamori_export_* metrics and the server log for the receiver's answers)",
			b.name(x.Sink), x.Due, now.Sub(x.OldestDue).Round(time.Second)))
	}
	return out
}

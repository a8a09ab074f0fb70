package export

import "github.com/prometheus/client_golang/prometheus"

var (
	descBatcher = map[string]*prometheus.Desc{
		"new":       prometheus.NewDesc("mamori_export_new_total", "New findings sent to the export sinks at once.", nil, nil),
		"updates":   prometheus.NewDesc("mamori_export_updates_total", "Finding updates received by the export policy.", nil, nil),
		"coalesced": prometheus.NewDesc("mamori_export_updates_coalesced_total", "Updates replaced by a later one before their flush.", nil, nil),
		"flushed":   prometheus.NewDesc("mamori_export_updates_flushed_total", "Updates sent by the periodic flush.", nil, nil),
		"pending":   prometheus.NewDesc("mamori_export_updates_pending", "Updates waiting for the next flush.", nil, nil),
	}
)

// Describe implements prometheus.Collector.
func (b *Batcher) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range descBatcher {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (b *Batcher) Collect(ch chan<- prometheus.Metric) {
	s := b.Stats()
	for name, v := range map[string]uint64{"new": s.New, "updates": s.Updates, "coalesced": s.Coalesced, "flushed": s.Flushed} {
		ch <- prometheus.MustNewConstMetric(descBatcher[name], prometheus.CounterValue, float64(v))
	}
	ch <- prometheus.MustNewConstMetric(descBatcher["pending"], prometheus.GaugeValue, float64(s.Pending))
}

// fileDescs are one FileSink's descriptors; the path is a constant label
// so several sinks can register side by side.
func fileDescs(path string) [2]*prometheus.Desc {
	l := prometheus.Labels{"path": path}
	return [2]*prometheus.Desc{
		prometheus.NewDesc("mamori_export_file_records_total", "Records appended to export files.", nil, l),
		prometheus.NewDesc("mamori_export_file_failures_total", "Records that could not be appended to export files.", nil, l),
	}
}

// Describe implements prometheus.Collector.
func (s *FileSink) Describe(ch chan<- *prometheus.Desc) {
	d := fileDescs(s.path)
	ch <- d[0]
	ch <- d[1]
}

// Collect implements prometheus.Collector.
func (s *FileSink) Collect(ch chan<- prometheus.Metric) {
	d := fileDescs(s.path)
	w, f := s.Counts()
	ch <- prometheus.MustNewConstMetric(d[0], prometheus.CounterValue, float64(w))
	ch <- prometheus.MustNewConstMetric(d[1], prometheus.CounterValue, float64(f))
}

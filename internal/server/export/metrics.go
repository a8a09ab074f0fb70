package export

import "github.com/prometheus/client_golang/prometheus"

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

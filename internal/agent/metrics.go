package agent

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Collector exports the agent's counters in Prometheus form. It reads a
// fresh Stats snapshot on every scrape, so nothing is cached or double
// counted.
type Collector struct{ a *Agent }

// NewCollector returns a collector over a.
func NewCollector(a *Agent) *Collector { return &Collector{a: a} }

var (
	descEmitted      = prometheus.NewDesc("mamori_sensor_events_emitted_total", "Records the kernel wrote to the ring buffer, by event kind.", []string{"kind"}, nil)
	descKernelDrops  = prometheus.NewDesc("mamori_sensor_kernel_drops_total", "Records lost because the ring buffer was full, by event kind.", []string{"kind"}, nil)
	descRead         = prometheus.NewDesc("mamori_sensor_records_read_total", "Records read from the ring buffer.", nil, nil)
	descDecodeErrors = prometheus.NewDesc("mamori_sensor_decode_errors_total", "Records refused by the decoder.", nil, nil)
	descProgMisses   = prometheus.NewDesc("mamori_sensor_program_misses_total", "BPF program runs skipped by the kernel's recursion protection (lost events).", nil, nil)
	descLinks        = prometheus.NewDesc("mamori_sensor_links_learned_total", "Links to secrets the kernel added to its file watch as they were made (learned), or could not add, its watch full (failed: reads through them are not seen).", []string{"outcome"}, nil)
	descSecretInodes = prometheus.NewDesc("mamori_sensor_secret_inodes", "Read-watched files the kernel knows by inode, so a read through any path to them is seen (watched), or could not add, its set full (not_watched).", []string{"state"}, nil)
	descRoots        = prometheus.NewDesc("mamori_sensor_watched_roots", "Root directories (the host's, each container's) whose read-watched files are known by inode.", nil, nil)
	descRootsLost    = prometheus.NewDesc("mamori_sensor_root_scans_lost_total", "Root scans for secret files lost: the queue was full (the cgroup asks again at its next event), or the scan did not end within its deadline (a filesystem that does not answer).", nil, nil)
	descShared       = prometheus.NewDesc("mamori_sensor_secret_files_shared_total", "World-readable files of the host's system filesystems that a container's root named as secrets (a library bind-mounted under a secret's name): not watched by inode.", nil, nil)
	descHooks        = prometheus.NewDesc("mamori_sensor_hooks", "Sensor hooks by state (attached, failed, unavailable).", []string{"state"}, nil)
	descQueue        = prometheus.NewDesc("mamori_agent_queue_length", "Events waiting between the reader and the retry cache.", nil, nil)
	descQueueCap     = prometheus.NewDesc("mamori_agent_queue_capacity", "Capacity of the reader queue.", nil, nil)
	descDispatched   = prometheus.NewDesc("mamori_agent_events_dispatched_total", "Enriched events handed to subscribers.", nil, nil)
	descLifeLost     = prometheus.NewDesc("mamori_agent_lifecycle_events_lost_total", "Container start/stop events lost to a full queue.", nil, nil)
	descHashLost     = prometheus.NewDesc("mamori_agent_hash_events_lost_total", "Late-hash (exec_hashed) events lost to a full queue.", nil, nil)
	descRetry        = prometheus.NewDesc("mamori_retry_cache_events_total", "Events that waited for their container, by outcome.", []string{"outcome"}, nil)
	descRetryPending = prometheus.NewDesc("mamori_retry_cache_pending", "Events waiting for their container now.", nil, nil)
	descCtr          = prometheus.NewDesc("mamori_container_table_size", "Container table sizes.", []string{"what"}, nil)
	descCtrCount     = prometheus.NewDesc("mamori_container_table_events_total", "Container table counters.", []string{"what"}, nil)
	descProcEntries  = prometheus.NewDesc("mamori_process_table_entries", "Processes in the process table.", nil, nil)
	descProcCount    = prometheus.NewDesc("mamori_process_table_events_total", "Process table counters (evicted, expired, seeded, unknown).", []string{"what"}, nil)
	descHash         = prometheus.NewDesc("mamori_process_hash_total", "Executable hashing, by outcome.", []string{"outcome"}, nil)
)

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descEmitted, descKernelDrops, descRead, descDecodeErrors, descProgMisses, descLinks,
		descSecretInodes, descRoots, descRootsLost, descShared, descHooks, descQueue, descQueueCap, descDispatched, descLifeLost, descHashLost, descRetry, descRetryPending, descCtr,
		descCtrCount, descProcEntries, descProcCount, descHash} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	s := c.a.Stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for k, v := range s.Sensor.Emitted {
		counter(descEmitted, v, k)
	}
	for k, v := range s.Sensor.KernelDrops {
		counter(descKernelDrops, v, k)
	}
	counter(descRead, s.Sensor.Read)
	counter(descDecodeErrors, s.Sensor.DecodeErrors)
	counter(descProgMisses, s.Sensor.ProgramMisses)
	counter(descLinks, s.Sensor.LinksLearned, "learned")
	counter(descLinks, s.Sensor.LinksNotLearned, "failed")
	gauge(descSecretInodes, float64(s.Sensor.SecretInodes), "watched")
	gauge(descSecretInodes, float64(s.Sensor.SecretInodesNotWatched), "not_watched")
	gauge(descRoots, float64(s.Sensor.WatchedRoots))
	counter(descRootsLost, s.Sensor.RootScansLost)
	counter(descShared, s.Sensor.SecretFilesShared)
	var attached, failed, unavailable float64
	for _, h := range c.a.Hooks() {
		switch {
		case h.Attached:
			attached++
		case h.Optional:
			unavailable++
		default:
			failed++
		}
	}
	gauge(descHooks, attached, "attached")
	gauge(descHooks, failed, "failed")
	gauge(descHooks, unavailable, "unavailable")
	gauge(descQueue, float64(s.Queue))
	gauge(descQueueCap, float64(s.QueueCap))
	counter(descDispatched, s.Dispatched)
	counter(descLifeLost, s.LifecycleLost)
	counter(descHashLost, s.HashEventsLost)
	r := s.Retry
	counter(descRetry, r.Held, "held")
	counter(descRetry, r.Released, "released")
	counter(descRetry, r.Expired, "expired_unresolved")
	counter(descRetry, r.Gone, "gone_unresolved")
	counter(descRetry, r.Dropped, "dropped")
	gauge(descRetryPending, float64(r.Pending))
	t := s.Containers
	gauge(descCtr, float64(t.Cgroups), "cgroups")
	gauge(descCtr, float64(t.Containers), "containers")
	gauge(descCtr, float64(t.Pending), "pending")
	counter(descCtrCount, t.Lookups, "lookups")
	counter(descCtrCount, t.Misses, "misses")
	counter(descCtrCount, t.Rescans, "rescans")
	counter(descCtrCount, t.Evictions, "evictions")
	counter(descCtrCount, t.TableFull, "table_full")
	counter(descCtrCount, t.ResolveErrors, "resolve_errors")
	counter(descCtrCount, t.Partial, "partial")
	counter(descCtrCount, t.LifecycleDropped, "lifecycle_dropped")
	counter(descCtrCount, t.Impostors, "impostors")
	p := s.Processes
	gauge(descProcEntries, float64(p.Entries))
	counter(descProcCount, p.Evicted, "evicted")
	counter(descProcCount, p.Expired, "expired")
	counter(descProcCount, p.Seeded, "seeded")
	counter(descProcCount, p.Unknown, "unknown")
	counter(descHash, p.HashDone, "done")
	counter(descHash, p.HashDropped, "dropped")
	counter(descHash, p.HashFailed, "failed")
	counter(descHash, p.HashCacheHit, "cache_hit")
}

// MetricsHandler serves the agent's metrics and the Go runtime's in
// Prometheus text format.
func (a *Agent) MetricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(a), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}

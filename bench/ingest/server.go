package main

import (
	"bufio"
	"fmt"

	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/mamori-dev/mamori/internal/server/api"
)

// server is the `mamori server` child under test.
type server struct {
	cmd     *exec.Cmd
	dataDir string
	url     string // API
	token   string // admin token
	client  *api.Client
	log     string
}

// startServer runs `mamori server` with its store at dsn ("" for SQLite in
// the data dir) and waits for its API.
func startServer(bin, dir, dsn string) (*server, error) {
	s := &server{dataDir: filepath.Join(dir, "server"), log: filepath.Join(dir, "server.log")}
	logf, err := os.Create(s.log)
	if err != nil {
		return nil, err
	}
	args := []string{"server", "--data-dir", s.dataDir, "--api-addr", "127.0.0.1:0", "--nats-port", "-1", "--no-console"}
	if dsn != "" {
		args = append(args, "--store", dsn)
	}
	if *profile != "" {
		args = append(args, "--cpuprofile", *profile)
	}
	args = append(args, strings.Fields(*srvArgs)...)
	s.cmd = exec.Command(bin, args...)
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start server: %w", err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if u, tok, err := api.LocalFor(s.dataDir).Read(); err == nil {
			s.url, s.token = u, tok
			if s.client, err = api.NewClient(u, tok); err != nil {
				return nil, err
			}
			return s, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.stop()
	b, _ := os.ReadFile(s.log)
	return nil, fmt.Errorf("server API not up within 60s:\n%s", tail(b, 2000))
}

func (s *server) joinToken() (string, error) {
	b, err := os.ReadFile(filepath.Join(s.dataDir, "join-token"))
	return strings.TrimSpace(string(b)), err
}

func (s *server) stop() {
	if s.cmd.ProcessState != nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
}

func (s *server) kill() {
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
}

// metrics scrapes the server's /metrics.
func (s *server) metrics() (map[string]*dto.MetricFamily, error) {
	req, _ := http.NewRequest(http.MethodGet, s.url+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+s.token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/metrics: %s", res.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(res.Body)
}

// counter sums a counter family's series whose labels include want.
func counter(mf map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	f := mf[name]
	if f == nil {
		return 0
	}
	var sum float64
	for _, m := range f.Metric {
		if labelsMatch(m, want) && m.Counter != nil {
			sum += m.Counter.GetValue()
		}
	}
	return sum
}

func labelsMatch(m *dto.Metric, want map[string]string) bool {
	for k, v := range want {
		ok := false
		for _, l := range m.Label {
			if l.GetName() == k && l.GetValue() == v {
				ok = true
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// histogram is a snapshot of one histogram series: cumulative counts by
// upper bound.
type histogram struct {
	bounds []float64
	counts []float64
	total  float64
}

func histogramOf(mf map[string]*dto.MetricFamily, name string, want map[string]string) histogram {
	var h histogram
	f := mf[name]
	if f == nil {
		return h
	}
	for _, m := range f.Metric {
		if !labelsMatch(m, want) || m.Histogram == nil {
			continue
		}
		h.total = float64(m.Histogram.GetSampleCount())
		for _, b := range m.Histogram.Bucket {
			h.bounds = append(h.bounds, b.GetUpperBound())
			h.counts = append(h.counts, float64(b.GetCumulativeCount()))
		}
	}
	return h
}

// minus is h without the observations of before (the same series earlier).
func (h histogram) minus(before histogram) histogram {
	out := histogram{bounds: h.bounds, counts: append([]float64(nil), h.counts...), total: h.total - before.total}
	for i := range out.counts {
		if i < len(before.counts) {
			out.counts[i] -= before.counts[i]
		}
	}
	return out
}

// quantile interpolates linearly inside the bucket holding q, as
// Prometheus's histogram_quantile does.
func (h histogram) quantile(q float64) float64 {
	if h.total <= 0 {
		return math.NaN()
	}
	rank := q * h.total
	prevBound, prevCount := 0.0, 0.0
	for i, c := range h.counts {
		if c >= rank {
			if c == prevCount {
				return h.bounds[i]
			}
			return prevBound + (h.bounds[i]-prevBound)*(rank-prevCount)/(c-prevCount)
		}
		prevBound, prevCount = h.bounds[i], c
	}
	return math.Inf(1)
}

// procStats reads a process's CPU time (user+system) and peak RSS.
func procStats(pid int) (cpu time.Duration, hwmKiB int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err == nil {
		// Fields after the command name, which may hold spaces.
		if i := strings.LastIndexByte(string(b), ')'); i > 0 {
			f := strings.Fields(string(b[i+2:]))
			if len(f) > 13 {
				ut, _ := strconv.ParseInt(f[11], 10, 64)
				st, _ := strconv.ParseInt(f[12], 10, 64)
				cpu = time.Duration(ut+st) * time.Second / 100 // USER_HZ
			}
		}
	}
	if f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
				hwmKiB, _ = strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			}
		}
		f.Close()
	}
	return cpu, hwmKiB
}

func tail(b []byte, n int) string { return string(b[max(0, len(b)-n):]) }

func percentile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, int(math.Ceil(q*float64(len(s))))-1)]
}

type metricFamilies = map[string]*dto.MetricFamily

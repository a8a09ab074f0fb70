// Command ingest measures the control plane at fleet scale: a real
// `mamori server` (embedded NATS JetStream, SQLite or a real PostgreSQL)
// with 1,000 simulated agents, each enrolled with the join token and
// publishing over its own credential and NATS connection with the agent's
// own publisher. It drives heartbeats and findings (half new, half count
// updates) at target rates and reports what the server stored per second,
// the ingest-to-stored latency (the server's histogram of agent send →
// committed, and probe findings timed until the API returns them), server
// CPU and memory, and then the agents' spool write rate with the server
// down.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"math"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"time"

	"github.com/mamori-dev/mamori/internal/server/api"
	"github.com/mamori-dev/mamori/internal/server/store/storetest"
	"github.com/mamori-dev/mamori/internal/transport"
)

var (
	mamoriBin = flag.String("mamori", "bin/mamori", "mamori binary")
	nAgents   = flag.Int("agents", 1000, "simulated agents")
	hbRate    = flag.Int("heartbeats", 10000, "heartbeats per second, all agents together")
	fRate     = flag.Int("findings", 5000, "findings per second, all agents together (half new, half updates)")
	sustain   = flag.String("also", "2000:1000,3000:1500", "lower rates (heartbeats:findings per second, comma-separated) measured first, to show what is sustained")
	seconds   = flag.Int("seconds", 30, "length of the sustained phase")
	engines   = flag.String("engines", "sqlite,postgres", "stores to measure")
	probeRate = flag.Int("probes", 5, "probe findings per second timed until the API returns them")
	quick     = flag.Bool("quick", false, "short run: 8 s phases")
	markdown  = flag.String("markdown", "", "also write the tables as markdown to this file")
	profile   = flag.String("server-profile", "", "write the server's CPU profile here (skips the outage phase)")
	selfProf  = flag.String("agents-profile", "", "write this program's CPU profile (the simulated agents) here")
	srvArgs   = flag.String("server-args", "", "extra arguments of `mamori server`, space-separated (e.g. --stream-max-bytes 33554432)")
)

// result is one engine's run.
type result struct {
	engine                     string
	targetHB, targetF          int
	enrollTook                 time.Duration
	sentHB, sentF, sendErrors  int64
	storedHB, storedF          float64 // during the window
	window                     time.Duration
	backlogHB, backlogF        float64 // still unstored when the window closed
	drainTook                  time.Duration
	lagHB, lagF                histogram
	probes                     []time.Duration
	probeLost                  int
	rejected                   float64
	spooledInLoad              uint64 // messages agents kept in their spools during the window (server refusing, backing off)
	cpu, genCPU                time.Duration
	hwmKiB                     int64
	spoolRate, spoolBytesPerS  float64
	spoolDropped, spoolRefused uint64
}

func main() {
	flag.Parse()
	log.SetFlags(0)
	if *selfProf != "" {
		f, err := os.Create(*selfProf)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	if *quick {
		*seconds = 8
	}
	var results []*result
	for _, engine := range strings.Split(*engines, ",") {
		rs, err := runEngine(strings.TrimSpace(engine))
		if err != nil {
			log.Fatalf("%s: %v", engine, err)
		}
		results = append(results, rs...)
	}
	out := report(results)
	fmt.Print(out)
	if *markdown != "" {
		if err := os.WriteFile(*markdown, []byte(out), 0o644); err != nil {
			log.Fatal(err)
		}
	}
}

func runEngine(engine string) ([]*result, error) {
	dir, err := os.MkdirTemp("", "mamori-bench-ingest-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	dsn := ""
	if engine == "postgres" {
		var stop func()
		if dsn, stop, err = storetest.StartPostgres(); err != nil {
			return nil, err
		}
		defer stop()
	} else if engine != "sqlite" {
		return nil, fmt.Errorf("unknown engine %q", engine)
	}
	log.Printf("== %s: starting server", engine)
	s, err := startServer(*mamoriBin, dir, dsn)
	if err != nil {
		return nil, err
	}
	defer s.stop()
	ctx := context.Background()
	agents, took, err := enrollFleet(ctx, s, *nAgents, dir)
	if err != nil {
		b, _ := os.ReadFile(s.log)
		var problems []string
		for l := range strings.Lines(string(b)) {
			if strings.Contains(l, "level=ERROR") || strings.Contains(l, "level=WARN") {
				problems = append(problems, l)
			}
		}
		return nil, fmt.Errorf("%w\nserver log, warnings and errors:\n%s", err, tail([]byte(strings.Join(problems, "")), 3000))
	}
	defer closeFleet(agents)
	log.Printf("%d agents enrolled in %s", len(agents), took.Round(time.Millisecond))

	// Warm up: every node's first heartbeat and a few findings.
	warm := &load{}
	stopWarm := make(chan struct{})
	go func() { time.Sleep(3 * time.Second); close(stopWarm) }()
	warm.run(agents, len(agents), 100, stopWarm)
	if err := waitStored(s, float64(warm.heartbeats.Load()), float64(warm.findings.Load()), 60*time.Second); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}

	var out []*result
	for _, rate := range phaseRates() {
		r := &result{engine: engine, enrollTook: took}
		if err := runPhase(s, agents, r, rate[0], rate[1]); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	r := out[len(out)-1]
	if *profile != "" {
		s.stop()
		return out, nil
	}
	// Outage: the server is killed; the agents keep publishing into their
	// spools. Measured over the whole fleet for a few seconds.
	log.Printf("outage: server killed, agents spool")
	s.kill()
	time.Sleep(2 * time.Second) // every publisher notices the disconnect
	spool0 := spoolTotals(agents)
	ol := &load{}
	ostop := make(chan struct{})
	ostart := time.Now()
	odone := make(chan struct{})
	go func() { ol.run(agents, *hbRate, *fRate, ostop); close(odone) }()
	time.Sleep(5 * time.Second)
	close(ostop)
	<-odone
	spool1 := spoolTotals(agents)
	el := time.Since(ostart).Seconds()
	r.spoolRate = float64(spool1.spooled-spool0.spooled) / el
	r.spoolBytesPerS = float64(spool1.bytes-spool0.bytes) / el
	r.spoolDropped = spool1.dropped - spool0.dropped
	r.spoolRefused = uint64(ol.errors.Load())
	return out, nil
}

// runPhase offers hb heartbeats/s and f findings/s for -seconds, then
// waits (up to 2 minutes) for the backlog to drain, and fills r.
func runPhase(s *server, agents []*simAgent, r *result, hb, f int) error {
	r.targetHB, r.targetF = hb, f
	before, err := s.metrics()
	if err != nil {
		return err
	}
	cpu0, _ := procStats(s.cmd.Process.Pid)
	gen0, _ := procStats(os.Getpid())
	spool0 := spoolTotals(agents)
	log.Printf("sustained phase: %d heartbeats/s + %d findings/s for %ds", hb, f, *seconds)
	l := &load{}
	stop := make(chan struct{})
	var probesWG sync.WaitGroup
	probesWG.Go(func() { r.probes, r.probeLost = runProbes(s, agents, stop) })
	start := time.Now()
	done := make(chan struct{})
	go func() { l.run(agents, hb, f, stop); close(done) }()
	for i := 0; i < *seconds; i++ {
		time.Sleep(time.Second)
		if mf, err := s.metrics(); err == nil {
			log.Printf("  t=%4.1fs sent %d hb, %d findings; stored %.0f hb, %.0f findings", time.Since(start).Seconds(), l.heartbeats.Load(), l.findings.Load(),
				stored(mf, "heartbeat")-stored(before, "heartbeat"), stored(mf, "finding")-stored(before, "finding"))
		}
	}
	close(stop)
	<-done
	r.window = time.Since(start)
	after, err := s.metrics()
	if err != nil {
		return err
	}
	cpu1, hwm := procStats(s.cmd.Process.Pid)
	gen1, _ := procStats(os.Getpid())
	r.cpu, r.hwmKiB, r.genCPU = cpu1-cpu0, hwm, gen1-gen0
	probesWG.Wait()
	r.sentHB, r.sentF, r.sendErrors = l.heartbeats.Load(), l.findings.Load(), l.errors.Load()
	r.spooledInLoad = spoolTotals(agents).spooled - spool0.spooled
	r.storedHB = stored(after, "heartbeat") - stored(before, "heartbeat")
	r.storedF = stored(after, "finding") - stored(before, "finding")
	r.backlogHB, r.backlogF = float64(r.sentHB)-r.storedHB, float64(r.sentF)-r.storedF
	r.rejected = counter(after, "mamori_ingest_rejected_total", nil) + counter(after, "mamori_transport_rejected_total", nil)
	drainStart := time.Now()
	base := stored(before, "heartbeat")
	baseF := stored(before, "finding")
	if err := waitStored(s, base+float64(r.sentHB), baseF+float64(r.sentF), 120*time.Second); err != nil {
		log.Printf("drain: %v", err)
	}
	r.drainTook = time.Since(drainStart)
	final, err := s.metrics()
	if err != nil {
		return err
	}
	r.lagHB = histogramOf(final, "mamori_ingest_lag_seconds", map[string]string{"kind": "heartbeat"}).minus(
		histogramOf(before, "mamori_ingest_lag_seconds", map[string]string{"kind": "heartbeat"}))
	for _, h := range []struct{ name, label string }{{"mamori_coverage_heartbeat_batch", "heartbeats per commit"},
		{"mamori_ingest_batch_findings", "findings per commit"}} {
		hf := histogramOf(final, h.name, nil)
		if f := final[h.name]; f != nil && len(f.Metric) > 0 && f.Metric[0].Histogram != nil && hf.total > 0 {
			log.Printf("  %s: mean %.1f over %.0f commits", h.label, f.Metric[0].Histogram.GetSampleSum()/hf.total, hf.total)
		}
	}
	for _, op := range []string{"node_update", "upsert"} {
		hf := histogramOf(final, "mamori_store_operation_seconds", map[string]string{"op": op})
		if f := final["mamori_store_operation_seconds"]; f != nil && hf.total > 0 {
			for _, m := range f.Metric {
				if labelsMatch(m, map[string]string{"op": op}) {
					log.Printf("  store %s: mean %.1f ms over %.0f", op, 1000*m.Histogram.GetSampleSum()/hf.total, hf.total)
				}
			}
		}
	}
	r.lagF = histogramOf(final, "mamori_ingest_lag_seconds", map[string]string{"kind": "finding"}).minus(
		histogramOf(before, "mamori_ingest_lag_seconds", map[string]string{"kind": "finding"}))

	return nil
}

// stored counts messages of kind the server has applied.
func stored(mf metricFamilies, kind string) float64 {
	total := counter(mf, "mamori_ingest_messages_total", map[string]string{"kind": kind})
	return total - counter(mf, "mamori_ingest_messages_total", map[string]string{"kind": kind, "outcome": "rejected"}) -
		counter(mf, "mamori_ingest_messages_total", map[string]string{"kind": kind, "outcome": "error"})
}

// waitStored waits until the server has applied hb heartbeats and f findings.
func waitStored(s *server, hb, f float64, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		mf, err := s.metrics()
		if err == nil && stored(mf, "heartbeat") >= hb && stored(mf, "finding") >= f {
			return nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = fmt.Errorf("applied %.0f/%.0f heartbeats, %.0f/%.0f findings", stored(mf, "heartbeat"), hb, stored(mf, "finding"), f)
			}
			return fmt.Errorf("not all applied within %s: %w", within, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// runProbes publishes probe findings from random agents at -probes per
// second and times each until GET /findings/{id} returns it.
func runProbes(s *server, agents []*simAgent, stop <-chan struct{}) ([]time.Duration, int) {
	var (
		mu   sync.Mutex
		lat  []time.Duration
		lost int
		wg   sync.WaitGroup
	)
	t := time.NewTicker(time.Second / time.Duration(max(*probeRate, 1)))
	defer t.Stop()
	for i := 0; ; i++ {
		select {
		case <-stop:
			wg.Wait()
			return lat, lost
		case <-t.C:
		}
		a := agents[(i*7919)%len(agents)]
		f := newFinding(a.node, fmt.Sprintf("/tmp/probe-%d-%d", i, time.Now().UnixNano()), time.Now().UTC())
		t0 := time.Now()
		if _, err := a.pub.Publish(transport.KindFinding, f); err != nil {
			mu.Lock()
			lost++
			mu.Unlock()
			continue
		}
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			for ctx.Err() == nil {
				if _, err := s.client.GetFinding(ctx, f.ID); err == nil {
					mu.Lock()
					lat = append(lat, time.Since(t0))
					mu.Unlock()
					return
				} else if !api.IsStatus(err, 404) && !errors.Is(err, context.DeadlineExceeded) {
					break
				}
				// 10 ms resolution where the target lies; slower after a
				// second, so that probes waiting on an overloaded server do
				// not pile up GETs and become the overload themselves.
				if time.Since(t0) < time.Second {
					time.Sleep(10 * time.Millisecond)
				} else {
					time.Sleep(250 * time.Millisecond)
				}
			}
			mu.Lock()
			lost++
			mu.Unlock()
		})
	}
}

type spoolTotal struct{ spooled, bytes, dropped uint64 }

func spoolTotals(agents []*simAgent) spoolTotal {
	var t spoolTotal
	for _, a := range agents {
		st := a.pub.Stats()
		t.spooled += st.Spooled
		t.bytes += uint64(st.Spool.Bytes)
		for _, n := range st.Spool.Dropped {
			t.dropped += n
		}
	}
	return t
}

func report(rs []*result) string {
	var b strings.Builder
	load1, load5, load15 := loadavg()
	fmt.Fprintf(&b, "Run %s on %d vCPU; load average %s %s %s at the end. %d simulated agents, each with its own enrolled credential, NATS connection and spool (the agent's publisher), against `mamori server` (embedded NATS JetStream) on this machine.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), numCPU(), load1, load5, load15, *nAgents)
	fmt.Fprintf(&b, "| store | offered (heartbeats/s + findings/s) | stored heartbeats/s | stored findings/s | p99 ingest-to-stored (histogram; probes) | kept up | against the target (%d + %d, p99 ≤ 250 ms) |\n|---|---|---|---|---|---|---|\n", *hbRate, *fRate)
	for _, r := range rs {
		w := r.window.Seconds()
		hbs, fs := r.storedHB/w, r.storedF/w
		p99 := percentile(r.probes, 0.99)
		lagP99 := math.Max(r.lagHB.quantile(0.99), r.lagF.quantile(0.99))
		kept := r.backlogHB+r.backlogF < 0.02*float64(r.sentHB+r.sentF)+100 && r.probeLost == 0
		target := "—"
		if r.targetHB == *hbRate && r.targetF == *fRate {
			target = verdict(hbs >= 0.98*float64(*hbRate) && fs >= 0.98*float64(*fRate) && lagP99 <= 0.25 && p99 <= 250*time.Millisecond && r.probeLost == 0)
		}
		fmt.Fprintf(&b, "| %s | %d + %d | %.0f | %.0f | %s; %s | %s | %s |\n", r.engine, r.targetHB, r.targetF, hbs, fs,
			ms(lagP99), p99.Round(time.Millisecond), yesNo(kept), target)
	}
	fmt.Fprintf(&b, "\n| store | offered | enroll %d agents | sent hb/s | sent findings/s | stored hb/s | stored findings/s | backlog at end (hb, findings) | drained in | lag p50 / p99 hb | lag p50 / p99 findings | probes p50 / p99 / max (n, lost) | rejected | spooled by agents | server CPU | agents' CPU | server peak RSS |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n", *nAgents)
	for _, r := range rs {
		w := r.window.Seconds()
		fmt.Fprintf(&b, "| %s | %d + %d | %s | %.0f | %.0f | %.0f | %.0f | %.0f, %.0f | %s | %s / %s | %s / %s | %s / %s / %s (%d, %d) | %.0f | %d | %.0f%% of a core | %.0f%% of a core | %.0f MiB |\n",
			r.engine, r.targetHB, r.targetF, r.enrollTook.Round(time.Millisecond), float64(r.sentHB)/w, float64(r.sentF)/w, r.storedHB/w, r.storedF/w,
			r.backlogHB, r.backlogF, r.drainTook.Round(time.Millisecond),
			ms(r.lagHB.quantile(0.5)), ms(r.lagHB.quantile(0.99)), ms(r.lagF.quantile(0.5)), ms(r.lagF.quantile(0.99)),
			percentile(r.probes, 0.5).Round(time.Millisecond), percentile(r.probes, 0.99).Round(time.Millisecond),
			percentile(r.probes, 1).Round(time.Millisecond), len(r.probes), r.probeLost,
			r.rejected, r.spooledInLoad, 100*r.cpu.Seconds()/w, 100*r.genCPU.Seconds()/w, float64(r.hwmKiB)/1024)
	}
	fmt.Fprintf(&b, "\nLag is the server's `mamori_ingest_lag_seconds` histogram (agent send → committed), quantiles interpolated in its buckets; probes are findings published during the load and polled through `GET /api/v1/findings/{id}` every 10 ms for a second, then every 250 ms (publish → visible in the API). The load is half new findings, half count updates of earlier ones. Spooled by agents: messages the agents kept on disk during the load because the server refused them for now (its stream full) or while they backed off; they are replayed later and counted as stored then.\n\n")
	fmt.Fprintf(&b, "| store | server down: agents' spool writes | spool bytes/s | dropped by the spool bound | publishes refused |\n|---|---|---|---|---|\n")
	for _, r := range rs {
		if r.spoolRate == 0 && r.spoolBytesPerS == 0 {
			continue // only the last phase of an engine runs the outage
		}
		fmt.Fprintf(&b, "| %s | %.0f messages/s | %.1f MiB/s | %d | %d |\n", r.engine, r.spoolRate, r.spoolBytesPerS/(1<<20), r.spoolDropped, r.spoolRefused)
	}
	return b.String()
}

// phaseRates lists the phases, lowest first: an overloaded phase leaves a
// backlog behind it.
func phaseRates() [][2]int {
	var out [][2]int
	for _, p := range strings.Split(*sustain, ",") {
		var hb, f int
		if _, err := fmt.Sscanf(strings.TrimSpace(p), "%d:%d", &hb, &f); err == nil {
			out = append(out, [2]int{hb, f})
		}
	}
	return append(out, [2]int{*hbRate, *fRate})
}

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "no"
}

func verdict(ok bool) string {
	if ok {
		return "pass"
	}
	return "**FAIL**"
}

func ms(sec float64) string {
	if math.IsNaN(sec) {
		return "n/a"
	}
	if math.IsInf(sec, 1) {
		return "> top bucket"
	}
	return fmt.Sprintf("%.0f ms", sec*1000)
}

func loadavg() (string, string, string) {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?", "?", "?"
	}
	return f[0], f[1], f[2]
}

func numCPU() int {
	m, _ := filepath.Glob("/sys/devices/system/cpu/cpu[0-9]*")
	return len(m)
}

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/mamori-dev/mamori/internal/agent"
	"github.com/mamori-dev/mamori/internal/datadir"
	"github.com/mamori-dev/mamori/internal/detect"
	"github.com/mamori-dev/mamori/internal/event"
	"github.com/mamori-dev/mamori/internal/finding"
	"github.com/mamori-dev/mamori/internal/intel"
	"github.com/mamori-dev/mamori/internal/sensor"
	"github.com/mamori-dev/mamori/internal/server/coverage"
	"github.com/mamori-dev/mamori/internal/transport"
)

func init() { register(agentCmd) }

// agentFlags are shared by `agent` and `run`.
type agentFlags struct {
	// lock, when set, is the data directory's agent lock, taken by a caller
	// that must hold it before it connects (the spool and credentials are
	// the agent's); runAgent takes it otherwise.
	lock         *datadir.Lock
	dataDir      string
	metricsAddr  string
	print        string
	verbose      bool
	findingsFile string
	intelDir     string
	rulesDir     string
	quiet        bool
	cpuProfile   string
	memProfile   string
	labels       map[string]string
	dnsPorts     []uint
	bpfObjects   string
	engineSocks  []string
	// findingSinks are extra sinks for findings (not flags): `run` hands
	// them to its embedded server.
	findingSinks []agent.FindingSink
	// started, when set, runs beside a started agent (not a flag): `run`
	// sends the agent's heartbeats to its embedded server.
	// It returns when ctx ends; exit then says why the agent stops.
	started func(ctx context.Context, a *agent.Agent, exit func() *coverage.Exit)
}

func (f *agentFlags) bind(cmd *cobra.Command, defaultPrint string) {
	cmd.Flags().StringVar(&f.dataDir, "data-dir", agent.DefaultDataDir, "directory for this node's state (node id, event socket)")
	cmd.Flags().StringVar(&f.metricsAddr, "metrics-addr", "127.0.0.1:9464", "address serving Prometheus /metrics (empty: off)")
	cmd.Flags().StringVar(&f.print, "print", defaultPrint, "event kinds to print to the terminal, comma-separated (\"\": none, \"all\": every kind)")
	cmd.Flags().BoolVarP(&f.verbose, "verbose", "v", false, "debug logging")
	cmd.Flags().StringVar(&f.findingsFile, "findings-file", "", "append every new or updated finding as a JSON line to this file [DATA_DIR/findings.jsonl]")
	cmd.Flags().StringVar(&f.intelDir, "intel", "", "directory of threat-intel lists (plain, CSV, STIX 2.1), reloaded on change [DATA_DIR/intel]")
	cmd.Flags().StringVar(&f.rulesDir, "rules", "", "directory of custom rule files (*.yaml) [DATA_DIR/rules]")
	cmd.Flags().BoolVarP(&f.quiet, "quiet", "q", false, "do not print findings to the terminal")
	cmd.Flags().StringToStringVar(&f.labels, "label", nil, "node label reported in heartbeats, KEY=VALUE (repeatable); mamori.io/managed=false opts the node out of coverage")
	cmd.Flags().UintSliceVar(&f.dnsPorts, "dns-ports", []uint{53}, "server ports DNS is read on, comma-separated (at most 4; e.g. 53,8600 for Consul)")
	cmd.Flags().StringSliceVar(&f.engineSocks, "engine-socket", nil, "a container engine's API socket beyond the well-known ones (Docker, containerd, k3s, podman, CRI-O, BuildKit), glob allowed, repeatable: a connect to it from a container, under whatever name, raises DockerSocketAccessed")
	cmd.Flags().StringVar(&f.bpfObjects, "bpf-objects", "auto", "which build of the BPF objects to load: auto (probe the kernel's helpers) or compat (the build for Linux 5.10–5.16, even on newer kernels: for tests and benchmarks)")
	cmd.Flags().StringVar(&f.cpuProfile, "cpuprofile", "", "write a Go CPU profile to this file (for benchmarks)")
	_ = cmd.Flags().MarkHidden("cpuprofile")
	cmd.Flags().StringVar(&f.memProfile, "memprofile", "", "write a Go allocation profile to this file at exit (for benchmarks)")
	_ = cmd.Flags().MarkHidden("memprofile")
}

func agentCmd() *cobra.Command {
	var (
		f                          agentFlags
		serverURL, joinToken, clus string
		caFingerprint              string
		syncEvery, followAfter     time.Duration
	)
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the node agent: load the sensor, detect, and report to a server (--server) or a findings file",
		RunE: func(cmd *cobra.Command, args []string) error {
			if serverURL != "" {
				if os.Geteuid() != 0 {
					return errors.New("the agent loads BPF programs and must run as root")
				}
				if followAfter <= 0 {
					return fmt.Errorf("--follow-after %s: must be positive", followAfter)
				}
				if caFingerprint != "" {
					fp, err := transport.NormalizeFingerprint(caFingerprint)
					if err != nil {
						return fmt.Errorf("--ca-fingerprint: %w", err)
					}
					caFingerprint = fp
				}
				// A second agent on this data directory is refused before it
				// enrolls or opens the first one's spool.
				lock, err := datadir.Acquire(f.dataDir, "agent")
				if err != nil {
					return err
				}
				defer lock.Release()
				f.lock = lock
				nodeID, err := agent.LoadNodeID(f.dataDir)
				if err != nil {
					return err
				}
				log := newLogger(f.verbose)
				link, err := connectAgent(cmd.Context(), agentBusConfig{dataDir: f.dataDir, nodeID: nodeID, cluster: clus,
					serverURL: serverURL, token: joinToken, caFingerprint: caFingerprint, followAfter: followAfter}, prometheus.NewRegistry(), log)
				if err != nil {
					return err
				}
				defer link.Close()
				f.findingSinks = append(f.findingSinks, link.Sink)
				if err := link.syncDistribution(cmd.Context(), serverURL, caFingerprint, f.dataDir, f.rulesDir, f.intelDir, syncEvery); err != nil {
					return err
				}
				f.started = func(ctx context.Context, a *agent.Agent, exit func() *coverage.Exit) {
					link.heartbeats(ctx, a, agent.HeartbeatInfo{Version: version, Cluster: clus, Platform: "host", Interval: heartbeatEvery, Labels: f.labels}, exit)
				}
			}
			return runAgent(cmd.Context(), &f, os.Stdout)
		},
	}
	f.bind(cmd, "")
	cmd.Flags().StringVar(&serverURL, "server", "", "mamori server API URL to enroll with and report to (findings and heartbeats over NATS JetStream, spooled while it is away)")
	cmd.Flags().StringVar(&joinToken, "join-token", os.Getenv("MAMORI_JOIN_TOKEN"), "join token for the first enrollment (the server keeps one in DATA_DIR/join-token)")
	cmd.Flags().StringVar(&clus, "cluster", "", "cluster this node belongs to (coverage)")
	cmd.Flags().DurationVar(&syncEvery, "sync-interval", 30*time.Second, "how often the server's distributed rules and intel are fetched into --rules and --intel")
	cmd.Flags().DurationVar(&followAfter, "follow-after", 2*time.Minute, "how long the server's NATS may be unreachable before the agent asks the server's API whether it moved (and follows it)")
	cmd.Flags().StringVar(&caFingerprint, "ca-fingerprint", os.Getenv("MAMORI_CA_FINGERPRINT"), "SHA-256 of the server's API CA (printed by mamori server): enroll over its self-signed HTTPS trusting only that CA")
	return cmd
}

func runAgent(ctx context.Context, f *agentFlags, out *os.File) (err error) {
	level := slog.LevelInfo
	if f.verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if os.Geteuid() != 0 {
		return errors.New("the agent loads BPF programs and must run as root")
	}
	printFilter, err := printFilter(f.print)
	if err != nil {
		return err
	}
	if f.lock == nil {
		lock, err := datadir.Acquire(f.dataDir, "agent")
		if err != nil {
			return err
		}
		defer lock.Release()
	}
	nodeID, err := agent.LoadNodeID(f.dataDir)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if f.cpuProfile != "" {
		pf, err := os.Create(f.cpuProfile)
		if err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		if err := pprof.StartCPUProfile(pf); err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	if f.memProfile != "" {
		defer func() {
			if err := writeAllocProfile(f.memProfile); err != nil {
				log.Warn("memory profile", "err", err)
			}
		}()
	}

	start := time.Now()
	ports, err := dnsPorts(f.dnsPorts)
	if err != nil {
		return err
	}
	compat, err := bpfObjects(f.bpfObjects)
	if err != nil {
		return err
	}
	a, err := agent.New(agent.Options{NodeID: nodeID, Logger: log, Sensor: sensor.Options{DNSPorts: ports, Compat: compat},
		EngineSockets: f.engineSocks})
	if err != nil {
		return err
	}
	defer a.Close()
	if f.started != nil {
		// Stopped and waited for before the agent closes, however runAgent
		// returns: its last heartbeat reads the agent's state and says why.
		hbCtx, hbCancel := context.WithCancel(ctx)
		var runErr error // written before hbCancel, read after hbCtx ends
		exit := func() *coverage.Exit {
			if runErr != nil && !errors.Is(runErr, context.Canceled) {
				return &coverage.Exit{Code: 1, Reason: runErr.Error()}
			}
			return &coverage.Exit{Code: 0, Reason: "stopped (signal)"}
		}
		var bg sync.WaitGroup
		bg.Go(func() { f.started(hbCtx, a, exit) })
		defer func() {
			runErr = err
			hbCancel()
			bg.Wait()
		}()
	}
	attached, failed := 0, 0
	for _, h := range a.Hooks() {
		switch {
		case h.Attached:
			attached++
		case !h.Optional:
			failed++
			log.Warn("hook not attached", "hook", h.Hook, "err", h.Error)
		}
	}
	log.Info("sensor loaded", "node", nodeID, "hooks", attached, "failed", failed, "took", time.Since(start).Round(time.Millisecond))

	sock := filepath.Join(f.dataDir, "events.sock")
	if err := a.ServeStream(ctx, sock); err != nil {
		return err
	}
	log.Info("event stream", "socket", sock, "read with", "mamori events --json")
	if f.metricsAddr != "" {
		l, err := net.Listen("tcp", f.metricsAddr)
		if err != nil {
			return fmt.Errorf("metrics listener: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", a.MetricsHandler())
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(l)
		defer srv.Close()
		log.Info("metrics", "url", "http://"+l.Addr().String()+"/metrics")
	}
	if printFilter != nil {
		a.Subscribe(func(ev *event.Event) {
			if printFilter.Match(ev) {
				fmt.Fprintln(out, ev.Summary())
			}
		})
	}
	det, closeDet, err := startDetection(ctx, f, nodeID, log, out)
	if err != nil {
		return err
	}
	defer closeDet()
	a.Subscribe(det.Handle)
	go det.Run(ctx)
	return a.Run(ctx)
}

// startDetection builds the engine (built-in detectors, intel, custom
// rules) and its sinks: the findings file and the terminal.
func startDetection(ctx context.Context, f *agentFlags, nodeID string, log *slog.Logger, out *os.File) (*agent.Detection, func(), error) {
	orDefault := func(v, name string) string {
		if v != "" {
			return v
		}
		return filepath.Join(f.dataDir, name)
	}
	intelDir, rulesDir, file := orDefault(f.intelDir, "intel"), orDefault(f.rulesDir, "rules"), orDefault(f.findingsFile, "findings.jsonl")
	for _, d := range []string{intelDir, rulesDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, nil, fmt.Errorf("create %s: %w", d, err)
		}
	}
	store, err := intel.NewStore(intelDir)
	if err != nil {
		log.Warn("threat intel: some entries were refused", "err", err)
	}
	go store.Watch(ctx.Done(), 2*time.Second, func(err error) {
		if err != nil {
			log.Warn("threat intel reload", "err", err)
			return
		}
		log.Info("threat intel reloaded", "indicators", store.Stats().Indicators)
	})
	detectors := detect.Builtin(store)
	rulesSrc := detect.OpenRulesDir(rulesDir)
	rules, err := rulesSrc.Load()
	if err != nil {
		log.Warn("custom rules: some were refused", "err", err)
	}
	for _, r := range rules {
		detectors = append(detectors, r)
	}
	host, _ := os.Hostname()
	engine := detect.NewEngine(finding.Agent{NodeID: nodeID, Hostname: host, Version: version}, log, detectors...)
	go rulesSrc.Watch(ctx.Done(), 2*time.Second, engine, func(loaded int, err error) {
		if err != nil {
			log.Warn("custom rules reload", "inForce", loaded, "err", err)
			return
		}
		log.Info("custom rules reloaded", "inForce", loaded)
	})
	w, err := finding.OpenFile(file)
	if err != nil {
		return nil, nil, err
	}
	sinks := []agent.FindingSink{func(fd *finding.Finding, isNew bool) {
		if err := w.Write(fd); err != nil {
			log.Error("findings file", "err", err)
		}
	}}
	if !f.quiet {
		sinks = append(sinks, func(fd *finding.Finding, isNew bool) { fmt.Fprintln(out, finding.Line(fd, isNew)) })
	}
	sinks = append(sinks, f.findingSinks...)
	log.Info("detection", "detectors", len(detectors), "customRules", len(rules), "intelIndicators", store.Set().Len(),
		"findingsFile", file)
	return agent.NewDetection(engine, finding.NewAggregator(0, 0), log, sinks...), func() { w.Close() }, nil
}

func printFilter(kinds string) (*agent.Filter, error) {
	switch kinds {
	case "":
		return nil, nil
	case "all":
		kinds = ""
	}
	f, err := agent.NewFilter(kinds, "")
	if err != nil {
		return nil, fmt.Errorf("--print: %w", err)
	}
	return &f, nil
}

// writeAllocProfile writes the allocations made since start to path.
func writeAllocProfile(path string) error {
	pf, err := os.Create(path)
	if err != nil {
		return err
	}
	defer pf.Close()
	return pprof.Lookup("allocs").WriteTo(pf, 0)
}

// bpfObjects checks --bpf-objects and says whether it forces the compat
// build.
func bpfObjects(v string) (compat bool, err error) {
	switch v {
	case "auto", "":
		return false, nil
	case "compat":
		return true, nil
	}
	return false, fmt.Errorf("--bpf-objects: %q is neither auto nor compat", v)
}

// dnsPorts checks --dns-ports.
func dnsPorts(in []uint) ([]uint16, error) {
	out := make([]uint16, 0, len(in))
	for _, p := range in {
		if p > 65535 {
			return nil, fmt.Errorf("--dns-ports: %d is not a port", p)
		}
		out = append(out, uint16(p))
	}
	if err := sensor.CheckDNSPorts(out); err != nil {
		return nil, fmt.Errorf("--dns-ports: %w", err)
	}
	return out, nil
}

package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/mamori-dev/mamori/internal/agent"
	"github.com/mamori-dev/mamori/internal/datadir"
	"github.com/mamori-dev/mamori/internal/finding"
	"github.com/mamori-dev/mamori/internal/server/api"
	"github.com/mamori-dev/mamori/internal/server/coverage"
	"github.com/mamori-dev/mamori/internal/server/export"
	"github.com/mamori-dev/mamori/internal/server/ingest"
	"github.com/mamori-dev/mamori/internal/server/store"
	"github.com/mamori-dev/mamori/internal/transport"
	"github.com/mamori-dev/mamori/web"
)

func init() { register(serverCmd) }

// serverFlags configure the server part of `mamori server` and `mamori run`.
type serverFlags struct {
	apiAddr         string
	storeDSN        string
	cluster         string
	webhooks        []string
	exportFiles     []string
	webhookHeaders  []string
	exportFormat    string
	updateFrequency string
	noConsole       bool
	natsHost        string
	natsPort        int
	// External NATS cluster (replicas).
	natsURLs      []string
	natsAgentURLs []string
	natsAuth      string
	natsCA        string
	natsReplicas  int
	streamBytes   int64
	minFreeDisk   int64
	apiTLS        string
	apiTLSHosts   []string
	asffAccount   string
	asffRegion    string
	sessionTTL    time.Duration
	// rulesDir and intelDir are the directories distributed to agents
	// [DATA_DIR/rules, DATA_DIR/intel].
	rulesDir, intelDir string
}

var asffAccountRE = regexp.MustCompile(`^[0-9]{12}$`)

func (f *serverFlags) bind(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.apiAddr, "api-addr", "127.0.0.1:9470", "address of the HTTP API and console (port 0 picks a free one; the address is kept in DATA_DIR/api/address)")
	fl.StringVar(&f.apiTLS, "api-tls", "auto", "serve the API over HTTPS with a certificate of the server's own CA (DATA_DIR/api/tls): on, off, or auto (on unless --api-addr is loopback)")
	fl.StringSliceVar(&f.apiTLSHosts, "api-tls-host", nil, "names and addresses the API certificate must cover besides loopback and the hostname (repeatable)")
	fl.StringVar(&f.storeDSN, "store", "", "finding store: a SQLite file or postgres://... [DATA_DIR/mamori.db]")
	fl.StringVar(&f.cluster, "cluster", "local", "cluster name of this installation (exports, coverage)")
	fl.StringArrayVar(&f.webhooks, "export-webhook", nil, "POST every exported finding to this URL (repeatable; FORMAT=URL gives it a format of its own)")
	fl.StringArrayVar(&f.exportFiles, "export-file", nil, "append every exported finding as a JSON line to this file (repeatable; FORMAT=PATH gives it a format of its own)")
	fl.StringArrayVar(&f.webhookHeaders, "export-header", nil, "header added to webhook requests, \"Name: value\" (repeatable)")
	fl.StringVar(&f.exportFormat, "export-format", string(export.FormatEventBus), fmt.Sprintf("record format of the exports that name none: %v", export.Formats))
	fl.StringVar(&f.updateFrequency, "export-update-frequency", "6h", "how often updated findings are exported: 15m, 1h or 6h (new findings go at once)")
	fl.StringVar(&f.asffAccount, "asff-account", "", "--export-format asff: the AWS account id Security Hub imports into (12 digits)")
	fl.StringVar(&f.asffRegion, "asff-region", "", "--export-format asff: the AWS region of that Security Hub [us-east-1]")
	fl.BoolVar(&f.noConsole, "no-console", false, "serve the API only, without the web console")
	fl.DurationVar(&f.sessionTTL, "console-session", api.DefaultSessionTTL, "how long a console login lasts at most (it never outlives the token it was made with; logging out ends it at once)")
	fl.StringVar(&f.natsHost, "nats-host", "127.0.0.1", "address the embedded NATS JetStream server (agent transport, TLS) listens on; 0.0.0.0 for agents on other hosts")
	fl.IntVar(&f.natsPort, "nats-port", 4222, "port of the embedded NATS server (-1 picks a free one)")
	fl.StringSliceVar(&f.natsURLs, "nats-url", nil, "join an external NATS JetStream cluster at these URLs (tls://host:4222,...) instead of embedding one; run N replicas with one PostgreSQL --store")
	fl.StringSliceVar(&f.natsAgentURLs, "nats-agent-url", nil, "NATS URLs handed to enrolling agents [--nats-url]")
	fl.StringVar(&f.natsAuth, "nats-auth", "", "with --nats-url: the installation's NATS auth file, the same on every replica [DATA_DIR/nats/auth.json] (see: mamori server nats-config)")
	fl.StringVar(&f.natsCA, "nats-ca", "", "with --nats-url: CA certificate (PEM) of the NATS servers, also handed to agents [DATA_DIR/nats/tls/ca.pem]")
	fl.IntVar(&f.natsReplicas, "nats-replicas", 1, "JetStream replicas of mamori's stream and buckets (3 on a 3-server cluster)")
	fl.Int64Var(&f.streamBytes, "stream-max-bytes", transport.DefaultStreamMaxBytes, "bound of the agents' message stream; when it is full agents keep new messages in their spools and back off")
	fl.Int64Var(&f.minFreeDisk, "min-free-disk", transport.DefaultMinFreeBytes, "embedded NATS: free bytes its store's disk keeps, at least --stream-max-bytes; below them the server refuses agent messages (agents spool them) until twice as much is free")
}

// bindDirs adds --rules and --intel (`run` shares the agent's).
func (f *serverFlags) bindDirs(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.rulesDir, "rules", "", "directory of custom rule files distributed to agents [DATA_DIR/rules]")
	cmd.Flags().StringVar(&f.intelDir, "intel", "", "directory of threat-intel lists distributed to agents [DATA_DIR/intel]")
}

func serverCmd() *cobra.Command {
	var (
		sf         serverFlags
		dataDir    string
		verbose    bool
		cpuProfile string
	)
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the control plane: finding store, suppression, export, coverage, HTTP API and console",
		RunE: func(cmd *cobra.Command, args []string) error {
			log := newLogger(verbose)
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if cpuProfile != "" {
				pf, err := os.Create(cpuProfile)
				if err != nil {
					return fmt.Errorf("cpu profile: %w", err)
				}
				if err := pprof.StartCPUProfile(pf); err != nil {
					return fmt.Errorf("cpu profile: %w", err)
				}
				defer pprof.StopCPUProfile()
			}
			srv, err := startServer(ctx, &sf, dataDir, log, cmd.OutOrStdout())
			if err != nil {
				return err
			}
			<-ctx.Done()
			srv.Close()
			return nil
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", agent.DefaultDataDir, "directory for the server's state (store, API tokens, address)")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "debug logging")
	cmd.Flags().StringVar(&cpuProfile, "cpuprofile", "", "write a Go CPU profile to this file (for benchmarks)")
	_ = cmd.Flags().MarkHidden("cpuprofile")
	sf.bind(cmd)
	sf.bindDirs(cmd)
	cmd.AddCommand(natsConfigCmd())
	return cmd
}

func newLogger(verbose bool) *slog.Logger {
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(log) // libraries' own log lines read alike
	return log
}

// server is a running control plane.
type server struct {
	log     *slog.Logger
	store   store.Store
	cluster string
	local   api.Local
	url     string
	http    *http.Server
	relays  []*export.Relay
	// stopRelays stops the relays and waits for them (nil: none).
	stopRelays func()
	relayWG    sync.WaitGroup
	// exportBacklog reads the export outbox per sink (nil: no sinks).
	exportBacklog *export.Backlog
	webhooks      []*export.Webhook
	files         []*export.FileSink
	coverage      *coverage.Monitor
	ingest        *ingest.Ingester
	cancel        context.CancelFunc
	wg            sync.WaitGroup

	bus       *bus
	lock      *datadir.Lock
	closeOnce sync.Once
	// caFingerprint pins the API's own CA when it serves HTTPS ("" otherwise).
	caFingerprint string
}

// startServer opens the store, starts export and serves the API and
// console. It prints the API's address on out.
func startServer(ctx context.Context, f *serverFlags, dataDir string, log *slog.Logger, out io.Writer) (*server, error) {
	freq, err := export.ParseUpdateFrequency(f.updateFrequency)
	if err != nil {
		return nil, fmt.Errorf("--export-update-frequency: %w", err)
	}
	format, err := export.ParseFormat(f.exportFormat)
	if err != nil {
		return nil, fmt.Errorf("--export-format: %w", err)
	}
	if f.streamBytes < 1<<20 {
		return nil, fmt.Errorf("--stream-max-bytes: %d is under the 1 MiB a stream of agent messages needs", f.streamBytes)
	}
	if f.minFreeDisk < 1<<20 {
		return nil, fmt.Errorf("--min-free-disk: %d is under 1 MiB, too little for the store to keep writing", f.minFreeDisk)
	}
	lock, err := datadir.Acquire(dataDir, "server")
	if err != nil {
		return nil, err
	}
	dsn := f.storeDSN
	if dsn == "" {
		dsn = filepath.Join(dataDir, "mamori.db")
	}
	reg := prometheus.NewRegistry()
	st, err := store.Open(ctx, dsn, store.Options{Logger: log, Metrics: store.NewMetrics(reg)})
	if err != nil {
		lock.Release()
		return nil, err
	}
	if err := reg.Register(store.NewStatsCollector(st)); err != nil {
		st.Close()
		lock.Release()
		return nil, err
	}
	// The server's work stops at Close, not at the signal: Close first
	// sends out held export updates and lets webhooks deliver, which needs
	// them still running. A signal during startup still aborts it (startup
	// waits for NATS and the store for minutes).
	sigCtx := ctx
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	abortStart := context.AfterFunc(sigCtx, cancel)
	s := &server{log: log, store: st, cluster: f.cluster, local: api.LocalFor(dataDir), cancel: cancel, lock: lock}
	fail := func(err error) (*server, error) {
		cancel()
		s.relayWG.Wait()
		s.wg.Wait()
		if s.ingest != nil {
			s.ingest.Close()
		}
		for _, f := range s.files {
			f.Close()
		}
		st.Close()
		lock.Release()
		return nil, err
	}

	// Export: each sink is fed from the store's export outbox by a relay.
	if f.asffAccount != "" && !asffAccountRE.MatchString(f.asffAccount) {
		return fail(fmt.Errorf("--asff-account %q: want a 12-digit AWS account id", f.asffAccount))
	}
	encoders := map[export.Format]export.Encoder{}
	// encoderFor splits a target "FORMAT=TARGET" (its own format) from a
	// plain one (--export-format) and returns its encoder.
	encoderFor := func(flag, v string) (export.Encoder, string, error) {
		fm, target := format, v
		if name, rest, ok := strings.Cut(v, "="); ok && !strings.ContainsAny(name, "/:") {
			var err error
			if fm, err = export.ParseFormat(name); err != nil {
				return nil, "", fmt.Errorf("%s %q: %w", flag, v, err)
			}
			target = rest
		}
		if enc, ok := encoders[fm]; ok {
			return enc, target, nil
		}
		if fm == export.FormatASFF && f.asffAccount == "" {
			log.Warn("export: ASFF records carry account 000000000000: Security Hub refuses them until --asff-account (and --asff-region) name yours")
		}
		enc, err := export.NewEncoder(fm, export.Options{Cluster: f.cluster, ProductVersion: version,
			AwsAccountID: f.asffAccount, Region: f.asffRegion})
		if err != nil {
			return nil, "", err
		}
		encoders[fm] = enc
		return enc, target, nil
	}
	headers := map[string]string{}
	for _, h := range f.webhookHeaders {
		k, v, ok := strings.Cut(h, ":")
		if !ok || strings.TrimSpace(k) == "" {
			return fail(fmt.Errorf("--export-header %q: want \"Name: value\"", h))
		}
		headers[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	var sinks []exportSink
	for i, v := range f.webhooks {
		enc, u, err := encoderFor("--export-webhook", v)
		if err != nil {
			return fail(err)
		}
		w, err := export.NewWebhook(export.WebhookConfig{Name: fmt.Sprintf("webhook-%d", i), URL: u, Encoder: enc,
			Headers: headers, UserAgent: "mamori/" + version, Logger: log})
		if err != nil {
			return fail(fmt.Errorf("--export-webhook: %w", err))
		}
		if err := reg.Register(w); err != nil {
			return fail(err)
		}
		s.webhooks = append(s.webhooks, w)
		sinks = append(sinks, exportSink{export.SinkKey("webhook", enc.Format(), u), fmt.Sprintf("webhook-%d", i), w})
		s.wg.Add(1)
		go func() { defer s.wg.Done(); w.Run(ctx) }()
	}
	for _, v := range f.exportFiles {
		enc, p, err := encoderFor("--export-file", v)
		if err != nil {
			return fail(err)
		}
		fs, err := export.OpenFileSink(p, enc, log)
		if err != nil {
			return fail(fmt.Errorf("--export-file: %w", err))
		}
		s.files = append(s.files, fs)
		abs, err := filepath.Abs(p)
		if err != nil {
			return fail(fmt.Errorf("--export-file %s: %w", p, err))
		}
		sinks = append(sinks, exportSink{export.SinkKey("file", enc.Format(), abs), "file:" + p, fs})
		if err := reg.Register(fs); err != nil {
			return fail(err)
		}
	}
	s.wg.Add(1)
	go func() { defer s.wg.Done(); store.RunRetention(ctx, st, time.Hour, store.PurgeOptions{}, log) }()
	if err := s.startRelays(ctx, sinks, freq, reg); err != nil {
		return fail(err)
	}

	// Coverage and ingest: every finding and heartbeat, the local agent's
	// and samples included, takes the agents' path into the store.
	s.coverage, err = coverage.New(coverage.Config{Store: st, Metrics: coverage.NewMetrics(reg), Logger: log,
		// Read only by the sweeps of Run, which starts once the bus is up.
		Backlog: func(ctx context.Context) (coverage.Backlog, error) { return s.bus.backlog(ctx) }})
	if err != nil {
		return fail(err)
	}
	s.ingest, err = ingest.New(ingest.Config{Store: st, Coverage: s.coverage, Metrics: ingest.NewMetrics(reg), Logger: log,
		OnChange: func(c ingest.Change) {
			// The change is in the outbox already (same transaction):
			// this only spares the relays their poll interval, for new
			// findings (updates are due later).
			if c.New && !c.Suppressed && c.Record != nil {
				for _, r := range s.relays {
					r.Wake()
				}
			}
		}})
	if err != nil {
		return fail(err)
	}

	// API and console.
	host, _ := os.Hostname()
	rulesDir, intelDir := f.rulesDir, f.intelDir
	if rulesDir == "" {
		rulesDir = filepath.Join(dataDir, "rules")
	}
	if intelDir == "" {
		intelDir = filepath.Join(dataDir, "intel")
	}
	// Made at start so operators see where distributed files go.
	for _, d := range []string{rulesDir, intelDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fail(fmt.Errorf("create %s: %w", d, err))
		}
	}
	// Agents reach ingest over NATS JetStream; enrollment is on the API.
	mux := http.NewServeMux()
	bc := busConfig{dataDir: dataDir, host: f.natsHost, port: f.natsPort, urls: f.natsURLs, agentURLs: f.natsAgentURLs,
		authFile: f.natsAuth, caFile: f.natsCA, replicas: f.natsReplicas, streamBytes: f.streamBytes, minFreeDisk: f.minFreeDisk, serverName: "mamori-server@" + host,
		handler: s.ingest.Handle, enrolled: s.coverage.Enrolled}
	authFile, tlsDir, _ := transport.EmbeddedPaths(dataDir)
	if bc.authFile == "" {
		bc.authFile = authFile
	}
	if bc.caFile == "" {
		bc.caFile = filepath.Join(tlsDir, "ca.pem")
	}
	if s.bus, err = startBus(ctx, bc, mux, reg, log); err != nil {
		return fail(err)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.coverage.Run(ctx); err != nil && ctx.Err() == nil {
			log.Error("coverage", "err", err)
		}
	}()
	// Coverage transitions go out on the bus for integrators
	// (mamori.events.coverage.<node>), once whichever replica saw them.
	if err := s.publishCoverage(ctx, f.natsReplicas); err != nil {
		s.bus.Close()
		return fail(err)
	}
	// API tokens: a file in the data dir, or the cluster's bucket when
	// replicas share the work (a token made on one works on all).
	var tokens api.TokenStore
	if s.bus.emb != nil {
		tokens, _, err = s.local.OpenTokens()
	} else {
		var kv *transport.KVStore[api.Token]
		err = s.bus.retryJS(ctx, log, func(ctx context.Context) error {
			var err error
			kv, err = transport.NewKVStore[api.Token](ctx, s.bus.js, api.APITokenBucket, f.natsReplicas)
			return err
		})
		if err == nil {
			tokens = api.NewKVTokens(kv)
			_, err = s.local.EnsureAdmin(tokens)
		}
	}
	if err != nil {
		s.bus.Close()
		return fail(fmt.Errorf("api tokens: %w", err))
	}
	// Enrolled agents' tokens are rows in the store (earlier builds kept
	// them with people's, where they still work until the node re-enrolls).
	s.bus.enroller.SetAgentTokens(api.AgentTokens{Store: st, Legacy: tokens})
	tokens = api.WithAgentTokens(tokens, st)
	a, err := api.New(api.Options{Store: st, Tokens: tokens, Submit: s.Submit, Coverage: s.coverage,
		RulesChanged: s.ingest.InvalidateRules, RulesDir: rulesDir, IntelDir: intelDir,
		Agent:   finding.Agent{NodeID: "mamori-server", Hostname: host, Version: version},
		Version: version, Logger: log, Registerer: reg, Agents: s.bus.enroller, Problems: s.problems,
		SessionTTL: f.sessionTTL})
	if err != nil {
		s.bus.Close()
		return fail(err)
	}
	mux.Handle(api.Prefix+"/", a)
	// Prometheus scrapes with a read token (authorization: credentials_file).
	mux.Handle("GET /metrics", a.Protect(api.ScopeRead, promhttp.HandlerFor(reg, promhttp.HandlerOpts{})))
	if !f.noConsole {
		console, err := web.New(web.Options{API: a, Logger: log})
		if err != nil {
			s.bus.Close()
			return fail(err)
		}
		mux.Handle("/", console)
	}
	l, err := net.Listen("tcp", f.apiAddr)
	if err != nil {
		s.bus.Close()
		return fail(fmt.Errorf("api listener: %w", err))
	}
	fingerprint, err := s.serveTLS(f, &l)
	if err != nil {
		l.Close()
		s.bus.Close()
		return fail(err)
	}
	s.url = "http://" + l.Addr().String()
	s.caFingerprint = fingerprint
	if fingerprint != "" {
		s.url = "https://" + l.Addr().String()
	}
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.http.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("api server", "err", err)
		}
	}()
	if err := s.local.WriteAddress(s.url); err != nil {
		s.Close()
		return nil, err
	}
	log.Info("server", "store", st.Engine(), "api", s.url, "webhooks", len(s.webhooks), "exportFiles", len(s.files), "exportFormat", format,
		"updateFrequency", freq, "tokenFile", s.local.TokensPath())
	fmt.Fprintf(out, "mamori API and console: %s  (CLI: mamori findings list --data-dir %s)\n", s.url, dataDir)
	fmt.Fprintf(out, "console login and API token (admin): sudo cat %s  (send it as Authorization: Bearer TOKEN)\n", s.local.AdminTokenPath())
	if fingerprint != "" {
		fmt.Fprintf(out, "agents on other hosts: mamori agent --server %s --join-token \"$(cat %s)\" --ca-fingerprint %s\n",
			s.url, filepath.Join(dataDir, "join-token"), fingerprint)
	}
	if !abortStart() { // the signal came during startup: its work is cancelled
		s.Close()
		return nil, fmt.Errorf("interrupted during startup: %w", context.Cause(sigCtx))
	}
	return s, nil
}

// publishCoverage forwards every coverage transition to the event stream,
// with the transition's store sequence as message id.
func (s *server) publishCoverage(ctx context.Context, replicas int) error {
	var pub *transport.EventPublisher
	err := s.bus.retryJS(ctx, s.log, func(ctx context.Context) error {
		var err error
		pub, err = transport.NewEventPublisher(ctx, s.bus.js, replicas)
		return err
	})
	if err != nil {
		return err
	}
	events, stop := s.coverage.Subscribe(1024)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer stop()
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-events:
				pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				if err := pub.Publish(pctx, transport.CoverageEventSubject(ev.NodeID), fmt.Sprintf("coverage-%d", ev.Seq), ev); err != nil && ctx.Err() == nil {
					s.log.Warn("coverage event not published (it stays in /api/v1/coverage/events)", "node", ev.NodeID, "seq", ev.Seq, "err", err)
				}
				cancel()
			}
		}
	}()
	return nil
}

// serveTLS wraps *l in TLS when f.apiTLS asks for it, with a certificate of
// the server's own CA, and returns that CA's fingerprint ("" for plain
// HTTP). Agents pin it (--ca-fingerprint) so the join token never crosses
// the network in clear or to an impostor.
func (s *server) serveTLS(f *serverFlags, l *net.Listener) (string, error) {
	host, _, _ := net.SplitHostPort((*l).Addr().String())
	ip := net.ParseIP(host)
	switch f.apiTLS {
	case "off":
		return "", nil
	case "auto":
		if ip != nil && ip.IsLoopback() {
			return "", nil
		}
	case "on":
	default:
		return "", fmt.Errorf("--api-tls %q: want on, off or auto", f.apiTLS)
	}
	hosts := append(transport.DefaultTLSHosts(), f.apiTLSHosts...)
	if ip != nil && !ip.IsUnspecified() {
		hosts = append(hosts, host)
	}
	tlsm, err := transport.LoadOrCreateTLS(s.local.TLSDir(), hosts)
	if err != nil {
		return "", fmt.Errorf("api tls: %w", err)
	}
	fp, err := transport.CAFingerprint(tlsm.CAPEM)
	if err != nil {
		return "", fmt.Errorf("api tls: %w", err)
	}
	*l = tls.NewListener(*l, tlsm.ServerTLSConfigWithCA())
	return fp, nil
}

// Close stops taking findings, sends out the pending export updates
// (giving webhooks a few seconds to deliver what is queued), and closes
// the store.
func (s *server) Close() {
	s.closeOnce.Do(func() {
		s.local.RemoveAddress()
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.http.Shutdown(shut)
		s.ingest.Close()
		if s.stopRelays != nil {
			s.stopRelays()
		}
		for _, w := range s.webhooks {
			if !w.Drain(shut) {
				s.log.Warn("export: webhook still had records at shutdown; the export outbox keeps them for the next start", "stats", w.Stats())
			}
		}
		s.cancel()
		s.wg.Wait()
		if s.bus != nil {
			s.bus.Close()
		}
		for _, f := range s.files {
			if err := f.Close(); err != nil {
				s.log.Error("export file close", "err", err)
			}
		}
		if err := s.store.Close(); err != nil {
			s.log.Error("store close", "err", err)
		}
		s.lock.Release()
	})
}

// Submit stores findings made on this host (the local agent's, samples)
// through ingest, exactly as an agent's arrive: validated, bound to their
// node, suppressed by rules, merged, exported. The findings are applied
// concurrently so ingest commits them in one batch.
func (s *server) Submit(ctx context.Context, fs []*finding.Finding) error {
	errs := make([]error, len(fs))
	var wg sync.WaitGroup
	for i, f := range fs {
		b, err := json.Marshal(f)
		if err != nil {
			errs[i] = fmt.Errorf("encode finding %s: %w", f.ID, err)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.ingest.Apply(ctx, ingest.Input{NodeID: f.Service.AdditionalInfo.AgentDetails.AgentID,
				Kind: ingest.KindFinding, SentAt: time.Now(), Payload: b})
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// heartbeatEvery is the local agent's heartbeat interval.
const heartbeatEvery = 10 * time.Second

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mamori-dev/mamori/internal/agent"
	"github.com/mamori-dev/mamori/internal/finding"
	"github.com/mamori-dev/mamori/internal/rulesync"
	"github.com/mamori-dev/mamori/internal/server/coverage"
	"github.com/mamori-dev/mamori/internal/transport"
)

// bus is the server side of the agent transport: NATS JetStream (embedded,
// or an external cluster), enrollment and the consumer feeding ingest.
type bus struct {
	emb      *transport.Embedded // nil on an external cluster
	nc       *nats.Conn
	sys      *nats.Conn // system-account connection (external cluster only)
	tokens   *transport.Tokens
	enroller *transport.Enroller
	js       jetstream.JetStream
	disk     *transport.DiskGuard // nil on an external cluster
	cons     *transport.Consumer
	outages  *transport.OutageBoard // the database's, as every replica sees them
}

// busConfig says where the transport runs and what it feeds.
type busConfig struct {
	dataDir string
	// Embedded NATS.
	host string
	port int
	// External cluster: when urls is set, no NATS server is embedded.
	urls        []string
	agentURLs   []string // handed to agents [urls]
	authFile    string   // the installation's NATS auth, shared by every replica
	caFile      string   // CA of the NATS servers' certificates
	replicas    int      // JetStream replicas of the stream and buckets
	streamBytes int64    // the stream's bound [transport's default]
	minFreeDisk int64    // embedded: free bytes the store's disk keeps [transport's default]
	serverName  string

	handler  transport.Handler
	enrolled func(ctx context.Context, nodeID, cluster string, at time.Time) error
}

// startBus starts or joins NATS, mounts enrollment on mux and consumes agent
// messages into cfg.handler. It keeps a multi-use join token in
// DATA_DIR/join-token (0600) for agents on other hosts.
func startBus(ctx context.Context, cfg busConfig, mux *http.ServeMux, reg prometheus.Registerer, log *slog.Logger) (*bus, error) {
	m := transport.NewMetrics(reg)
	b := &bus{}
	fail := func(err error) (*bus, error) { b.Close(); return nil, err }
	var (
		auth   *transport.Auth
		caPEM  []byte
		urls   []string
		revoke func(string) error
	)
	if len(cfg.urls) == 0 {
		streamBytes := cfg.streamBytes
		if streamBytes <= 0 {
			streamBytes = transport.DefaultStreamMaxBytes
		}
		// The quota covers the agents' stream, the 256 MiB event stream and
		// the buckets; the disk's real free space is the guard's to watch.
		emb, err := transport.StartEmbedded(transport.EmbeddedConfig{DataDir: cfg.dataDir, Host: cfg.host, Port: cfg.port, Logger: log,
			ServerName: "mamori", MaxStoreBytes: streamBytes + 512<<20})
		if err != nil {
			return nil, fmt.Errorf("start NATS: %w", err)
		}
		b.emb, auth, caPEM, urls, revoke = emb, emb.Auth, emb.TLS.CAPEM, []string{emb.ClientURL()}, emb.RevokeUser
		if b.nc, err = emb.ConnectInProcess("mamori-server"); err != nil {
			return fail(fmt.Errorf("connect to NATS: %w", err))
		}
	} else {
		var err error
		if auth, err = loadSharedAuth(cfg.authFile); err != nil {
			return nil, err
		}
		if caPEM, err = os.ReadFile(cfg.caFile); err != nil {
			return nil, fmt.Errorf("--nats-ca: %w", err)
		}
		urls = cfg.agentURLs
		if len(urls) == 0 {
			urls = cfg.urls
		}
		conn := transport.ServerConnConfig{URLs: cfg.urls, Auth: auth, CAPEM: caPEM, Name: cfg.serverName}
		if b.nc, err = transport.ConnectServer(ctx, conn); err != nil {
			return nil, err
		}
		conn.System = true
		if b.sys, err = transport.ConnectServer(ctx, conn); err != nil {
			return fail(err)
		}
	}
	js, err := jetstream.New(b.nc)
	if err != nil {
		return fail(err)
	}
	b.js = js
	if b.emb != nil {
		// The guard takes up a pause a previous run left before EnsureStream
		// resets the stream's bound, and pauses again at once below if the
		// disk has not recovered. It keeps at least the stream's bound free:
		// while intake is paused the server still stores what the stream
		// holds, on the same disk by default.
		if b.disk, err = transport.NewDiskGuard(transport.DiskGuardConfig{Embedded: b.emb, JS: js, StreamMaxBytes: cfg.streamBytes,
			MinFree: max(cfg.minFreeDisk, cfg.streamBytes), Metrics: m, Logger: log}); err != nil {
			return fail(err)
		}
		b.disk.Restore(ctx)
	}
	var (
		toks  *transport.KVStore[transport.TokenRecord]
		nodes *transport.KVStore[transport.NodeRecord]
		rev   *transport.ClusterRevoker
	)
	err = b.retryJS(ctx, log, func(ctx context.Context) error {
		so := transport.StreamOptions{Replicas: cfg.replicas, MaxBytes: cfg.streamBytes}
		if b.disk != nil {
			so.PausedSince = b.disk.PausedSince()
		}
		if _, err := transport.EnsureStream(ctx, js, so); err != nil {
			return err
		}
		var err error
		if toks, err = transport.NewKVStore[transport.TokenRecord](ctx, js, transport.TokenBucket, cfg.replicas); err != nil {
			return err
		}
		if nodes, err = transport.NewKVStore[transport.NodeRecord](ctx, js, transport.NodeBucket, cfg.replicas); err != nil {
			return err
		}
		outages, err := transport.NewKVStore[transport.OutageRecord](ctx, js, transport.OutageBucket, cfg.replicas)
		if err != nil {
			return err
		}
		b.outages = transport.NewOutageBoard(outages, "database")
		if b.sys != nil {
			rev, err = transport.NewClusterRevoker(ctx, js, cfg.replicas, auth, b.sys, log)
		}
		return err
	})
	if err != nil {
		return fail(err)
	}
	if b.disk != nil {
		b.disk.Check(ctx)
	}
	if rev != nil {
		revoke = rev.Revoke
		go rev.Run(ctx, revocationPushEvery)
	}
	b.tokens = transport.NewTokens(toks)
	enr, err := transport.NewEnroller(transport.EnrollerConfig{Auth: auth, Tokens: b.tokens, Nodes: nodes,
		NATSURLs: urls, CAPEM: caPEM, Revoke: revoke, Enrolled: cfg.enrolled, Metrics: m, Logger: log})
	if err != nil {
		return fail(err)
	}
	mux.Handle(transport.EnrollPath, enr)
	b.enroller = enr
	var cons *transport.Consumer
	err = b.retryJS(ctx, log, func(ctx context.Context) error {
		var err error
		cons, err = transport.NewConsumer(ctx, js, transport.ConsumerConfig{Handler: cfg.handler, Concurrency: 1024, Metrics: m, Logger: log})
		return err
	})
	if err != nil {
		return fail(err)
	}
	b.cons = cons
	go b.shareOutages(ctx, log)
	if b.disk != nil {
		go b.disk.Run(ctx)
	}
	if reg != nil {
		if err := reg.Register(transport.NewStreamCollector(js, "", log)); err != nil {
			return fail(fmt.Errorf("stream metrics: %w", err))
		}
	}
	go func() {
		if err := cons.Run(ctx); err != nil && ctx.Err() == nil {
			log.Error("transport consumer", "err", err)
		}
	}()
	tokenFile := filepath.Join(cfg.dataDir, "join-token")
	if err := b.retryJS(ctx, log, func(ctx context.Context) error { return b.writeJoinToken(ctx, tokenFile) }); err != nil {
		return fail(err)
	}
	log.Info("agent transport", "nats", urls, "external", b.emb == nil, "replicas", max(cfg.replicas, 1), "joinTokenFile", tokenFile)
	return b, nil
}

// backlog is the agents' stream as coverage judges silence against it.
func (b *bus) backlog(ctx context.Context) (coverage.Backlog, error) {
	var bl coverage.Backlog
	refusing := false
	if b.disk != nil {
		if d := b.disk.State(); !d.Since.IsZero() {
			bl.Outages = append(bl.Outages, coverage.Outage{Since: d.Since, Until: d.Until,
				Cause: "the server refuses agent messages: " + d.Reason + " (agents keep them in their spools)"})
			refusing = d.Until.IsZero()
		}
	}
	// The database's outages as every replica reported them, so replicas
	// judge alike.
	if b.outages != nil {
		o, err := b.outages.Read(ctx)
		if err != nil && !refusing {
			return coverage.Backlog{}, err
		}
		if !o.Since.IsZero() {
			bl.Outages = append(bl.Outages, coverage.Outage{Since: o.Since, Until: o.Until,
				Cause: "the server cannot store agent messages: its database is unavailable or out of disk space (they wait in its queue or in agents' spools)"})
		}
	}
	st, err := transport.ReadStreamState(ctx, b.js, "")
	if err != nil {
		if refusing {
			return bl, nil // a failed store may not answer; the refusal is known
		}
		return coverage.Backlog{}, err
	}
	bl.Pending, bl.OldestPending = st.Pending, st.OldestPending
	return bl, nil
}

// shareOutages reports this replica's view of the database's outages to
// the board every replica's coverage reads, whenever it changes; and it
// ends a shared outage this replica has stored messages since — the
// replica that saw it begin may have restarted or lost its database alone.
func (b *bus) shareOutages(ctx context.Context, log *slog.Logger) {
	var sent transport.OutageRecord
	var closedAt time.Time
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		since, until := b.cons.Outage()
		if seen := (transport.OutageRecord{Since: since, Until: until}); seen != sent {
			if err := b.outages.Report(ctx, seen); err != nil {
				log.Debug("share the database outage with other replicas; retrying", "err", err)
				continue
			}
			sent = seen
		}
		last := b.cons.LastStored()
		if last.IsZero() || last.Equal(closedAt) {
			continue
		}
		rec, err := b.outages.Read(ctx)
		if err != nil || rec.Since.IsZero() || !rec.Until.IsZero() || !last.After(rec.Since) {
			continue
		}
		if err := b.outages.Report(ctx, transport.OutageRecord{Since: rec.Since, Until: last}); err == nil {
			closedAt = last
		}
	}
}

// problems says what keeps this server from taking or storing agent
// messages now, for /health.
func (b *bus) problems() []string {
	var out []string
	if b.disk != nil {
		if d := b.disk.State(); d.Refusing != "" {
			out = append(out, fmt.Sprintf("agent intake paused since %s: %s", d.Since.UTC().Format(time.RFC3339), d.Refusing))
		}
	}
	if b.cons != nil {
		if since, until := b.cons.Outage(); !since.IsZero() && until.IsZero() {
			out = append(out, fmt.Sprintf("database unavailable since %s: agent messages wait in the stream", since.UTC().Format(time.RFC3339)))
		}
	}
	return out
}

// revocationPushEvery bounds how long a NATS server restarted with an old
// account JWT may still accept a revoked agent key.
const revocationPushEvery = 10 * time.Second

// retrying wraps f so it is retried every second until it succeeds, ctx
// ends or within passes.
// retryJS runs f, JetStream setup, once on the embedded server and on an
// external cluster for up to two minutes: a cluster still electing its
// JetStream leaders (just started, or after losing a server) refuses or
// times out for a while, and a replica should wait rather than crash-loop.
func (b *bus) retryJS(ctx context.Context, log *slog.Logger, f func(context.Context) error) error {
	if b.emb != nil {
		return f(ctx)
	}
	return retrying(2*time.Minute, log, "NATS cluster not ready for JetStream", f)(ctx)
}

func retrying(within time.Duration, log *slog.Logger, what string, f func(context.Context) error) func(context.Context) error {
	return func(ctx context.Context) error {
		deadline := time.Now().Add(within)
		for {
			err := f(ctx)
			if err == nil || ctx.Err() != nil || time.Now().After(deadline) {
				return err
			}
			log.Warn(what+"; retrying", "err", err)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Second):
			}
		}
	}
}

// loadSharedAuth reads the installation's NATS auth file on an external
// cluster. It is never created here: every replica must mount the same one
// (made by `mamori server nats-config`), or agents enrolled by one replica
// would be strangers to the others.
func loadSharedAuth(path string) (*transport.Auth, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("--nats-auth: %w (create it with `mamori server nats-config` and give every replica the same file)", err)
	}
	auth, err := transport.LoadOrCreateAuth(path)
	if err != nil {
		return nil, fmt.Errorf("--nats-auth: %w", err)
	}
	return auth, nil
}

// writeJoinToken makes a multi-use join token for remote agents unless one
// is already kept (and still valid).
func (b *bus) writeJoinToken(ctx context.Context, path string) error {
	if old, err := os.ReadFile(path); err == nil {
		if _, err := b.tokens.Check(ctx, strings.TrimSpace(string(old))); err == nil {
			return nil
		}
	}
	tok, _, err := b.tokens.Create(ctx, transport.TokenOptions{TTL: -1, MaxUses: transport.UnlimitedUses,
		Description: "written to the data dir at server start"})
	if err != nil {
		return fmt.Errorf("join token: %w", err)
	}
	return os.WriteFile(path, []byte(tok+"\n"), 0o600)
}

// localToken makes a single-use token for the agent of `mamori run`.
func (b *bus) localToken(ctx context.Context) (string, error) {
	tok, _, err := b.tokens.Create(ctx, transport.TokenOptions{TTL: time.Minute, AllowRebind: true,
		Description: "the local agent of mamori run"})
	return tok, err
}

// Close stops the NATS connections and the embedded server.
func (b *bus) Close() {
	if b.nc != nil {
		b.nc.Close()
	}
	if b.sys != nil {
		b.sys.Close()
	}
	if b.emb != nil {
		b.emb.Shutdown()
	}
}

// agentLink is the agent side: enrollment and the publisher.
type agentLink struct {
	pub   *transport.Publisher
	creds *transport.Credentials
	log   *slog.Logger
}

// agentBusConfig says where an agent reports and how it enrolls.
type agentBusConfig struct {
	dataDir, nodeID, cluster string
	serverURL                string // the server's API
	token                    string // join token, for the first enrollment
	caFingerprint            string // pins the API's CA over https
	// followAfter is how long the bus may be unreachable before the agent
	// asks the API whether NATS moved [2m].
	followAfter time.Duration
}

// connectAgent loads the node's credentials from dataDir, enrolling with
// token at serverURL first when there are none, and starts a publisher
// that spools to dataDir/spool while the server is away.
func connectAgent(ctx context.Context, bc agentBusConfig, reg prometheus.Registerer, log *slog.Logger) (*agentLink, error) {
	dataDir, nodeID, serverURL, token, caFingerprint := bc.dataDir, bc.nodeID, bc.serverURL, bc.token, bc.caFingerprint
	creds, err := transport.LoadCredentials(dataDir)
	var silent error // the bus did not answer the agent's probe
	if err == nil && creds.NodeID == nodeID {
		// A node removed on the server (its key revoked) comes back with a
		// join token: it enrolls again instead of spooling for ever.
		switch perr := transport.ProbeCredentials(creds, 3*time.Second); {
		case errors.Is(perr, transport.ErrCredentialRefused) && token != "":
			log.Warn("the server refused this node's credential (removed or revoked); enrolling again with --join-token")
			err = perr
		case errors.Is(perr, transport.ErrCredentialRefused):
			log.Error("the server refused this node's credential: the node was removed or its key revoked; "+
				"findings are spooled meanwhile — restart the agent with --join-token to enroll again", "credentials", transport.CredentialsFile(dataDir))
		case perr != nil:
			silent = perr
		}
	}
	if err != nil || creds.NodeID != nodeID {
		if token == "" {
			return nil, fmt.Errorf("agent is not enrolled: pass --join-token (the server keeps one in its DATA_DIR/join-token)")
		}
		opts := transport.EnrollOptions{URL: strings.TrimSuffix(serverURL, "/") + transport.EnrollPath,
			Token: token, NodeID: nodeID, Cluster: bc.cluster}
		if caFingerprint != "" {
			opts.HTTPClient = transport.PinnedHTTPClient(caFingerprint, 30*time.Second)
		} else if u, err := url.Parse(serverURL); err == nil && u.Scheme == "http" && !isLoopbackHost(u.Hostname()) {
			log.Warn("enrolling over plain HTTP: the join token crosses the network in clear; use the server's https:// URL with --ca-fingerprint", "server", serverURL)
		}
		creds, err = transport.Enroll(ctx, opts)
		if err != nil {
			return nil, err
		}
		if err := transport.SaveCredentials(dataDir, creds); err != nil {
			return nil, err
		}
	}
	pcfg := transport.PublisherConfig{Creds: creds, SpoolDir: filepath.Join(dataDir, "spool"),
		Metrics: transport.NewMetrics(reg), Logger: log, FollowAfter: bc.followAfter}
	followServer(&pcfg, dataDir, creds, serverURL, caFingerprint, silent, log)
	pub, err := transport.NewPublisher(pcfg)
	if err != nil {
		return nil, fmt.Errorf("publisher: %w", err)
	}
	return &agentLink{pub: pub, creds: creds, log: log}, nil
}

// followServer lets the publisher follow a server whose NATS moved: when
// its bus is silent for a while (pcfg.FollowAfter), or at once when it was
// silent at start (silent, the probe's error), it asks the server's API
// where agents dial now, and takes the new address once it answers. The
// agent starts without waiting for the answer, spooling meanwhile. The API
// is asked only over a trusted link (askableAPI).
func followServer(pcfg *transport.PublisherConfig, dataDir string, creds *transport.Credentials, serverURL, caFingerprint string, silent error, log *slog.Logger) {
	if creds.APIToken == "" || !askableAPI(serverURL) {
		if silent != nil {
			log.Warn("the server's NATS is not reachable now; findings and heartbeats are spooled until it is",
				"err", silent, "urls", strings.Join(creds.NATSURLs, ","),
				"hint", "the NATS address comes from enrollment ("+transport.CredentialsFile(dataDir)+"): if the server moved, remove that file and start with --join-token"+
					" (the server's API is asked where NATS is now only over https://, or plain HTTP on loopback)")
		}
		return
	}
	pcfg.Locate = natsLocator(serverURL, caFingerprint, creds.APIToken)
	pcfg.OnMove = func(urls []string) {
		c := *creds
		c.NATSURLs = urls
		if err := transport.SaveCredentials(dataDir, &c); err != nil {
			log.Warn("keep the server's new NATS address for the next start", "err", err)
		}
	}
	if silent != nil {
		pcfg.AskAtStart = true
		log.Warn("the server's NATS is not reachable now; asking the server's API where it is (findings and heartbeats are spooled meanwhile)",
			"err", silent, "urls", strings.Join(creds.NATSURLs, ","), "server", serverURL)
	}
}

// natsLocator asks the server's API, with the agent's token, where agents
// reach NATS now (at start, and when the bus is lost while running).
func natsLocator(serverURL, caFingerprint, apiToken string) func(context.Context) ([]string, error) {
	var client *http.Client
	if caFingerprint != "" {
		client = transport.PinnedHTTPClient(caFingerprint, 10*time.Second)
	}
	return func(ctx context.Context) ([]string, error) {
		return transport.CurrentNATSURLs(ctx, client, serverURL, apiToken)
	}
}

// askableAPI reports whether the agent may ask the server's API where NATS
// is: over https (its CA pinned or trusted), or plain HTTP on loopback —
// not plain HTTP across a network, where anyone on the path could answer
// with a bus of their own (and read the agent's token).
func askableAPI(serverURL string) bool {
	u, err := url.Parse(serverURL)
	return err == nil && u.Host != "" && (u.Scheme == "https" || u.Scheme == "http" && isLoopbackHost(u.Hostname()))
}

func isLoopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// syncDistribution mirrors the server's rules and intel into the agent's
// directories in the background (the agent's watchers reload them). Agents
// enrolled by a server that issues no API token skip it.
func (l *agentLink) syncDistribution(ctx context.Context, serverURL, caFingerprint, dataDir, rulesDir, intelDir string, every time.Duration) error {
	if l.creds.APIToken == "" {
		l.log.Info("server distributes no rules or intel to this agent (no API token in its credentials)")
		return nil
	}
	if rulesDir == "" {
		rulesDir = filepath.Join(dataDir, "rules")
	}
	if intelDir == "" {
		intelDir = filepath.Join(dataDir, "intel")
	}
	var client *http.Client
	if caFingerprint != "" {
		client = transport.PinnedHTTPClient(caFingerprint, time.Minute)
	}
	s, err := rulesync.New(rulesync.Config{BaseURL: serverURL, Token: l.creds.APIToken, Client: client,
		Dirs: map[string]string{"rules": rulesDir, "intel": intelDir}, Interval: every, Logger: l.log})
	if err != nil {
		return err
	}
	go s.Run(ctx)
	return nil
}

// Sink publishes findings; Publish never blocks (it spools).
func (l *agentLink) Sink(f *finding.Finding, isNew bool) {
	if _, err := l.pub.Publish(transport.KindFinding, f); err != nil {
		l.log.Warn("publish finding", "id", f.ID, "err", err)
	}
}

// heartbeats publishes the agent's health every interval until ctx ends,
// and a last one saying it stopped.
func (l *agentLink) heartbeats(ctx context.Context, a *agent.Agent, info agent.HeartbeatInfo, exit func() *coverage.Exit) {
	t := time.NewTicker(info.Interval)
	defer t.Stop()
	var elide coverage.HookElision
	for {
		l.sendHeartbeat(a, info, &elide, nil)
		select {
		case <-ctx.Done():
			// The last one says the agent is stopping and why, so the node
			// reads "agent exited ..." at once instead of "not reporting" a
			// few intervals later, as after a crash.
			l.sendHeartbeat(a, info, &elide, exit())
			return
		case <-t.C:
		}
	}
}

func (l *agentLink) sendHeartbeat(a *agent.Agent, info agent.HeartbeatInfo, elide *coverage.HookElision, exit *coverage.Exit) {
	hb := a.Heartbeat(info)
	// Findings the transport lost count like events the sensor lost.
	for k, v := range l.pub.Stats().Losses() {
		hb.Drops[k] = v
	}
	elide.Apply(&hb)
	hb.Exit = exit
	if _, err := l.pub.Publish(transport.KindHeartbeat, hb); err != nil {
		l.log.Warn("publish heartbeat", "err", err)
	}
}

// Close flushes what it can and stops the publisher; the rest stays spooled.
func (l *agentLink) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = l.pub.Flush(ctx)
	_ = l.pub.Close(ctx)
}

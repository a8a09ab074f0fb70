package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mamori-dev/mamori/internal/agent"
	"github.com/mamori-dev/mamori/internal/finding"
	"github.com/mamori-dev/mamori/internal/transport"
)

// bus is the server side of the agent transport: the embedded NATS
// JetStream server, enrollment and the consumer feeding ingest.
type bus struct {
	emb    *transport.Embedded
	nc     *nats.Conn
	tokens *transport.Tokens
}

// startBus starts the embedded NATS server, mounts enrollment on mux and
// consumes agent messages into handler. It keeps a multi-use join token in
// DATA_DIR/join-token (0600) for agents on other hosts.
func startBus(ctx context.Context, dataDir, host string, port int, mux *http.ServeMux, handler transport.Handler,
	reg prometheus.Registerer, log *slog.Logger) (*bus, error) {
	m := transport.NewMetrics(reg)
	emb, err := transport.StartEmbedded(transport.EmbeddedConfig{DataDir: dataDir, Host: host, Port: port, Logger: log, ServerName: "mamori"})
	if err != nil {
		return nil, fmt.Errorf("start NATS: %w", err)
	}
	b := &bus{emb: emb}
	fail := func(err error) (*bus, error) { b.Close(); return nil, err }
	if b.nc, err = emb.ConnectInProcess("mamori-server"); err != nil {
		return fail(fmt.Errorf("connect to NATS: %w", err))
	}
	js, err := jetstream.New(b.nc)
	if err != nil {
		return fail(err)
	}
	if _, err := transport.EnsureStream(ctx, js, transport.StreamOptions{}); err != nil {
		return fail(err)
	}
	toks, err := transport.NewKVStore[transport.TokenRecord](ctx, js, transport.TokenBucket, 1)
	if err != nil {
		return fail(err)
	}
	nodes, err := transport.NewKVStore[transport.NodeRecord](ctx, js, transport.NodeBucket, 1)
	if err != nil {
		return fail(err)
	}
	b.tokens = transport.NewTokens(toks)
	enr, err := transport.NewEnroller(transport.EnrollerConfig{Auth: emb.Auth, Tokens: b.tokens, Nodes: nodes,
		NATSURLs: []string{emb.ClientURL()}, CAPEM: emb.TLS.CAPEM, Revoke: emb.RevokeUser, Metrics: m, Logger: log})
	if err != nil {
		return fail(err)
	}
	mux.Handle(transport.EnrollPath, enr)
	cons, err := transport.NewConsumer(ctx, js, transport.ConsumerConfig{Handler: handler, Concurrency: 64, Metrics: m, Logger: log})
	if err != nil {
		return fail(err)
	}
	go func() {
		if err := cons.Run(ctx); err != nil && ctx.Err() == nil {
			log.Error("transport consumer", "err", err)
		}
	}()
	if err := b.writeJoinToken(ctx, filepath.Join(dataDir, "join-token")); err != nil {
		return fail(err)
	}
	log.Info("agent transport", "nats", emb.ClientURL(), "joinTokenFile", filepath.Join(dataDir, "join-token"))
	return b, nil
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

// Close stops the NATS connection and server.
func (b *bus) Close() {
	if b.nc != nil {
		b.nc.Close()
	}
	if b.emb != nil {
		b.emb.Shutdown()
	}
}

// agentLink is the agent side: enrollment and the publisher.
type agentLink struct {
	pub *transport.Publisher
	log *slog.Logger
}

// connectAgent loads the node's credentials from dataDir, enrolling with
// token at serverURL first when there are none, and starts a publisher
// that spools to dataDir/spool while the server is away.
func connectAgent(ctx context.Context, dataDir, nodeID, serverURL, token string, reg prometheus.Registerer, log *slog.Logger) (*agentLink, error) {
	creds, err := transport.LoadCredentials(dataDir)
	if err != nil || creds.NodeID != nodeID {
		if token == "" {
			return nil, fmt.Errorf("agent is not enrolled: pass --join-token (the server keeps one in its DATA_DIR/join-token)")
		}
		creds, err = transport.Enroll(ctx, transport.EnrollOptions{URL: strings.TrimSuffix(serverURL, "/") + transport.EnrollPath,
			Token: token, NodeID: nodeID})
		if err != nil {
			return nil, err
		}
		if err := transport.SaveCredentials(dataDir, creds); err != nil {
			return nil, err
		}
	}
	pub, err := transport.NewPublisher(transport.PublisherConfig{Creds: creds, SpoolDir: filepath.Join(dataDir, "spool"),
		Metrics: transport.NewMetrics(reg), Logger: log})
	if err != nil {
		return nil, fmt.Errorf("publisher: %w", err)
	}
	return &agentLink{pub: pub, log: log}, nil
}

// Sink publishes findings; Publish never blocks (it spools).
func (l *agentLink) Sink(f *finding.Finding, isNew bool) {
	if _, err := l.pub.Publish(transport.KindFinding, f); err != nil {
		l.log.Warn("publish finding", "id", f.ID, "err", err)
	}
}

// heartbeats publishes the agent's health every interval until ctx ends,
// and a last one saying it stopped.
func (l *agentLink) heartbeats(ctx context.Context, a *agent.Agent, info agent.HeartbeatInfo) {
	t := time.NewTicker(info.Interval)
	defer t.Stop()
	for {
		if _, err := l.pub.Publish(transport.KindHeartbeat, a.Heartbeat(info)); err != nil {
			l.log.Warn("publish heartbeat", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Close flushes what it can and stops the publisher; the rest stays spooled.
func (l *agentLink) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = l.pub.Flush(ctx)
	_ = l.pub.Close(ctx)
}

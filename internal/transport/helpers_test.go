package transport

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// testLogger logs warnings and errors into the test's output.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// testBus is a real embedded NATS server with the MAMORI stream and an
// enrollment endpoint.
type testBus struct {
	t       testing.TB
	dir     string
	port    int
	emb     *Embedded
	nc      *nats.Conn // in-process server connection
	js      jetstream.JetStream
	tokens  *Tokens
	enrol   *Enroller
	http    *httptest.Server
	metrics *Metrics
}

func startBus(t testing.TB, dir string, port int) *testBus {
	t.Helper()
	b := &testBus{t: t, dir: dir, metrics: NewMetrics(nil)}
	b.start(port)
	t.Cleanup(b.stop)
	return b
}

func (b *testBus) start(port int) {
	t := b.t
	t.Helper()
	emb, err := StartEmbedded(EmbeddedConfig{DataDir: b.dir, Port: port, Logger: quietLogger()})
	if err != nil {
		t.Fatalf("start embedded: %v", err)
	}
	b.emb, b.port = emb, emb.Port()
	if b.nc, err = emb.ConnectInProcess("test-server"); err != nil {
		t.Fatal(err)
	}
	if b.js, err = jetstream.New(b.nc); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := EnsureStream(ctx, b.js, StreamOptions{Duplicates: time.Hour}); err != nil {
		t.Fatal(err)
	}
	tokStore, err := NewKVStore[TokenRecord](ctx, b.js, TokenBucket, 1)
	if err != nil {
		t.Fatal(err)
	}
	nodes, err := NewKVStore[NodeRecord](ctx, b.js, NodeBucket, 1)
	if err != nil {
		t.Fatal(err)
	}
	b.tokens = NewTokens(tokStore)
	b.enrol, err = NewEnroller(EnrollerConfig{Auth: emb.Auth, Tokens: b.tokens, Nodes: nodes,
		NATSURLs: []string{emb.ClientURL()}, CAPEM: emb.TLS.CAPEM, Revoke: emb.RevokeUser, Metrics: b.metrics, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if b.http == nil {
		b.http = httptest.NewServer(b.enrol)
	} else {
		b.http.Config.Handler = b.enrol
	}
}

// down stops NATS (the enrollment HTTP server stays).
func (b *testBus) down() {
	if b.nc != nil {
		b.nc.Close()
		b.nc = nil
	}
	if b.emb != nil {
		b.emb.Shutdown()
		b.emb = nil
	}
}

func (b *testBus) stop() {
	b.down()
	if b.http != nil {
		b.http.Close()
		b.http = nil
	}
}

// enroll enrolls nodeID over HTTP with a fresh single-use token.
func (b *testBus) enroll(nodeID string) *Credentials {
	b.t.Helper()
	ctx := context.Background()
	tok, _, err := b.tokens.Create(ctx, TokenOptions{Description: "test " + nodeID})
	if err != nil {
		b.t.Fatal(err)
	}
	c, err := Enroll(ctx, EnrollOptions{URL: b.http.URL + EnrollPath, Token: tok, NodeID: nodeID})
	if err != nil {
		b.t.Fatalf("enroll %s: %v", nodeID, err)
	}
	return c
}

// collector is a Handler that records every message it is given.
type collector struct {
	mu   sync.Mutex
	msgs []*Message
	byID map[string]int
}

func newCollector() *collector { return &collector{byID: map[string]int{}} }

func (c *collector) handle(_ context.Context, m *Message) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.msgs = append(c.msgs, m)
	c.byID[m.DedupKey()]++
	return nil
}

func (c *collector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.msgs)
}

// runConsumer runs a consumer with handler until the test ends.
func (b *testBus) runConsumer(cfg ConsumerConfig) *Consumer {
	b.t.Helper()
	if cfg.Metrics == nil {
		cfg.Metrics = b.metrics
	}
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	ctx, cancel := context.WithCancel(context.Background())
	cons, err := NewConsumer(ctx, b.js, cfg)
	if err != nil {
		b.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cons.Run(ctx); close(done) }()
	b.t.Cleanup(func() { cancel(); <-done })
	return cons
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func jsonMarshal(v any) ([]byte, error)   { return json.Marshal(v) }
func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// startPublisher opens a publisher with cfg, closes it when the test ends,
// and waits until it is connected.
func startPublisher(t *testing.T, cfg PublisherConfig) *Publisher {
	t.Helper()
	p, err := NewPublisher(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close(context.Background()) })
	waitFor(t, "connected", 10*time.Second, func() bool { return p.Stats().Connected })
	return p
}

package transport

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// agentConn connects with an agent's credentials the way Publisher does,
// recording asynchronous errors (permission violations arrive that way).
func agentConn(t *testing.T, c *Credentials, errs chan<- error, extra ...nats.Option) *nats.Conn {
	t.Helper()
	tc, err := ClientTLSConfig(c.CAPEM)
	if err != nil {
		t.Fatal(err)
	}
	opts := append([]nats.Option{nats.UserJWTAndSeed(c.JWT, c.Seed), nats.Secure(tc),
		nats.CustomInboxPrefix(AgentInboxPrefix(c.NodeID)),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case errs <- err:
			default:
			}
		})}, extra...)
	nc, err := nats.Connect(c.NATSURLs[0], opts...)
	if err != nil {
		t.Fatalf("connect as %s: %v", c.NodeID, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func TestEndToEndPublishConsume(t *testing.T) {
	b := startBus(t, t.TempDir(), -1)
	creds := b.enroll("node-a")
	col := newCollector()
	b.runConsumer(ConsumerConfig{Handler: col.handle})

	m := NewMetrics(nil)
	p, err := NewPublisher(PublisherConfig{Creds: creds, SpoolDir: t.TempDir(), Metrics: m, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	waitFor(t, "publisher connected", 10*time.Second, func() bool { return p.Stats().Connected })

	ids := map[string]Kind{}
	for i, k := range []Kind{KindFinding, KindHeartbeat, KindEvent} {
		id, err := p.Publish(k, map[string]any{"n": i, "type": "Test:Runtime/Thing"})
		if err != nil {
			t.Fatalf("publish %s: %v", k, err)
		}
		ids[msgIDHeader("node-a", id)] = k
	}
	waitFor(t, "3 messages consumed", 10*time.Second, func() bool { return col.count() == 3 })
	for _, msg := range col.msgs {
		k, ok := ids[msg.DedupKey()]
		if !ok || k != msg.Envelope.Kind || msg.Envelope.NodeID != "node-a" || msg.Subject != SubjectFor("node-a", k) {
			t.Errorf("unexpected message %+v", msg.Envelope)
		}
	}
	// The publisher's ack may be processed after the consumer has the message.
	waitFor(t, "3 acks", 5*time.Second, func() bool { return p.Stats().Published == 3 })
	if got := testutil.ToFloat64(m.Published.WithLabelValues("finding")); got != 1 {
		t.Errorf("published_total{finding} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(b.metrics.Consumed.WithLabelValues("heartbeat")); got != 1 {
		t.Errorf("consumed_total{heartbeat} = %v, want 1", got)
	}
}

// An agent's credential cannot publish as another agent: the NATS server
// refuses the publish (permission violation) and nothing reaches the stream.
func TestAgentCannotPublishAsAnother(t *testing.T) {
	b := startBus(t, t.TempDir(), -1)
	credsA := b.enroll("node-a")
	b.enroll("node-b")
	errs := make(chan error, 16)
	nc := agentConn(t, credsA, errs)

	// A well-formed envelope claiming to be node-b, on node-b's subject.
	env, err := NewEnvelope("node-b", KindFinding, map[string]string{"type": "Forged"})
	if err != nil {
		t.Fatal(err)
	}
	data, _ := env.Encode()
	msg := nats.NewMsg(SubjectFor("node-b", KindFinding))
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, msgIDHeader("node-b", env.MsgID))
	if err := nc.PublishMsg(msg); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errs:
		if !errors.Is(err, nats.ErrPermissionViolation) {
			t.Fatalf("async error = %v, want a permission violation", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no permission violation reported for publishing on node-b's subject")
	}

	// JetStream publish (with ack) gets no ack either: nothing was stored.
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := js.PublishMsg(ctx, msg); err == nil {
		t.Fatal("JetStream acknowledged a publish on another node's subject")
	}
	// Nor may the agent use the JetStream API (read, delete, create consumers).
	if _, err := js.Stream(ctx, StreamName); err == nil {
		t.Fatal("agent could call the JetStream API")
	}
	// Nor read other agents' traffic.
	if _, err := nc.SubscribeSync("mamori.agent.>"); err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	waitFor(t, "subscribe permission violation", 5*time.Second, func() bool {
		select {
		case err := <-errs:
			return errors.Is(err, nats.ErrPermissionViolation)
		default:
			return false
		}
	})

	st, err := b.js.Stream(context.Background(), StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 0 {
		t.Fatalf("stream holds %d messages after forged publishes, want 0", info.State.Msgs)
	}

	// The agent's own subject works over the same connection.
	own := nats.NewMsg(SubjectFor("node-a", KindFinding))
	own.Data = mustEncode(t, "node-a", KindFinding)
	ack, err := js.PublishMsg(context.Background(), own)
	if err != nil {
		t.Fatalf("publish on own subject: %v", err)
	}
	if ack.Stream != StreamName {
		t.Fatalf("ack from stream %q", ack.Stream)
	}
}

// Without credentials, or without TLS, the server refuses the connection.
func TestConnectionNeedsCredsAndTLS(t *testing.T) {
	b := startBus(t, t.TempDir(), -1)
	creds := b.enroll("node-a")
	tc, _ := ClientTLSConfig(creds.CAPEM)
	if nc, err := nats.Connect(creds.NATSURLs[0], nats.Secure(tc)); err == nil {
		nc.Close()
		t.Fatal("connected without credentials")
	}
	plain := "nats://" + creds.NATSURLs[0][len("tls://"):]
	if nc, err := nats.Connect(plain, nats.UserJWTAndSeed(creds.JWT, creds.Seed)); err == nil {
		nc.Close()
		t.Fatal("connected without TLS")
	}
	// A CA other than the pinned one is not trusted.
	other, err := LoadOrCreateTLS(t.TempDir(), []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	otc, _ := ClientTLSConfig(other.CAPEM)
	if nc, err := nats.Connect(creds.NATSURLs[0], nats.Secure(otc), nats.UserJWTAndSeed(creds.JWT, creds.Seed)); err == nil {
		nc.Close()
		t.Fatal("connected while trusting a foreign CA")
	}
}

func mustEncode(t testing.TB, nodeID string, kind Kind) []byte {
	t.Helper()
	env, err := NewEnvelope(nodeID, kind, map[string]string{"x": "y"})
	if err != nil {
		t.Fatal(err)
	}
	data, err := env.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// A compromised agent publishing on its own subject an envelope that claims
// to come from another node gets through NATS (it is its subject) but not
// through the consumer.
func TestAgentForgedEnvelopeRejected(t *testing.T) {
	b := startBus(t, t.TempDir(), -1)
	creds := b.enroll("node-a")
	col := newCollector()
	b.runConsumer(ConsumerConfig{Handler: col.handle})
	nc := agentConn(t, creds, make(chan error, 4))
	js, _ := jetstream.New(nc)
	env, _ := NewEnvelope("node-b", KindFinding, map[string]string{"type": "Forged"})
	data, _ := env.Encode()
	msg := nats.NewMsg(SubjectFor("node-a", KindFinding))
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, msgIDHeader("node-a", env.MsgID))
	if _, err := js.PublishMsg(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "rejection", 5*time.Second, func() bool {
		return testutil.ToFloat64(b.metrics.Rejected.WithLabelValues(ReasonNodeMismatch)) == 1
	})
	if col.count() != 0 {
		t.Fatal("forged envelope reached the handler")
	}
}

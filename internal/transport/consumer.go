package transport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Message is one verified agent message handed to a server Handler.
type Message struct {
	Envelope     *Envelope
	Subject      string
	StreamSeq    uint64
	NumDelivered uint64 // 1 on first delivery
	// Stored is when the stream took the message, on NATS's clock (zero
	// when unknown): unlike the envelope's times, not the agent's word.
	Stored time.Time
}

// DedupKey identifies the message across redeliveries and replays: use it as
// the idempotency key of the server-side upsert.
func (m *Message) DedupKey() string { return msgIDHeader(m.Envelope.NodeID, m.Envelope.MsgID) }

// Handler processes one message. Returning nil acks it; an error naks it for
// redelivery with backoff, until MaxDeliver deliveries; an error wrapped by
// Permanent terminates it (no retry, counted as rejected with reason
// "handler"); one wrapped by Unavailable is retried without limit.
type Handler func(ctx context.Context, m *Message) error

type permanentError struct{ err error }

func (p permanentError) Error() string { return p.err.Error() }
func (p permanentError) Unwrap() error { return p.err }

// Permanent marks a handler error as not worth retrying.
func Permanent(err error) error { return permanentError{err} }

// IsPermanent reports whether err (or an error it wraps) came from Permanent.
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}

type unavailableError struct{ err error }

func (u unavailableError) Error() string { return u.err.Error() }
func (u unavailableError) Unwrap() error { return u.err }

// Unavailable marks a handler error as the server's own dependency being
// down (its database, its disk): the message is not at fault, so it is
// retried for as long as the outage lasts — never given up after
// MaxDeliver — and the consumer slows its pulls meanwhile.
func Unavailable(err error) error { return unavailableError{err} }

// IsUnavailable reports whether err (or an error it wraps) came from Unavailable.
func IsUnavailable(err error) bool {
	var u unavailableError
	return errors.As(err, &u)
}

// ConsumerConfig configures a server-side consumer. Zero values take defaults.
type ConsumerConfig struct {
	Durable          string        // DefaultDurable; replicas sharing a name share the work
	Handler          Handler       // required
	Concurrency      int           // handlers running at once in this replica: 4
	MaxDeliver       int           // failures of its own before giving up on a message (an outage's are not counted): 10
	AckWait          time.Duration // redelivery after a silent handler: 30s
	BackoffBase      time.Duration // first nak delay: 1s, doubling per delivery
	BackoffMax       time.Duration // nak delay cap: 1m
	MaxEnvelopeBytes int           // MaxEnvelopeBytes
	MaxAge           time.Duration // older sentAt is rejected as stale: 14 days
	MaxFuture        time.Duration // sentAt further ahead is rejected: 5m
	ReplayCache      int           // handled dedup keys remembered per replica: 100000
	Metrics          *Metrics
	Logger           *slog.Logger
}

// Consumer pulls agent messages from the MAMORI stream's durable consumer,
// verifies them and runs the Handler. Several replicas with the same Durable
// split the messages between them: each is handled by one replica.
type Consumer struct {
	cfg  ConsumerConfig
	cons jetstream.Consumer
	m    *Metrics
	log  *slog.Logger
	seen *seenSet

	logMu   sync.Mutex
	lastLog map[string]time.Time

	health *health
}

// NewConsumer creates or updates the durable consumer on the MAMORI stream
// (which must exist: see EnsureStream).
func NewConsumer(ctx context.Context, js jetstream.JetStream, cfg ConsumerConfig) (*Consumer, error) {
	if cfg.Handler == nil {
		return nil, errors.New("consumer: no handler")
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	if cfg.Durable == "" {
		cfg.Durable = DefaultDurable
	}
	def(&cfg.Concurrency, 4)
	def(&cfg.MaxDeliver, 10)
	def(&cfg.MaxEnvelopeBytes, MaxEnvelopeBytes)
	def(&cfg.ReplayCache, 100000)
	defDur(&cfg.AckWait, 30*time.Second)
	defDur(&cfg.BackoffBase, time.Second)
	defDur(&cfg.BackoffMax, time.Minute)
	defDur(&cfg.MaxAge, 14*24*time.Hour)
	defDur(&cfg.MaxFuture, 5*time.Minute)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, StreamName, jetstream.ConsumerConfig{
		Durable:     cfg.Durable,
		Description: "mamori server ingest",
		AckPolicy:   jetstream.AckExplicitPolicy,
		AckWait:     cfg.AckWait,
		// Unlimited in JetStream: the consumer gives up on a message itself
		// after cfg.MaxDeliver failures of its own, not counting those of an
		// outage of the server's database or disk (Unavailable) — a limit
		// here would drop findings after a few minutes of database outage.
		// (A replica of an older version sets 10 again when it restarts.)
		MaxDeliver: -1,
		// Room for a few replicas' handlers and their next pull, and no
		// more: messages pulled beyond what the handlers can finish within
		// AckWait would be redelivered while still queued, and redelivery
		// under overload makes the overload worse.
		MaxAckPending: cfg.Concurrency * 8,
	})
	if err != nil {
		return nil, fmt.Errorf("consumer %s: %w", cfg.Durable, err)
	}
	return &Consumer{cfg: cfg, cons: cons, m: orNewMetrics(cfg.Metrics), log: cfg.Logger,
		seen: newSeenSet(cfg.ReplayCache), lastLog: map[string]time.Time{}, health: newHealth(cfg.BackoffBase, cfg.BackoffMax)}, nil
}

// fetchWait is how long one pull waits for messages before it is renewed.
const fetchWait = 5 * time.Second

// Run consumes until ctx is cancelled, then waits for running handlers.
//
// It pulls with explicit Fetch requests, one batch after another, instead of
// jetstream's Consume: Consume can skip re-pulling when a batch ends while
// its previous pull request is still being sent, and then sits idle until
// its heartbeat check fires (seen under load right after a server restart).
func (c *Consumer) Run(ctx context.Context) error {
	work := make(chan jetstream.Msg)
	var wg sync.WaitGroup
	for range c.cfg.Concurrency {
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case msg := <-work:
					if ctx.Err() != nil {
						_ = msg.Nak() // shutting down: let another replica have it now
						continue
					}
					c.process(ctx, msg)
				}
			}
		})
	}
	// The fetch loop is not waited for: a pull in progress ends by itself
	// within fetchWait, and what it still receives is nak'ed.
	go c.fetchLoop(ctx, work)
	<-ctx.Done()
	wg.Wait()
	return nil
}

func (c *Consumer) fetchLoop(ctx context.Context, work chan<- jetstream.Msg) {
	batch := c.cfg.Concurrency // at most one batch waits for the handlers
	for ctx.Err() == nil {
		if wait := c.health.pausedFor(time.Now()); wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		b, err := c.cons.Fetch(batch, jetstream.FetchMaxWait(fetchWait))
		if err == nil {
			for msg := range b.Messages() {
				select {
				case work <- msg:
				case <-ctx.Done():
					_ = msg.Nak()
				}
			}
			err = b.Error()
		}
		if err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
			if c.shouldLog("pull") {
				c.log.Warn("consumer: pull failed; retrying", "err", err)
			}
			// Server away or restarting: do not spin.
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
}

func (c *Consumer) process(ctx context.Context, msg jetstream.Msg) {
	m, err := c.verify(msg)
	if err != nil {
		reason := RejectReason(err)
		c.m.Rejected.WithLabelValues(reason).Inc()
		c.logReject(reason, msg.Subject(), err)
		_ = msg.TermWithReason(reason)
		return
	}
	started := time.Now()
	err = c.handle(ctx, m)
	if err == nil {
		if aerr := msg.Ack(); aerr != nil {
			c.log.Warn("consumer: ack failed; message will be redelivered", "err", aerr)
			return
		}
		c.seen.add(m.DedupKey())
		c.m.Consumed.WithLabelValues(string(m.Envelope.Kind)).Inc()
		if m.Envelope.Kind != KindEvent {
			// Findings and heartbeats are stored: their success says the
			// server works. Events may be acked unstored, so say nothing.
			c.health.succeeded(m.StreamSeq, started)
		}
		return
	}
	if IsPermanent(err) {
		c.health.forget(m.StreamSeq)
		c.m.Rejected.WithLabelValues("handler").Inc()
		c.logReject("handler", msg.Subject(), err)
		_ = msg.TermWithReason("handler: " + err.Error())
		return
	}
	if ctx.Err() != nil {
		_ = msg.Nak() // shutting down, not the message's fault: another replica may have it now
		return
	}
	if IsUnavailable(err) && m.NumDelivered < maxDeliveries {
		if wait, ok := c.health.outage(m.StreamSeq, started, time.Now()); ok {
			c.m.HandlerErrors.Inc()
			if c.shouldLog("unavailable") {
				c.log.Warn("consumer: the server cannot store agent messages now; they wait in the stream and are retried",
					"retryIn", wait, "err", err)
			}
			_ = msg.NakWithDelay(wait)
			return
		}
		// Other messages succeeded meanwhile: the failure is this message's own.
	}
	n := c.health.failed(m.StreamSeq)
	if n >= c.cfg.MaxDeliver || m.NumDelivered >= maxDeliveries {
		c.health.forget(m.StreamSeq)
		c.m.DeadLettered.Inc()
		c.log.Error("consumer: giving up on message after its handler failed repeatedly", "subject", msg.Subject(),
			"msgId", m.Envelope.MsgID, "failures", n, "deliveries", m.NumDelivered, "err", err)
		_ = msg.TermWithReason("max deliveries")
		return
	}
	c.m.HandlerErrors.Inc()
	delay := min(c.cfg.BackoffBase<<min(n-1, 20), c.cfg.BackoffMax)
	if c.shouldLog("handler") {
		c.log.Warn("consumer: handler failed, retrying", "subject", msg.Subject(),
			"failures", n, "retryIn", delay, "err", err)
	}
	_ = msg.NakWithDelay(delay)
}

// maxDeliveries gives up on a message delivered this often whatever the
// cause: at the longest pause that is over 16 hours of outage, and it ends
// a loop of a message that crashes the server (a crash forgets its count).
const maxDeliveries = 2000

// handle runs the handler within AckWait; a panic is the message's failure.
func (c *Consumer) handle(ctx context.Context, m *Message) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("handler panicked: %v", r)
			c.log.Error("consumer: handler panicked", "subject", m.Subject, "msgId", m.Envelope.MsgID, "panic", r)
		}
	}()
	hctx, cancel := context.WithTimeout(ctx, c.cfg.AckWait)
	defer cancel()
	return c.cfg.Handler(hctx, m)
}

// Outage returns the server's current or last outage as this consumer saw
// it — its handlers reported it Unavailable with nothing succeeding
// meanwhile — zero times when none; until is zero while it lasts.
func (c *Consumer) Outage() (since, until time.Time) { return c.health.Outage() }

// LastStored is when this consumer last handled a finding or heartbeat
// (its handler's start; zero: none yet): the database worked then.
func (c *Consumer) LastStored() time.Time { return c.health.LastStored() }

// verify turns a raw stream message into a Message, or a *RejectError.
func (c *Consumer) verify(msg jetstream.Msg) (*Message, error) {
	data := msg.Data()
	if len(data) > c.cfg.MaxEnvelopeBytes {
		return nil, reject(ReasonOversized, "message is %d bytes, limit %d", len(data), c.cfg.MaxEnvelopeBytes)
	}
	nodeID, kind, err := ParseSubject(msg.Subject())
	if err != nil {
		return nil, reject(ReasonSubject, "%v", err)
	}
	env, err := DecodeEnvelope(data, c.cfg.MaxEnvelopeBytes)
	if err != nil {
		return nil, err
	}
	// The subject is what NATS permissions enforce; the envelope must agree with it.
	if env.NodeID != nodeID {
		return nil, reject(ReasonNodeMismatch, "envelope nodeId %q on subject of node %q", env.NodeID, nodeID)
	}
	if env.Kind != kind {
		return nil, reject(ReasonKindMismatch, "envelope kind %q on %s subject", env.Kind, kind)
	}
	if h := msg.Headers().Get(jetstream.MsgIDHeader); h != msgIDHeader(nodeID, env.MsgID) {
		return nil, reject(ReasonHeader, "Nats-Msg-Id %q does not match the envelope", h)
	}
	now := time.Now()
	if env.SentAt.Before(now.Add(-c.cfg.MaxAge)) {
		return nil, reject(ReasonStale, "sent at %s, older than %s", env.SentAt.Format(time.RFC3339), c.cfg.MaxAge)
	}
	if env.SentAt.After(now.Add(c.cfg.MaxFuture)) {
		return nil, reject(ReasonFuture, "sent at %s, in the future", env.SentAt.Format(time.RFC3339))
	}
	m := &Message{Envelope: env, Subject: msg.Subject()}
	if md, err := msg.Metadata(); err == nil {
		m.StreamSeq, m.NumDelivered, m.Stored = md.Sequence.Stream, md.NumDelivered, md.Timestamp
	}
	if c.seen.has(m.DedupKey()) {
		return nil, reject(ReasonReplay, "message %s already handled", m.DedupKey())
	}
	return m, nil
}

// logReject logs at most one rejection per reason per second, so a hostile
// flood cannot flood the log too; the metric counts every one.
func (c *Consumer) logReject(reason, subject string, err error) {
	if !c.shouldLog(reason) {
		return
	}
	c.log.Warn("consumer: message rejected", "reason", reason, "subject", fmt.Sprintf("%q", subject), "err", err)
}

// shouldLog allows one log line per key per second.
func (c *Consumer) shouldLog(key string) bool {
	c.logMu.Lock()
	defer c.logMu.Unlock()
	now := time.Now()
	if now.Sub(c.lastLog[key]) < time.Second {
		return false
	}
	c.lastLog[key] = now
	return true
}

// seenSet remembers the last n keys (first in, first out).
type seenSet struct {
	mu   sync.Mutex
	keys map[string]struct{}
	ring []string
	next int
}

func newSeenSet(n int) *seenSet {
	return &seenSet{keys: make(map[string]struct{}, n), ring: make([]string, n)}
}

func (s *seenSet) has(k string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.keys[k]
	return ok
}

func (s *seenSet) add(k string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.keys[k]; ok {
		return
	}
	if old := s.ring[s.next]; old != "" {
		delete(s.keys, old)
	}
	s.ring[s.next] = k
	s.keys[k] = struct{}{}
	s.next = (s.next + 1) % len(s.ring)
}

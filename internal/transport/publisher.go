package transport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// PublisherConfig configures an agent's Publisher. Zero values take defaults.
type PublisherConfig struct {
	Creds          *Credentials  // required: from Enroll / LoadCredentials
	SpoolDir       string        // required: e.g. <data-dir>/spool
	SpoolMaxBytes  int64         // DefaultSpoolMaxBytes
	AckTimeout     time.Duration // a publish not acked by then is spooled: 5s
	MaxPending     int           // async publishes in flight: 1024
	ReplayInterval time.Duration // spool replay retry period: 2s
	BackoffBase    time.Duration // first pause after the server refuses for now: 250ms, doubling per failed probe
	BackoffMax     time.Duration // longest pause: 10s
	ReconnectWait  time.Duration // between reconnect attempts: 1s
	// Locate, when set, asks where agents reach the bus now (the server's
	// API: CurrentNATSURLs). After FollowAfter without a connection, and
	// then every FollowAfter while it lasts, the publisher asks, and moves
	// to the URLs it answers when they differ from the ones it dials;
	// OnMove is then called with them (to keep them for the next start).
	Locate      func(ctx context.Context) ([]string, error)
	OnMove      func(urls []string)
	FollowAfter time.Duration // 2m
	// AskAtStart makes the first ask as soon as the publisher finds itself
	// without the bus (the agent's start found it silent), not after
	// FollowAfter; the agent's start does not wait for the answer.
	AskAtStart  bool
	Metrics     *Metrics
	Logger      *slog.Logger
	NATSOptions []nats.Option // appended last (tests)
}

// PublisherStats is a snapshot of a Publisher's counters, for heartbeats and
// coverage issues.
type PublisherStats struct {
	Connected     bool
	Published     uint64 // acked on the live path
	Replayed      uint64 // acked from the spool
	Spooled       uint64 // went to the spool (disconnected, timeout, server refused for now)
	Rejected      uint64 // refused by the server for good (4xx): dropped
	BackingOff    bool   // the server refused for now; new messages are spooled until a probe succeeds
	PermissionErr uint64 // the NATS server refused a publish or subscription
	Spool         SpoolStats
}

// Losses are the messages this publisher lost since it started, by where:
// "spool" (findings and events the spool's bound, a full disk or a write
// error evicted or refused) and "rejected" (messages the server refused
// for good). The agent's heartbeat carries them as drop counters, so
// coverage names a node that loses findings. Heartbeats the spool gave up
// are left out: it drops them first by design, they are stale by the time
// they would be replayed, and the silence they leave is judged already.
func (s PublisherStats) Losses() map[string]uint64 {
	var spool uint64
	for k, n := range s.Spool.Dropped {
		if k != KindHeartbeat {
			spool += n
		}
	}
	return map[string]uint64{"spool": spool, "rejected": s.Rejected}
}

// Publisher sends an agent's messages to the MAMORI stream. Publish does not
// wait for acks: it hands the message to NATS asynchronously (stalling at
// most ~200ms when MaxPending publishes are already in flight), and
// whatever is not acknowledged (disconnected, ack timeout, stream full) goes
// to the on-disk spool, which a background loop replays once the connection
// is back. While the server refuses messages for now it backs off (see
// pacer): new messages go straight to the spool, and replay resumes with a
// small window that grows as acks come back. Every message carries a
// Nats-Msg-Id, so a replay of a message the server did get is discarded by
// JetStream (within the de-duplication window) and by the server's
// idempotent upsert keyed by Message.DedupKey.
type Publisher struct {
	cfg    PublisherConfig
	nodeID string
	m      *Metrics
	log    *slog.Logger
	opts   []nats.Option
	link   atomic.Pointer[link] // the connection in use; replaced when the bus moves
	spool  *Spool
	pace   *pacer
	window int // replay publishes in flight at once; owned by replayLoop

	kick chan struct{}
	stop chan struct{}
	wg   sync.WaitGroup

	// inflight holds live publishes awaiting their ack, by dedup id. Whoever
	// removes an entry (ack, error callback, Close, a move) owns its fate, so each
	// message is counted or spooled exactly once, even when nats.go reports
	// a failure concurrently with Close.
	mu       sync.Mutex
	inflight map[string]inflightRecord
	// closing (under mu) stops the error callback from taking records;
	// spooling counts the callbacks that took one and are spooling it, so
	// Close waits for them before it closes the spool (a callback racing
	// Close lost its message to the closed spool).
	closing  bool
	spooling sync.WaitGroup

	published, replayed, spooled, rejected, permErr atomic.Uint64
	closeOnce                                       sync.Once
}

// link is one connection to the bus and its JetStream contexts.
type link struct {
	urls   []string
	nc     *nats.Conn
	live   jetstream.JetStream // callbacks route failures to the spool
	replay jetstream.JetStream // futures: replay waits for each ack
}

// cur is the link in use.
func (p *Publisher) cur() *link { return p.link.Load() }

// dial connects to urls in the background (nats.go retries for ever).
func (p *Publisher) dial(urls []string) (*link, error) {
	nc, err := nats.Connect(strings.Join(urls, ","), p.opts...)
	if err != nil {
		return nil, fmt.Errorf("publisher: connect: %w", err)
	}
	l := &link{urls: urls, nc: nc}
	l.live, err = jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(p.cfg.MaxPending),
		jetstream.WithPublishAsyncTimeout(p.cfg.AckTimeout),
		jetstream.WithPublishAsyncAckHandler(p.onAck),
		jetstream.WithPublishAsyncErrHandler(p.onErr))
	if err == nil {
		l.replay, err = jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(p.cfg.MaxPending),
			jetstream.WithPublishAsyncTimeout(p.cfg.AckTimeout))
	}
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("publisher: %w", err)
	}
	return l, nil
}

// NewPublisher opens the spool and connects: one pass over the URLs, then
// in the background; it does not wait for the server, so an agent starts
// (and spools) without one.
func NewPublisher(cfg PublisherConfig) (*Publisher, error) {
	if cfg.Creds == nil {
		return nil, errors.New("publisher: no credentials")
	}
	if err := cfg.Creds.Validate(); err != nil {
		return nil, fmt.Errorf("publisher: %w", err)
	}
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = 5 * time.Second
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 1024
	}
	if cfg.ReplayInterval <= 0 {
		cfg.ReplayInterval = 2 * time.Second
	}
	if cfg.ReconnectWait <= 0 {
		cfg.ReconnectWait = time.Second
	}
	if cfg.BackoffBase <= 0 {
		cfg.BackoffBase = 250 * time.Millisecond
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = 10 * time.Second
	}
	if cfg.FollowAfter <= 0 {
		cfg.FollowAfter = 2 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	p := &Publisher{cfg: cfg, nodeID: cfg.Creds.NodeID, m: orNewMetrics(cfg.Metrics),
		log: cfg.Logger.With("component", "transport"), kick: make(chan struct{}, 1), stop: make(chan struct{}),
		inflight: map[string]inflightRecord{}, pace: newPacer(cfg.BackoffBase, cfg.BackoffMax), window: maxReplayWindow}
	var err error
	if p.spool, err = OpenSpool(SpoolConfig{Dir: cfg.SpoolDir, MaxBytes: cfg.SpoolMaxBytes,
		Metrics: p.m, Logger: p.log}); err != nil {
		return nil, fmt.Errorf("publisher: %w", err)
	}
	tc, err := ClientTLSConfig(cfg.Creds.CAPEM)
	if err != nil {
		p.spool.Close()
		return nil, fmt.Errorf("publisher: %w", err)
	}
	opts := []nats.Option{
		nats.Name("mamori-agent " + p.nodeID),
		nats.UserJWTAndSeed(cfg.Creds.JWT, cfg.Creds.Seed),
		nats.Secure(tc),
		nats.CustomInboxPrefix(AgentInboxPrefix(p.nodeID)),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(cfg.ReconnectWait),
		nats.RetryOnFailedConnect(true),
		// No client-side reconnect buffer: while disconnected, publishes fail
		// at once and go to the bounded, counted, on-disk spool instead.
		nats.ReconnectBufSize(-1),
		nats.ConnectHandler(func(*nats.Conn) { p.log.Info("transport: connected"); p.wake() }),
		nats.ReconnectHandler(func(*nats.Conn) { p.log.Info("transport: reconnected"); p.wake() }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err == nil { // our own Close at shutdown
				p.log.Debug("transport: disconnected")
				return
			}
			p.log.Warn("transport: disconnected; spooling", "err", err)
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) {
				p.permErr.Add(1)
				p.m.PermissionErr.Inc()
			}
			p.log.Warn("transport: nats error", "err", err)
		}),
	}
	p.opts = append(opts, cfg.NATSOptions...)
	l, err := p.dial(cfg.Creds.NATSURLs)
	if err != nil {
		p.spool.Close()
		return nil, err
	}
	p.link.Store(l)
	p.wg.Go(p.replayLoop)
	p.wg.Go(p.watchConnection)
	return p, nil
}

// watchConnection warns while the publisher cannot reach the bus — after
// 30 s, then at doubling intervals up to 10 min — naming the URLs and the
// last error: nats.go retries quietly for ever, and an agent spooling for
// hours must not look like one that reports. With Locate, it also asks
// where the bus is now, and follows it (follow).
func (p *Publisher) watchConnection() {
	const first, most = 30 * time.Second, 10 * time.Minute
	t := time.NewTicker(time.Second)
	defer t.Stop()
	since, next := time.Now(), first
	var asked time.Time
	askAfter := p.cfg.FollowAfter
	if p.cfg.AskAtStart {
		askAfter = 0
	}
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
		l := p.cur()
		if l.nc.IsConnected() {
			since, next, askAfter = time.Now(), first, p.cfg.FollowAfter
			continue
		}
		down := time.Since(since)
		if p.cfg.Locate != nil && down >= askAfter && time.Since(asked) >= p.cfg.FollowAfter {
			asked, askAfter = time.Now(), p.cfg.FollowAfter
			p.follow(l)
		}
		if down >= next {
			args := []any{"for", down.Round(time.Second), "urls", strings.Join(p.cur().urls, ","), "spooled", p.spool.Stats().Messages}
			if err := l.nc.LastError(); err != nil {
				args = append(args, "err", err)
				switch {
				case strings.Contains(strings.ToLower(err.Error()), "authorization violation"):
					args = append(args, "hint", "the server refused this node's credential: it was removed or its key revoked; restart the agent with --join-token to enroll again")
				case p.cfg.Locate != nil:
					args = append(args, "hint", "the server's API is asked where NATS is now every "+p.cfg.FollowAfter.String())
				default:
					args = append(args, "hint", "if the server's NATS moved, restart the agent: at start it asks the server's API where NATS is now")
				}
			}
			p.log.Warn("transport: cannot reach the server; messages are spooled", args...)
			next = min(2*next, most)
		}
	}
}

// follow asks where the bus is now, and when the answer differs from the
// URLs old dials and a connection to it succeeds, moves there: the new link
// replaces old, which is closed. An address that does not answer is not
// taken (nor kept for the next start): old keeps retrying its own.
func (p *Publisher) follow(old *link) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go func() {
		select {
		case <-p.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	urls, err := p.cfg.Locate(ctx)
	if err != nil {
		if !p.stopping() {
			p.log.Warn("transport: cannot ask the server where NATS is now", "err", err)
		}
		return
	}
	if slices.Equal(urls, old.urls) || old.nc.IsConnected() {
		return
	}
	l, err := p.dial(urls)
	if err != nil {
		p.log.Warn("transport: cannot dial the server's new NATS address", "urls", strings.Join(urls, ","), "err", err)
		return
	}
	// The first pass of dial connects when the address answers; a little
	// more time covers a server still starting.
	for wait := time.Now().Add(min(10*time.Second, p.cfg.FollowAfter)); !l.nc.IsConnected() && ctx.Err() == nil && time.Now().Before(wait); {
		time.Sleep(100 * time.Millisecond)
	}
	if !l.nc.IsConnected() || p.stopping() || old.nc.IsConnected() {
		l.live.CleanupPublisher()
		l.nc.Close()
		if !p.stopping() && !old.nc.IsConnected() {
			p.log.Warn("transport: the server's new NATS address does not answer either; still trying the old one",
				"new", strings.Join(urls, ","), "old", strings.Join(old.urls, ","))
		}
		return
	}
	p.log.Warn("transport: the server's NATS moved; following it", "was", strings.Join(old.urls, ","), "now", strings.Join(urls, ","))
	// nats.go fails an async publish's pending ack when its connection
	// drops, so onErr has spooled those by now; whatever is still in
	// flight (old came back a moment ago) is spooled for the new link to
	// replay. What old sends after this is failed by its cleanup below,
	// and spooled by onErr.
	p.mu.Lock()
	left := p.inflight
	p.inflight = map[string]inflightRecord{}
	p.mu.Unlock()
	p.link.Store(l)
	for _, r := range left {
		if err := p.toSpool(r.Kind, r.DedupID, r.Data, "disconnected"); err != nil {
			p.log.Warn("transport: message lost", "kind", r.Kind, "err", err)
		}
	}
	old.live.CleanupPublisher()
	old.nc.Close()
	if p.cfg.OnMove != nil {
		p.cfg.OnMove(urls)
	}
	p.wake()
}

// NodeID is the node this publisher speaks for.
func (p *Publisher) NodeID() string { return p.nodeID }

// Publish wraps payload (a JSON-marshalable value or json.RawMessage
// holding an object) in an envelope and sends it. It returns the envelope's
// msgId. An error means the message is lost, and counted: it was invalid or
// too large, or the spool could not keep it (full of more valuable
// messages, disk error).
func (p *Publisher) Publish(kind Kind, payload any) (string, error) {
	env, err := NewEnvelope(p.nodeID, kind, payload)
	if err != nil {
		p.m.PublishErrors.WithLabelValues(orReason(RejectReason(err), "encode")).Inc()
		return "", fmt.Errorf("publish %s: %w", kind, err)
	}
	data, err := env.Encode()
	if err != nil {
		p.m.PublishErrors.WithLabelValues(orReason(RejectReason(err), "encode")).Inc()
		return "", fmt.Errorf("publish %s: %w", kind, err)
	}
	return env.MsgID, p.send(kind, msgIDHeader(p.nodeID, env.MsgID), data)
}

func orReason(r, def string) string {
	if r == "" {
		return def
	}
	return r
}

func (p *Publisher) send(kind Kind, dedupID string, data []byte) error {
	l := p.cur()
	if !l.nc.IsConnected() {
		return p.toSpool(kind, dedupID, data, "disconnected")
	}
	now := time.Now()
	// Backing off: nothing during the pause, and after it no more than a
	// probe's worth in flight until one is accepted.
	if p.pace.wait(now) > 0 {
		return p.toSpool(kind, dedupID, data, "backoff")
	}
	probing := p.pace.backingOff()
	p.mu.Lock()
	if probing && len(p.inflight) >= minReplayWindow {
		p.mu.Unlock()
		return p.toSpool(kind, dedupID, data, "backoff")
	}
	p.inflight[dedupID] = inflightRecord{SpoolRecord{Kind: kind, DedupID: dedupID, Data: data}, now}
	p.mu.Unlock()
	msg := nats.NewMsg(SubjectFor(p.nodeID, kind))
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, dedupID)
	if _, err := l.live.PublishMsgAsync(msg); err != nil {
		if _, ok := p.take(dedupID); ok {
			p.refused(err, now)
			err := p.toSpool(kind, dedupID, data, publishReason(err))
			p.wake()
			return err
		}
	}
	return nil
}

// inflightRecord is a live publish awaiting its ack, and when it was sent.
type inflightRecord struct {
	SpoolRecord
	sent time.Time
}

// refused starts a backoff when err says the server could not take a
// message sent at sent for now. A lost connection is not such a refusal:
// the reconnect logic paces that.
func (p *Publisher) refused(err error, sent time.Time) {
	if permanent(err) || publishReason(err) == "disconnected" {
		return
	}
	p.pace.fail(sent, time.Now())
}

// take removes and returns the in-flight record for dedupID, if still there.
func (p *Publisher) take(dedupID string) (inflightRecord, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r, ok := p.inflight[dedupID]
	delete(p.inflight, dedupID)
	return r, ok
}

func (p *Publisher) toSpool(kind Kind, dedupID string, data []byte, reason string) error {
	p.m.PublishErrors.WithLabelValues(reason).Inc()
	if err := p.spool.Append(SpoolRecord{Kind: kind, DedupID: dedupID, Data: data}); err != nil {
		return fmt.Errorf("publish %s: %w", kind, err)
	}
	p.spooled.Add(1)
	return nil
}

func publishReason(err error) string {
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, jetstream.ErrAsyncPublishTimeout):
		return "ack_timeout"
	case errors.Is(err, jetstream.ErrTooManyStalledMsgs):
		return "backpressure"
	case errors.Is(err, nats.ErrDisconnected), errors.Is(err, nats.ErrReconnectBufExceeded),
		errors.Is(err, nats.ErrConnectionReconnecting), errors.Is(err, nats.ErrConnectionClosed),
		errors.Is(err, jetstream.ErrJetStreamPublisherClosed): // a link closed by a move
		return "disconnected"
	case errors.Is(err, jetstream.ErrNoStreamResponse):
		return "no_stream"
	case errors.As(err, &apiErr):
		return "server_error"
	}
	return "other"
}

// permanent reports whether the server refused a message for good (a 4xx
// JetStream error such as "message too large"): replaying it cannot help.
func permanent(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.Code >= 400 && apiErr.Code < 500
}

func (p *Publisher) onAck(_ jetstream.JetStream, msg *nats.Msg, _ *jetstream.PubAck) {
	r, ok := p.take(msg.Header.Get(jetstream.MsgIDHeader))
	if !ok {
		return
	}
	p.pace.ok(r.sent)
	p.published.Add(1)
	p.m.Published.WithLabelValues(string(r.Kind)).Inc()
}

func (p *Publisher) onErr(_ jetstream.JetStream, msg *nats.Msg, err error) {
	p.mu.Lock()
	if p.closing { // Close spools what is still in flight
		p.mu.Unlock()
		return
	}
	id := msg.Header.Get(jetstream.MsgIDHeader)
	r, ok := p.inflight[id]
	delete(p.inflight, id)
	if ok {
		p.spooling.Add(1)
	}
	p.mu.Unlock()
	if !ok {
		return
	}
	defer p.spooling.Done()
	if permanent(err) {
		p.rejected.Add(1)
		p.m.SpoolDropped.WithLabelValues(string(r.Kind), "rejected").Inc()
		p.log.Warn("transport: server refused message; dropped", "kind", r.Kind, "err", err)
		return
	}
	p.refused(err, r.sent)
	if serr := p.toSpool(r.Kind, r.DedupID, r.Data, publishReason(err)); serr != nil {
		p.log.Warn("transport: message lost", "kind", r.Kind, "err", serr)
	}
	p.wake()
}

func (p *Publisher) wake() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// replayLoop drains the spool whenever connected: after a (re)connect, after
// a failure was spooled, and every ReplayInterval.
func (p *Publisher) replayLoop() {
	t := time.NewTicker(p.cfg.ReplayInterval)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-p.kick:
		case <-t.C:
		}
		for p.cur().nc.IsConnected() {
			if d := p.pace.wait(time.Now()); d > 0 {
				select {
				case <-p.stop:
					return
				case <-time.After(d):
				}
				continue
			}
			probing := p.pace.backingOff()
			more, err := p.replayOne()
			if err != nil {
				// Once per episode: a probe refused again is expected.
				if !probing {
					p.log.Warn("transport: replay interrupted", "err", err)
				}
				if p.pace.wait(time.Now()) > 0 {
					continue // refused for now: probe again after the pause
				}
				break
			}
			if !more {
				break
			}
			select {
			case <-p.stop:
				return
			default:
			}
		}
	}
}

// Replay window: publishes in flight at once while replaying. After a
// refusal a replay starts small (a probe costs the server at most eight
// refusals); each fully acked window doubles it.
const (
	minReplayWindow = 8
	maxReplayWindow = 512
)

// replayOne replays one spool segment, a window of records at a time, and
// stops at the first window with a refusal, or when a backoff begins. It
// reports whether there may be more.
func (p *Publisher) replayOne() (bool, error) {
	b, err := p.spool.Checkout()
	if err != nil || b == nil {
		return false, err
	}
	kind := b.Kind()
	next := 0
	var failed error
	paused := false
	for failed == nil && next < len(b.Records) && !p.stopping() {
		// A refusal on the live path pauses replay too.
		if paused = p.pace.wait(time.Now()) > 0; paused {
			break
		}
		next, failed = p.replayWindow(b, kind, next)
	}
	gone := b.Commit()
	if failed != nil {
		return false, fmt.Errorf("replay %s: %w", kind, failed)
	}
	return gone || paused, nil
}

// replayWindow publishes up to p.window undelivered records of b from index
// from on, waits for their acks, and returns where the next window starts.
func (p *Publisher) replayWindow(b *SpoolBatch, kind Kind, from int) (int, error) {
	type pending struct {
		i   int
		fut jetstream.PubAckFuture
	}
	if p.pace.backingOff() {
		p.window = minReplayWindow // a probe: the server refused the last attempt
	}
	var futs []pending
	var failed error
	sent := time.Now()
	js := p.cur().replay
	i := from
	for ; i < len(b.Records) && len(futs) < p.window; i++ {
		if b.IsDelivered(i) {
			continue
		}
		r := b.Records[i]
		msg := nats.NewMsg(SubjectFor(p.nodeID, kind))
		msg.Data = r.Data
		msg.Header.Set(jetstream.MsgIDHeader, r.DedupID)
		f, err := js.PublishMsgAsync(msg, jetstream.WithStallWait(p.cfg.AckTimeout))
		if err != nil {
			failed = err
			break
		}
		futs = append(futs, pending{i, f})
	}
	for _, f := range futs {
		select {
		case <-f.fut.Ok():
			b.Delivered(f.i)
			p.replayed.Add(1)
			p.m.Replayed.WithLabelValues(string(kind)).Inc()
			p.pace.ok(sent)
		case err := <-f.fut.Err():
			if permanent(err) {
				b.Delivered(f.i) // nothing more to do with it
				p.rejected.Add(1)
				p.m.SpoolDropped.WithLabelValues(string(kind), "rejected").Inc()
				continue
			}
			failed = err
		}
	}
	if failed != nil {
		p.refused(failed, sent)
		p.window = minReplayWindow
		return i, failed
	}
	p.window = min(2*p.window, maxReplayWindow)
	return i, nil
}

// stopping reports whether Close has begun: replay then stops between
// windows instead of finishing its segment.
func (p *Publisher) stopping() bool {
	select {
	case <-p.stop:
		return true
	default:
		return false
	}
}

// Flush waits until every message published so far is acknowledged or
// spooled, and the spool is empty; or until ctx ends.
func (p *Publisher) Flush(ctx context.Context) error {
	p.wake()
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if p.pending() == 0 && p.spool.Stats().Messages == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("flush: %d in flight, %d spooled: %w",
				p.pending(), p.spool.Stats().Messages, ctx.Err())
		case <-t.C:
			p.wake()
		}
	}
}

func (p *Publisher) pending() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.inflight)
}

// Stats returns a snapshot of the publisher's counters.
func (p *Publisher) Stats() PublisherStats {
	return PublisherStats{
		Connected: p.cur().nc.IsConnected(), Published: p.published.Load(), Replayed: p.replayed.Load(),
		Spooled: p.spooled.Load(), Rejected: p.rejected.Load(), PermissionErr: p.permErr.Load(),
		BackingOff: p.pace.backingOff(), Spool: p.spool.Stats(),
	}
}

// Close waits up to ctx for outstanding acks, spools what is still
// unacknowledged, and closes the connection and the spool. Spooled
// messages are replayed by the next Publisher on the same SpoolDir.
func (p *Publisher) Close(ctx context.Context) error {
	p.closeOnce.Do(func() {
		close(p.stop)
		p.wg.Wait() // no move after this
		l := p.cur()
		select {
		case <-l.live.PublishAsyncComplete():
		case <-ctx.Done():
		}
		p.mu.Lock()
		p.closing = true
		p.mu.Unlock()
		l.live.CleanupPublisher()
		l.nc.Close()
		p.spooling.Wait()
		// Whatever is still unacknowledged goes to the spool for the next run.
		p.mu.Lock()
		left := p.inflight
		p.inflight = map[string]inflightRecord{}
		p.mu.Unlock()
		for _, r := range left {
			if err := p.toSpool(r.Kind, r.DedupID, r.Data, "closing"); err != nil {
				p.log.Warn("transport: message lost at close", "kind", r.Kind, "err", err)
			}
		}
	})
	return p.spool.Close()
}

// Package ingest turns verified agent messages into server state: findings
// are decoded, validated, bound to their sender, run through suppression
// rules and upserted into the store; heartbeats go to coverage.
//
//	transport.Consumer ──Handle──▶ Ingester ──batch──▶ store.UpsertFindings
//	                                  └─ heartbeat ──▶ coverage.Monitor.Observe
//
// Handle fits transport.Handler: a nil return acks the message only after
// its effect is committed, so a server killed mid-ingest loses nothing that
// was acknowledged; redelivered or replayed messages are no-ops in the store
// (the message's DedupKey is the upsert's idempotency key).
//
// Hostile input is refused with a *RejectError naming the reason,
// wrapped in transport.Permanent so the message is terminated rather than
// retried, and counted (mamori_ingest_rejected_total{kind,reason}). Store
// failures are returned as plain errors, wrapped in transport.Unavailable
// when the database cannot work at all (down, restarting, disk full): the
// message is redelivered later, and for as long as such an outage lasts.
//
// Concurrent Handle calls are grouped into one store transaction per batch
// (up to BatchMax, without waiting for more), which is what makes
// thousands of findings per second possible on SQLite.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	jsonv2 "github.com/go-json-experiment/json"

	"github.com/mamori-dev/mamori/internal/finding"
	"github.com/mamori-dev/mamori/internal/server/coverage"
	"github.com/mamori-dev/mamori/internal/server/store"
	"github.com/mamori-dev/mamori/internal/transport"
)

// Defaults.
const (
	DefaultMaxFindingBytes = 256 << 10
	maxCount               = 1 << 40
	maxFuture              = 5 * time.Minute
)

// Kinds, as transport names them.
const (
	KindFinding   = string(transport.KindFinding)
	KindHeartbeat = string(transport.KindHeartbeat)
	KindEvent     = string(transport.KindEvent)
)

// Input is one agent message, as verified by the transport: the sender's
// node id is authenticated (it is the subject NATS let the agent publish
// on). It is the small interface tests and other sources drive the
// Ingester with.
type Input struct {
	Key    string // idempotency key: transport Message.DedupKey
	NodeID string
	Kind   string
	SentAt time.Time
	// Stored is when the stream took the message (NATS's clock); zero
	// when unknown.
	Stored  time.Time
	Payload []byte
}

// Change is a finding the ingester created or changed, handed to
// Config.OnChange after commit.
type Change struct {
	Record *store.Record
	New    bool
	// Suppressed findings are stored archived; exports must skip them.
	Suppressed bool
}

// Config configures an Ingester. Zero values take the defaults noted.
type Config struct {
	Store store.Store // required
	// Coverage receives heartbeats; without it heartbeats are acked and
	// counted as ignored.
	Coverage *coverage.Monitor
	// Events receives raw event messages; without it they are acked and
	// counted as ignored.
	Events func(ctx context.Context, in Input) error
	// OnChange is called after commit for every created or changed
	// finding, on the writer goroutine: keep it quick.
	OnChange func(Change)
	// MaxFindingBytes bounds one finding payload [DefaultMaxFindingBytes].
	MaxFindingBytes int
	// BatchMax bounds the findings committed in one transaction [256].
	BatchMax int
	// Writers is the number of concurrent batch writers [1 on SQLite, 4 on
	// PostgreSQL].
	Writers int
	// RulesRefresh is how often suppression rules are re-read, so rule
	// changes made through another replica apply [5s].
	RulesRefresh time.Duration
	Metrics      *Metrics
	Logger       *slog.Logger
	Now          func() time.Time
}

// Ingester applies agent messages to the store. Create it with New and
// stop it with Close.
type Ingester struct {
	cfg   Config
	st    store.Store
	m     *Metrics
	log   *slog.Logger
	now   func() time.Time
	rules *rules
	nodes *clusters

	queue chan *pending
	stop  chan struct{}

	pingMu   sync.Mutex
	pingedAt time.Time
	down     bool
	wg       sync.WaitGroup
	once     sync.Once
}

// pending is one finding waiting for its batch.
type pending struct {
	u    store.Upsert
	done chan error
	res  store.Result
}

// New starts an Ingester's writers.
func New(cfg Config) (*Ingester, error) {
	if cfg.Store == nil {
		return nil, errors.New("ingest: no store")
	}
	if cfg.MaxFindingBytes <= 0 {
		cfg.MaxFindingBytes = DefaultMaxFindingBytes
	}
	if cfg.BatchMax <= 0 {
		cfg.BatchMax = 256
	}
	if cfg.Writers <= 0 {
		cfg.Writers = 1
		if cfg.Store.Engine() == store.EnginePostgres {
			cfg.Writers = 4
		}
	}
	if cfg.RulesRefresh <= 0 {
		cfg.RulesRefresh = 5 * time.Second
	}
	in := &Ingester{cfg: cfg, st: cfg.Store, m: cfg.Metrics, log: cfg.Logger, now: cfg.Now,
		queue: make(chan *pending, cfg.BatchMax*cfg.Writers), stop: make(chan struct{})}
	if in.m == nil {
		in.m = NewMetrics(nil)
	}
	if in.log == nil {
		in.log = slog.Default()
	}
	if in.now == nil {
		in.now = time.Now
	}
	in.rules = &rules{st: cfg.Store, every: cfg.RulesRefresh, now: in.now}
	in.nodes = &clusters{st: cfg.Store, now: in.now, m: map[string]clusterEntry{}}
	for range cfg.Writers {
		in.wg.Go(in.writer)
	}
	return in, nil
}

// Close stops the writers after the batches in flight; findings still
// queued fail with an error (their messages are redelivered).
func (in *Ingester) Close() {
	in.once.Do(func() { close(in.stop) })
	in.wg.Wait()
	for {
		select {
		case p := <-in.queue:
			p.done <- errors.New("ingest: shutting down")
		default:
			return
		}
	}
}

// InvalidateRules makes the next finding re-read the suppression rules
// (call it after changing rules through this replica).
func (in *Ingester) InvalidateRules() { in.rules.invalidate() }

// Handle is a transport.Handler.
func (in *Ingester) Handle(ctx context.Context, m *transport.Message) error {
	env := m.Envelope
	return in.Apply(ctx, Input{Key: m.DedupKey(), NodeID: env.NodeID, Kind: string(env.Kind), SentAt: env.SentAt, Stored: m.Stored, Payload: env.Payload})
}

// Apply processes one message. It returns nil once the message's effect is
// committed (or it was a duplicate), a transport.Permanent *RejectError for
// input to refuse, or another error to retry later.
func (in *Ingester) Apply(ctx context.Context, msg Input) error {
	start := in.now()
	var outcome string
	var err error
	switch msg.Kind {
	case KindFinding:
		outcome, err = in.finding(ctx, msg)
	case KindHeartbeat:
		outcome, err = in.heartbeat(ctx, msg)
	case KindEvent:
		outcome = "ignored"
		if in.cfg.Events != nil {
			outcome = "ok"
			err = in.cfg.Events(ctx, msg)
		}
	default:
		err = reject("unknown_kind", "unknown message kind %q", msg.Kind)
	}
	kind := msg.Kind
	if kind != KindFinding && kind != KindHeartbeat && kind != KindEvent {
		kind = "unknown"
	}
	var re *RejectError
	switch {
	case errors.As(err, &re):
		outcome = "rejected"
		in.m.Rejected.WithLabelValues(kind, re.Reason).Inc()
		in.logReject(kind, msg.NodeID, re)
		err = transport.Permanent(err)
	case err != nil:
		outcome = "error"
		if store.IsUnavailable(err) || in.storeDown() {
			// The database or its disk is down, not the message at fault:
			// retried for as long as that lasts.
			err = transport.Unavailable(err)
		}
	}
	in.m.Messages.WithLabelValues(kind, outcome).Inc()
	in.m.Duration.WithLabelValues(kind).Observe(in.now().Sub(start).Seconds())
	if err == nil && !msg.SentAt.IsZero() {
		in.m.Lag.WithLabelValues(kind).Observe(max(in.now().Sub(msg.SentAt).Seconds(), 0))
	}
	return err
}

// storeDown asks the database whether it answers, at most once a second:
// after an error that does not say by itself whether the database or the
// request is at fault (a timeout, a connection cut mid-reply).
func (in *Ingester) storeDown() bool {
	in.pingMu.Lock()
	defer in.pingMu.Unlock()
	if now := time.Now(); now.Sub(in.pingedAt) >= time.Second {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		in.down = in.st.Ping(ctx) != nil
		cancel()
		in.pingedAt = now
	}
	return in.down
}

// RejectError says why a message was refused.
type RejectError struct {
	Reason string // label of mamori_ingest_rejected_total
	Detail string
}

func (e *RejectError) Error() string { return "ingest rejected (" + e.Reason + "): " + e.Detail }

func reject(reason, format string, args ...any) error {
	return &RejectError{Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// DecodeFinding parses one finding payload: at most limit bytes, a single
// JSON object, checked by finding.Validate, bound to sender (the node in
// the resource and the agent id must be the sender's), with a sane count
// and times not ahead of now by more than five minutes. Errors are
// *RejectError.
func DecodeFinding(payload []byte, limit int, sender string, now time.Time) (*finding.Finding, error) {
	if len(payload) > limit {
		return nil, reject("oversized", "finding is %d bytes, limit %d", len(payload), limit)
	}
	// One strict pass: exact names, each once, valid UTF-8, no trailing
	// data (unknown names are skipped, for agents newer than the server).
	var f finding.Finding
	if err := jsonv2.Unmarshal(payload, &f); err != nil {
		return nil, reject("malformed", "decode finding: %v", err)
	}
	if err := finding.Validate(&f); err != nil {
		return nil, reject("invalid", "%v", err)
	}
	node := ""
	if d := f.Resource.InstanceDetails; d != nil {
		node = d.NodeID
	}
	if node != sender || f.Service.AdditionalInfo.AgentDetails.AgentID != sender {
		return nil, reject("node_mismatch", "finding of node %q (agent %q) sent by node %q",
			node, f.Service.AdditionalInfo.AgentDetails.AgentID, sender)
	}
	if f.Service.Count > maxCount {
		return nil, reject("invalid", "service.count %d is implausible", f.Service.Count)
	}
	limitT := now.Add(maxFuture)
	if f.CreatedAt.After(limitT) || f.Service.EventLastSeen.After(limitT) {
		return nil, reject("future", "finding times are ahead of the server's clock by more than %v", maxFuture)
	}
	return &f, nil
}

func (in *Ingester) finding(ctx context.Context, msg Input) (string, error) {
	f, err := DecodeFinding(msg.Payload, in.cfg.MaxFindingBytes, msg.NodeID, in.now())
	if err != nil {
		return "", err
	}
	suppress, err := in.rules.suppressor(ctx)
	if err != nil {
		return "", err
	}
	p := &pending{done: make(chan error, 1), u: store.Upsert{
		Finding: f, MsgKey: msg.Key, Reporter: msg.NodeID,
		// An agent's counts are cumulative per aggregation epoch, and a
		// held finding keeps its createdAt: that is the epoch.
		Epoch:    f.CreatedAt.UTC().Format(time.RFC3339Nano),
		Cluster:  in.nodes.cluster(ctx, msg.NodeID),
		Suppress: suppress,
	}}
	select {
	case in.queue <- p:
	case <-ctx.Done():
		return "", ctx.Err()
	case <-in.stop:
		return "", errors.New("ingest: shutting down")
	}
	select {
	case err := <-p.done:
		if err != nil {
			return "", err
		}
	case <-ctx.Done():
		// The batch may still commit; a redelivery is then a duplicate.
		return "", ctx.Err()
	case <-in.stop:
		return "", errors.New("ingest: shutting down")
	}
	if p.res.Outcome == store.OutcomeRejected {
		return "", reject("id_conflict", "%v", p.res.Err)
	}
	if p.res.Record != nil && p.res.Record.SuppressedBy != "" {
		in.m.Suppressed.Inc()
	}
	return string(p.res.Outcome), nil
}

// batchLinger is how long a writer waits for more findings to join a
// batch: well inside the 250 ms ingest-to-stored objective.
const batchLinger = 20 * time.Millisecond

// writer commits queued findings in batches.
func (in *Ingester) writer() {
	batch := make([]*pending, 0, in.cfg.BatchMax)
	for {
		batch = batch[:0]
		select {
		case <-in.stop:
			return
		case p := <-in.queue:
			batch = append(batch, p)
		}
		// Under load, linger a little for more: a commit's cost is mostly
		// the pages it writes (every index of the findings table), so ten
		// findings per commit cost little more than one. Alone (a quiet
		// server) a finding is committed at once.
	drain:
		for len(batch) < in.cfg.BatchMax {
			select {
			case x := <-in.queue:
				batch = append(batch, x)
			default:
				break drain
			}
		}
		if len(batch) == 1 || len(batch) >= in.cfg.BatchMax {
			in.commit(batch)
			continue
		}
		linger := time.NewTimer(batchLinger)
	fill:
		for len(batch) < in.cfg.BatchMax {
			select {
			case p := <-in.queue:
				batch = append(batch, p)
			case <-linger.C:
				break fill
			case <-in.stop:
				break fill
			}
		}
		linger.Stop()
		in.commit(batch)
	}
}

func (in *Ingester) commit(batch []*pending) {
	us := make([]store.Upsert, len(batch))
	for i, p := range batch {
		us[i] = p.u
	}
	in.m.Batch.Observe(float64(len(batch)))
	// Not the callers' contexts: one caller giving up must not fail the others.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := in.st.UpsertFindings(ctx, us)
	if err != nil {
		if in.m.shouldLog("batch", in.now()) { // an outage fails every batch: once a second is enough
			in.log.Warn("ingest: store batch failed; messages will be redelivered", "findings", len(batch), "err", err)
		}
		for _, p := range batch {
			p.done <- err
		}
		return
	}
	for i, p := range batch {
		p.res = res[i]
		if r := res[i]; in.cfg.OnChange != nil && r.Record != nil &&
			(r.Outcome == store.OutcomeCreated || r.Outcome == store.OutcomeUpdated) {
			in.cfg.OnChange(Change{Record: r.Record, New: r.Outcome == store.OutcomeCreated, Suppressed: r.Record.SuppressedBy != ""})
		}
		p.done <- nil
	}
}

func (in *Ingester) heartbeat(ctx context.Context, msg Input) (string, error) {
	if len(msg.Payload) > coverage.MaxHeartbeatBytes {
		return "", reject("oversized", "heartbeat is %d bytes, limit %d", len(msg.Payload), coverage.MaxHeartbeatBytes)
	}
	h, err := coverage.Decode(msg.Payload)
	if err != nil {
		return "", reject("malformed", "%v", err)
	}
	if h.NodeID != msg.NodeID {
		return "", reject("node_mismatch", "heartbeat of node %q sent by node %q", h.NodeID, msg.NodeID)
	}
	if h.Time.After(in.now().Add(maxFuture)) {
		return "", reject("future", "heartbeat time %s is ahead of the server's clock", h.Time.Format(time.RFC3339))
	}
	in.nodes.learn(h.NodeID, h.Cluster)
	if in.cfg.Coverage == nil {
		return "ignored", nil
	}
	if err := in.cfg.Coverage.Record(ctx, h, in.now(), msg.Stored); err != nil {
		return "", err
	}
	return "ok", nil
}

// logReject logs at most one rejection per reason per second: the metric
// counts all of them, a flood must not flood the log.
func (in *Ingester) logReject(kind, node string, re *RejectError) {
	if in.m.shouldLog(kind+re.Reason, in.now()) {
		in.log.Warn("ingest: message rejected", "kind", kind, "node", fmt.Sprintf("%q", node), "reason", re.Reason, "err", re.Detail)
	}
}

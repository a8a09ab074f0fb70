package coverage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mamori-dev/mamori/internal/server/store"
)

// Event is one status transition of a node.
type Event = store.CoverageEvent

// Config configures a Monitor. Zero values take the defaults noted.
type Config struct {
	Store  store.Store // required
	Policy Policy
	// SweepEvery is how often every node is re-judged for silence [5s].
	SweepEvery time.Duration
	// PollEvery is how often the transition log is read for subscribers
	// (transitions other replicas logged included) [1s].
	PollEvery time.Duration
	// Writers is the number of heartbeat batches committed at once [1 on
	// SQLite, which has one writer anyway; 4 on PostgreSQL, where a batch
	// spends most of its time in round trips].
	Writers int
	// Backlog, when set, reads the server side's queue of agent messages
	// once per sweep, so a node silent because the server is behind is
	// told apart from one whose agent stopped.
	Backlog func(context.Context) (Backlog, error)
	Metrics *Metrics
	Logger  *slog.Logger
	// Now replaces the clock (tests).
	Now func() time.Time
}

// Monitor keeps coverage: it folds heartbeats into node rows, re-judges
// silent nodes, and delivers status transitions to subscribers. Several
// replicas may run Monitors over one store: per-node locking in the store
// makes each transition logged once.
type Monitor struct {
	cfg Config
	st  store.Store
	m   *Metrics
	log *slog.Logger
	now func() time.Time

	mu      sync.Mutex
	subs    map[int]*subscriber
	nextSub int
	nudge   chan struct{}

	// Heartbeats waiting for the batch writer (batch.go).
	hbq chan *hbReq
	// Last full hook list per node (hooklist.go).
	hooks       hookCache
	startWriter sync.Once
	// The backlog as last read by Sweep (nil: unknown).
	backlog atomic.Pointer[backlogView]
}

type subscriber struct {
	ch      chan Event
	dropped uint64
}

// New returns a Monitor; call Run to start its background work.
func New(cfg Config) (*Monitor, error) {
	if cfg.Store == nil {
		return nil, errors.New("coverage: no store")
	}
	if cfg.SweepEvery <= 0 {
		cfg.SweepEvery = 5 * time.Second
	}
	if cfg.PollEvery <= 0 {
		cfg.PollEvery = time.Second
	}
	if cfg.Writers <= 0 {
		cfg.Writers = 1
		if cfg.Store.Engine() == store.EnginePostgres {
			cfg.Writers = 4
		}
	}
	m := &Monitor{cfg: cfg, st: cfg.Store, m: cfg.Metrics, log: cfg.Logger, now: cfg.Now,
		subs: map[int]*subscriber{}, nudge: make(chan struct{}, 1), hbq: make(chan *hbReq, heartbeatQueue)}
	if m.m == nil {
		m.m = NewMetrics(nil)
	}
	if m.log == nil {
		m.log = slog.Default()
	}
	if m.now == nil {
		m.now = time.Now
	}
	return m, nil
}

// Observe folds a validated heartbeat, received at received, into its
// node's row and returns the node's status. A heartbeat older than the one
// held (a spooled one replayed late) only proves the agent is reporting; its
// contents do not replace newer ones. Heartbeats arriving together are
// committed in one transaction (see batch.go).
func (m *Monitor) Observe(ctx context.Context, h *Heartbeat, received time.Time) (*NodeStatus, error) {
	n, err := m.observeBatched(ctx, h, received, time.Time{})
	if err != nil {
		return nil, err
	}
	if n == nil {
		return nil, ErrRemovedNode
	}
	return m.statusOf(n)
}

// ErrRemovedNode answers Observe for a heartbeat a removed node made before
// its removal (store.DeleteNode): it is ignored.
var ErrRemovedNode = errors.New("coverage: heartbeat of a removed node, made before its removal: ignored")

// Record is Observe for callers that do not need the status back (ingest):
// it spares decoding the row again. queued, when not zero, is when the
// transport took the heartbeat on the server's side: it bounds the agent's
// own time when telling whether the heartbeat was made before its node's
// removal, so an agent whose clock runs ahead cannot pass that check.
func (m *Monitor) Record(ctx context.Context, h *Heartbeat, received, queued time.Time) error {
	_, err := m.observeBatched(ctx, h, received, queued)
	return err
}

// observeFn is the read-modify-write of one heartbeat on its node's row.
func (m *Monitor) observeFn(h *Heartbeat, received time.Time) func(old *store.Node) (*store.Node, *store.CoverageEvent, error) {
	return func(old *store.Node) (*store.Node, *store.CoverageEvent, error) {
		var st state
		cur := h
		next := &store.Node{FirstSeen: received, LastHeartbeat: received}
		if !m.restoreHooks(h, func() *Heartbeat {
			if old == nil {
				return nil
			}
			hb, _ := m.heartbeatOf(old)
			return hb
		}) {
			m.m.HooksUnknown.Inc()
		}
		if old != nil {
			if err := decodeState(old, &st); err != nil {
				return nil, nil, err
			}
			next.FirstSeen = old.FirstSeen
			next.LastHeartbeat = latest(old.LastHeartbeat, received)
			held := st.Held
			if held.IsZero() && len(old.Heartbeat) > 0 { // a row written before Held was kept
				if hb, _ := m.heartbeatOf(old); hb != nil {
					held = hb.Time
				}
			}
			// Only a late replay needs the held heartbeat decoded.
			if held.After(h.Time) {
				if hb, _ := m.heartbeatOf(old); hb != nil {
					cur = hb
				}
			}
		}
		if cur == h {
			st.observeDrops(h)
			st.Held = h.Time
		}
		st.IntervalSeconds = int64(cur.Interval() / time.Second)
		storedDigest := ""
		if old != nil {
			storedDigest = old.HooksDigest
		}
		if err := fill(next, cur, &st, storedDigest); err != nil {
			return nil, nil, err
		}
		return next, m.judge(old, next, cur, &st), nil
	}
}

// Enrolled registers a node that has not sent a heartbeat yet, so that an
// agent which never comes up shows as Unhealthy (NO_HEARTBEAT). A node
// already known is left alone.
func (m *Monitor) Enrolled(ctx context.Context, nodeID, cluster string, at time.Time) error {
	_, ev, err := m.st.UpdateNode(ctx, nodeID, func(old *store.Node) (*store.Node, *store.CoverageEvent, error) {
		if old != nil {
			return nil, nil, nil
		}
		st := state{Enrolled: at}
		next := &store.Node{Cluster: cluster, ResourceType: "Instance", FirstSeen: at}
		if err := fill(next, nil, &st, ""); err != nil {
			return nil, nil, err
		}
		return next, m.judge(nil, next, nil, &st), nil
	})
	if err != nil {
		return fmt.Errorf("coverage: enroll %s: %w", nodeID, err)
	}
	m.logged(ev)
	return nil
}

// fill sets a node row's descriptive fields and state from a heartbeat;
// storedDigest names the hook list already stored for the node.
func fill(n *store.Node, h *Heartbeat, st *state, storedDigest string) error {
	if h != nil {
		// The hook list goes to its own row, written by the store only
		// when its digest changes; the heartbeat row carries the rest.
		body := *h
		body.Hooks = nil
		if len(h.Hooks) > 0 {
			if body.HooksDigest == "" { // an agent that does not elide
				body.HooksDigest = HooksDigest(h.Hooks)
			}
		}
		if len(h.Hooks) > 0 && body.HooksDigest != storedDigest {
			hooks, err := json.Marshal(h.Hooks)
			if err != nil {
				return fmt.Errorf("encode hooks: %w", err)
			}
			n.Hooks, n.HooksDigest = hooks, body.HooksDigest
		}
		doc, err := json.Marshal(&body)
		if err != nil {
			return fmt.Errorf("encode heartbeat: %w", err)
		}
		n.Heartbeat = doc
		n.Cluster, n.Hostname, n.ResourceType = h.Cluster, h.Hostname, h.resourceType()
	}
	s, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	n.State = s
	return nil
}

// judge evaluates next (whose heartbeat is h) and sets its status; it
// returns the transition to log when status or issue changed.
func (m *Monitor) judge(old, next *store.Node, h *Heartbeat, st *state) *store.CoverageEvent {
	now := m.now()
	status, issues := evaluate(h, st, next.LastHeartbeat, now, m.cfg.Policy, m.backlog.Load())
	next.Status, next.Issue = status, ""
	if len(issues) > 0 {
		next.Issue = issues[0]
	}
	next.StatusSince = now
	if old != nil {
		next.StatusSince = old.StatusSince
		if old.Status == next.Status && old.Issue == next.Issue {
			return nil
		}
		if old.Status != next.Status {
			next.StatusSince = now
		}
		return &store.CoverageEvent{Cluster: next.Cluster, At: now, From: old.Status, To: next.Status,
			Issue: next.Issue, Previous: old.Issue}
	}
	return &store.CoverageEvent{Cluster: next.Cluster, At: now, To: next.Status, Issue: next.Issue}
}

// Sweep re-judges every node now (silence is the one thing that changes
// without a heartbeat).
func (m *Monitor) Sweep(ctx context.Context) error {
	m.readBacklog(ctx)
	bl := m.backlog.Load()
	// Rows without their bulk (heartbeat, hook list) say which nodes time
	// may have changed; only those are read whole.
	nodes, err := m.st.ListNodeStates(ctx)
	if err != nil {
		return fmt.Errorf("coverage: sweep: %w", err)
	}
	counts := map[string]int{Healthy: 0, Unhealthy: 0}
	var errs []error
	now := m.now()
	for i := range nodes {
		if m.settled(&nodes[i], now, bl) {
			counts[nodes[i].Status]++
			continue
		}
		n, err := m.st.GetNode(ctx, nodes[i].NodeID)
		if errors.Is(err, store.ErrNotFound) {
			continue // removed meanwhile
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		s, err := m.statusOf(n)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		status, issues := evaluate(s.heartbeat, &s.state, n.LastHeartbeat, now, m.cfg.Policy, bl)
		if status == n.Status && (len(issues) == 0 && n.Issue == "" || len(issues) > 0 && issues[0] == n.Issue) {
			counts[status]++
			continue
		}
		// Changed: re-judge under the node's lock with its current row,
		// so a heartbeat or another replica in between wins.
		upd, ev, err := m.st.UpdateNode(ctx, n.NodeID, func(old *store.Node) (*store.Node, *store.CoverageEvent, error) {
			if old == nil {
				return nil, nil, nil
			}
			cur, err := m.statusOf(old)
			if err != nil {
				return nil, nil, err
			}
			next := *old
			ev := m.judge(old, &next, cur.heartbeat, &cur.state)
			if ev == nil {
				return nil, nil, nil
			}
			return &next, ev, nil
		})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		m.logged(ev)
		if upd != nil {
			counts[upd.Status]++
		} else {
			counts[n.Status]++
		}
	}
	for s, c := range counts {
		m.m.Nodes.WithLabelValues(s).Set(float64(c))
	}
	return errors.Join(errs...)
}

// settled reports whether the passing of time cannot have changed n's
// stored judgment (bl is the backlog the sweep judges with). Silence is the
// one issue that depends on the clock — the others depend on the heartbeat
// and its drop history only — so a node is settled when it is within its
// limit and not judged silent, when it is past it and its stored cause
// (agent or server) still holds, or when an issue that outranks silence
// (an exclusion label, the agent's exit) is final until its next
// heartbeat. n needs only its state, not its heartbeat or hook list.
func (m *Monitor) settled(n *store.Node, now time.Time, bl *backlogView) bool {
	typ, _, _ := strings.Cut(n.Issue, ":")
	if typ == IssueExcluded || typ == IssueExited {
		return true
	}
	var st state
	if decodeState(n, &st) != nil || st.IntervalSeconds <= 0 {
		return false // a row from before the interval was kept: judge it fully
	}
	limit := m.cfg.Policy.silenceAfter(time.Duration(st.IntervalSeconds) * time.Second)
	if now.Sub(n.LastHeartbeat) <= limit {
		return typ != IssueNotReporting && typ != IssueServerBehind
	}
	switch typ {
	case IssueNotReporting:
		return bl.serverCause(n.LastHeartbeat, limit, now) == ""
	case IssueServerBehind:
		why := bl.serverCause(n.LastHeartbeat, limit, now)
		return why != "" && strings.HasSuffix(n.Issue, " while "+why)
	}
	return false
}

// backlogGrace is how long a backlog reading stands in when the next ones
// fail: JetStream answers slowly exactly when the server is behind, and a
// failed read must not flip every silent node's cause back and forth.
const backlogGrace = 30 * time.Second

// readBacklog refreshes the backlog Sweep judges silence against. Without a
// reading (none configured, or none for backlogGrace) silence is judged as
// the agent's.
func (m *Monitor) readBacklog(ctx context.Context) {
	if m.cfg.Backlog == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	now := m.now()
	prev := m.backlog.Load()
	bl, err := m.cfg.Backlog(ctx)
	if err != nil {
		m.log.Debug("coverage: backlog unknown", "err", err)
		if prev != nil && now.Sub(prev.read) > backlogGrace {
			m.backlog.Store(nil)
		}
		return
	}
	v := &backlogView{Backlog: bl, read: now}
	m.backlog.Store(v)
}

// logged counts a transition and wakes the event tail (nil: none).
func (m *Monitor) logged(ev *store.CoverageEvent) {
	if ev == nil {
		return
	}
	m.m.Transitions.WithLabelValues(ev.To).Inc()
	m.log.Info("coverage: status changed", "node", ev.NodeID, "from", ev.From, "to", ev.To, "issue", ev.Issue)
	select {
	case m.nudge <- struct{}{}:
	default:
	}
}

// Run sweeps and tails the transition log until ctx is done.
func (m *Monitor) Run(ctx context.Context) error {
	tail, err := newTail(ctx, m.st)
	if err != nil {
		return err
	}
	sweep := time.NewTicker(m.cfg.SweepEvery)
	defer sweep.Stop()
	poll := time.NewTicker(m.cfg.PollEvery)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-sweep.C:
			if err := m.Sweep(ctx); err != nil && ctx.Err() == nil {
				m.log.Warn("coverage: sweep", "err", err)
			}
		case <-poll.C:
		case <-m.nudge:
		}
		evs, err := tail.next(ctx, m.now())
		if err != nil {
			if ctx.Err() == nil {
				m.log.Warn("coverage: read transitions", "err", err)
			}
			continue
		}
		for _, ev := range evs {
			m.publish(ev)
		}
	}
}

// Subscribe returns a channel receiving every status transition (from any
// replica) from now on, and a function ending the subscription. A
// subscriber that falls more than buf events behind loses events; the
// losses are counted (mamori_coverage_subscriber_dropped_total).
func (m *Monitor) Subscribe(buf int) (<-chan Event, func()) {
	if buf <= 0 {
		buf = 64
	}
	s := &subscriber{ch: make(chan Event, buf)}
	m.mu.Lock()
	id := m.nextSub
	m.nextSub++
	m.subs[id] = s
	m.mu.Unlock()
	var once sync.Once
	return s.ch, func() {
		once.Do(func() {
			m.mu.Lock()
			delete(m.subs, id)
			m.mu.Unlock()
			close(s.ch)
		})
	}
}

func (m *Monitor) publish(ev Event) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.subs {
		select {
		case s.ch <- ev:
		default:
			s.dropped++
			m.m.SubscriberDropped.Inc()
		}
	}
}

func latest(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

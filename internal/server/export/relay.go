package export

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mamori-dev/mamori/internal/finding"
	"github.com/mamori-dev/mamori/internal/server/store"
)

// Settlement says how a record left a sink.
type Settlement int

const (
	// Delivered: the receiver has it.
	Delivered Settlement = iota
	// GivenUp: refused, unencodable, or retried past the sink's window;
	// the sink counted it.
	GivenUp
	// Retry: the sink could not deliver it now (its receiver kept failing
	// through its retry window); the relay offers it again after a wait
	// and slows down while the sink fails.
	Retry
	// Abandoned: the sink is stopping; the record is offered again later
	// (after a restart, or by another replica).
	Abandoned
)

// Sink takes export records. Offer must not block. It returns false when
// it did not take the record (the caller keeps it and offers it again
// later); otherwise it calls done exactly once, when the record has left —
// possibly before Offer returns. done may be nil.
type Sink interface {
	Offer(f *finding.Finding, isNew bool, done func(Settlement)) bool
}

// Prober is a Sink that can give a record a single attempt: the relay
// probes a failing sink with one, so a record refused for its own content
// cannot hold the others back.
type Prober interface {
	OfferProbe(f *finding.Finding, isNew bool, done func(Settlement)) bool
}

// SinkKey names a sink in the export outbox: stable across restarts for
// the same kind, format and target, and free of the target's secrets (a
// webhook URL may carry a token).
func SinkKey(kind string, format Format, target string) string {
	h := sha256.Sum256([]byte(string(format) + "\x00" + target))
	return kind + "-" + hex.EncodeToString(h[:8])
}

// OutboxStore is the part of the store a Relay uses.
type OutboxStore interface {
	HasDueExports(ctx context.Context, sink string) (bool, error)
	ClaimExports(ctx context.Context, sink, owner string, lease time.Duration, limit int) ([]store.ExportItem, error)
	RenewExports(ctx context.Context, sink string, items []store.ExportItem, lease time.Duration) error
	SettleExport(ctx context.Context, it store.ExportItem, requeueAt time.Time) error
	ReleaseExport(ctx context.Context, it store.ExportItem, dueAt time.Time) error
	GetFinding(ctx context.Context, id string) (*store.Record, error)
}

// RelayConfig configures a Relay. Zero values take the defaults noted.
type RelayConfig struct {
	// Key is the sink's name in the outbox (SinkKey); Name its name in
	// logs and metrics [Key].
	Key, Name string
	Sink      Sink
	Store     OutboxStore
	// Owner names this server process in leases; unique per run.
	Owner string
	// UpdateDelay is how long a further update waits after one went out
	// (the update frequency) [DefaultUpdateFrequency].
	UpdateDelay time.Duration
	// Capacity bounds the records out with the sink at once [256].
	Capacity int
	// Poll is how often due rows are looked for without a Wake [1s].
	Poll time.Duration
	// Lease is how long a claim holds when not renewed [30s]; it is
	// renewed while the sink works on the record.
	Lease time.Duration
	// RetryDelay is the first wait after the sink handed a record back
	// (its receiver failing, its disk full) [5s]. While the sink fails the
	// relay offers one record at a time, the wait doubling up to
	// MaxRetryDelay [1m]; a delivery ends it.
	RetryDelay, MaxRetryDelay time.Duration
	Logger                    *slog.Logger
}

// RelayStats are a relay's counters.
type RelayStats struct {
	Offered     uint64 `json:"offered"`     // records handed to the sink
	Delivered   uint64 `json:"delivered"`   // settled as delivered
	GivenUp     uint64 `json:"givenUp"`     // settled as given up by the sink
	Skipped     uint64 `json:"skipped"`     // findings gone (retention) or suppressed since they were queued
	Deferred    uint64 `json:"deferred"`    // handed back by the sink, offered again later
	StoreErrors uint64 `json:"storeErrors"` // outbox reads or writes that failed (the rows stay)
	Out         int    `json:"out"`         // records with the sink now
}

// Relay moves one sink's rows from the export outbox to the sink: it
// claims due rows under a lease, offers the findings' current state, and
// deletes a row once the sink settles it. A server killed at any point
// loses nothing: unsettled rows are claimed again (at the next start on
// SQLite, when the lease lapses on PostgreSQL), so delivery is at least
// once — receivers deduplicate by the record's Idempotency-Key.
type Relay struct {
	cfg  RelayConfig
	wake chan struct{}

	mu  sync.Mutex
	out map[outKey]store.ExportItem // with the sink now, under their latest claim
	// While the sink fails, one record at a time is offered, not before
	// pauseUntil; backoff is the current wait.
	failing    bool
	backoff    time.Duration
	pauseUntil time.Time
	// storeErrAt is when a settle or release last failed: for a while
	// after, releases are not tried (the rows' leases lapse instead), so a
	// database outage at shutdown does not cost a timeout per record.
	storeErrAt time.Time

	offered, delivered, givenUp, skipped, deferred, storeErrs atomic.Uint64
}

type outKey struct{ id, kind string }

// NewRelay returns a relay; call Run.
func NewRelay(cfg RelayConfig) *Relay {
	if cfg.Name == "" {
		cfg.Name = cfg.Key
	}
	if cfg.UpdateDelay <= 0 {
		cfg.UpdateDelay = DefaultUpdateFrequency
	}
	if cfg.Capacity <= 0 {
		cfg.Capacity = 256
	}
	if cfg.Poll <= 0 {
		cfg.Poll = time.Second
	}
	if cfg.Lease <= 0 {
		cfg.Lease = 30 * time.Second
	}
	if cfg.RetryDelay <= 0 {
		cfg.RetryDelay = 5 * time.Second
	}
	if cfg.MaxRetryDelay <= 0 {
		cfg.MaxRetryDelay = time.Minute
	}
	cfg.MaxRetryDelay = max(cfg.MaxRetryDelay, cfg.RetryDelay)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Relay{cfg: cfg, wake: make(chan struct{}, 1), out: map[outKey]store.ExportItem{}}
}

// Wake makes Run look for due rows now (a finding was just queued).
func (r *Relay) Wake() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run relays until ctx ends.
func (r *Relay) Run(ctx context.Context) {
	poll := time.NewTicker(r.cfg.Poll)
	defer poll.Stop()
	renew := time.NewTicker(r.cfg.Lease / 3)
	defer renew.Stop()
	for {
		r.pump(ctx)
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		case <-poll.C:
		case <-renew.C:
			r.mu.Lock()
			held := slices.Collect(maps.Values(r.out))
			r.mu.Unlock()
			// In key order, as ingest locks outbox rows: no deadlock
			// between a renewal and an ingest batch on PostgreSQL.
			slices.SortFunc(held, func(a, b store.ExportItem) int {
				return cmp.Or(cmp.Compare(a.FindingID, b.FindingID), cmp.Compare(a.Kind, b.Kind))
			})
			if err := r.cfg.Store.RenewExports(ctx, r.cfg.Key, held, r.cfg.Lease); err != nil && ctx.Err() == nil {
				r.storeError("renew leases", err)
			}
		}
	}
}

// room is how many more records the sink may take now.
func (r *Relay) room() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failing {
		if time.Now().Before(r.pauseUntil) {
			return 0
		}
		return 1 - len(r.out) // probe with one record
	}
	return r.cfg.Capacity - len(r.out)
}

// pump claims and offers due rows while the sink has room.
func (r *Relay) pump(ctx context.Context) {
	for ctx.Err() == nil {
		room := r.room()
		if room <= 0 {
			return
		}
		// A read first: an idle poll must not take SQLite's writer.
		if due, err := r.cfg.Store.HasDueExports(ctx, r.cfg.Key); err != nil || !due {
			if err != nil && ctx.Err() == nil {
				r.storeError("look for due records", err)
			}
			return
		}
		limit := min(room, 128)
		items, err := r.cfg.Store.ClaimExports(ctx, r.cfg.Key, r.cfg.Owner, r.cfg.Lease, limit)
		if err != nil {
			if ctx.Err() == nil {
				r.storeError("claim", err)
			}
			return
		}
		for _, it := range items {
			r.offer(ctx, it)
		}
		if len(items) < limit {
			return
		}
	}
}

func (r *Relay) offer(ctx context.Context, it store.ExportItem) {
	k := outKey{it.FindingID, it.Kind}
	r.mu.Lock()
	if prev, ok := r.out[k]; ok {
		// Still out with the sink from a claim whose lease lapsed (renewals
		// failed): this claim takes over the lease, but the sink holds what
		// was read under the earlier one, so its settle must keep any
		// change made since.
		it.Version = prev.Version
		r.out[k] = it
		r.mu.Unlock()
		return
	}
	probe := r.failing
	r.mu.Unlock()
	rec, err := r.cfg.Store.GetFinding(ctx, it.FindingID)
	switch {
	case errors.Is(err, store.ErrNotFound), err == nil && rec.SuppressedBy != "":
		// Purged by retention, or suppressed by a rule added since.
		r.finish(it)
		r.skipped.Add(1)
		return
	case err != nil:
		if ctx.Err() == nil {
			r.storeError("read finding", err)
		}
		r.release(it, time.Now().Add(r.cfg.RetryDelay))
		return
	}
	r.mu.Lock()
	r.out[k] = it
	r.mu.Unlock()
	r.offered.Add(1)
	offer := r.cfg.Sink.Offer
	if p, ok := r.cfg.Sink.(Prober); ok && probe {
		offer = p.OfferProbe
	}
	if !offer(rec.Finding, it.Kind == store.ExportNew, func(s Settlement) { r.settle(k, s) }) {
		r.mu.Lock()
		delete(r.out, k)
		r.mu.Unlock()
		r.deferred.Add(1)
		r.release(it, r.failed())
	}
}

// failed notes that the sink handed a record back (its receiver failing,
// its disk full) and returns when the record is due again: the relay
// slows to one record at a time, waiting longer each time.
func (r *Relay) failed() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.failing {
		r.failing, r.backoff = true, r.cfg.RetryDelay
		r.cfg.Logger.Warn("export: sink failing; its records wait in the export outbox, offered one at a time", "sink", r.cfg.Name)
	} else {
		r.backoff = min(2*r.backoff, r.cfg.MaxRetryDelay)
	}
	r.pauseUntil = time.Now().Add(r.backoff)
	return r.pauseUntil
}

// settle ends a record the sink is done with. It runs on the sink's
// goroutine, possibly after Run's context ended (shutdown).
func (r *Relay) settle(k outKey, s Settlement) {
	r.mu.Lock()
	it, ok := r.out[k]
	delete(r.out, k)
	if s == Delivered && r.failing {
		r.failing = false
		r.cfg.Logger.Info("export: sink delivering again", "sink", r.cfg.Name)
	}
	r.mu.Unlock()
	if !ok {
		return
	}
	defer r.Wake() // room for the next
	switch s {
	case Retry:
		r.deferred.Add(1)
		r.release(it, r.failed())
		return
	case Abandoned:
		r.deferred.Add(1)
		r.release(it, time.Now())
		return
	case Delivered:
		r.delivered.Add(1)
	case GivenUp:
		r.givenUp.Add(1)
	}
	r.finish(it)
}

// finish deletes a row, or keeps it for a change that arrived meanwhile.
func (r *Relay) finish(it store.ExportItem) {
	next := time.Now()
	if it.Kind == store.ExportUpdate {
		next = next.Add(r.cfg.UpdateDelay)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.cfg.Store.SettleExport(ctx, it, next); err != nil {
		// The row's lease lapses and it goes out again.
		r.storeError("settle", err)
	}
}

func (r *Relay) release(it store.ExportItem, due time.Time) {
	if r.storeRecentlyFailed() {
		r.storeErrs.Add(1) // the row's lease lapses; it goes out then
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.cfg.Store.ReleaseExport(ctx, it, due); err != nil {
		r.storeError("release", err)
	}
}

// storeRecentlyFailed reports whether a settle or release failed in the
// last few seconds.
func (r *Relay) storeRecentlyFailed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return time.Since(r.storeErrAt) < 5*time.Second
}

func (r *Relay) storeError(op string, err error) {
	if op == "settle" || op == "release" {
		r.mu.Lock()
		r.storeErrAt = time.Now()
		r.mu.Unlock()
	}
	if n := r.storeErrs.Add(1); n&(n-1) == 0 { // log at powers of two
		r.cfg.Logger.Warn("export outbox: "+op+" failed; its records stay queued", "sink", r.cfg.Name, "errors", n, "err", err)
	}
}

// Stats returns the relay's counters.
func (r *Relay) Stats() RelayStats {
	r.mu.Lock()
	n := len(r.out)
	r.mu.Unlock()
	return RelayStats{Offered: r.offered.Load(), Delivered: r.delivered.Load(), GivenUp: r.givenUp.Load(),
		Skipped: r.skipped.Load(), Deferred: r.deferred.Load(), StoreErrors: r.storeErrs.Load(), Out: n}
}

func relayDescs(name string) map[string]*prometheus.Desc {
	l := prometheus.Labels{"sink": name}
	d := map[string]*prometheus.Desc{"out": prometheus.NewDesc("mamori_export_outbox_out", "Records out with the export sink now.", nil, l)}
	for k, help := range map[string]string{
		"offered":      "Outbox records handed to the export sink.",
		"delivered":    "Outbox records the export sink delivered.",
		"given_up":     "Outbox records the export sink gave up (see its own counters).",
		"skipped":      "Outbox records skipped: the finding was purged or suppressed since it was queued.",
		"deferred":     "Outbox records the sink handed back, offered again later.",
		"store_errors": "Export outbox reads or writes that failed; the records stay queued.",
	} {
		d[k] = prometheus.NewDesc("mamori_export_outbox_"+k+"_total", help, nil, l)
	}
	return d
}

// Describe implements prometheus.Collector.
func (r *Relay) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range relayDescs(r.cfg.Name) {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (r *Relay) Collect(ch chan<- prometheus.Metric) {
	d, s := relayDescs(r.cfg.Name), r.Stats()
	for k, v := range map[string]uint64{"offered": s.Offered, "delivered": s.Delivered, "given_up": s.GivenUp,
		"skipped": s.Skipped, "deferred": s.Deferred, "store_errors": s.StoreErrors} {
		ch <- prometheus.MustNewConstMetric(d[k], prometheus.CounterValue, float64(v))
	}
	ch <- prometheus.MustNewConstMetric(d["out"], prometheus.GaugeValue, float64(s.Out))
}

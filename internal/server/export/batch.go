package export

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mamori-dev/mamori/internal/finding"
)

// Sink takes export records; Webhook is one. Send must not block.
type Sink interface {
	Send(f *finding.Finding, isNew bool) bool
}

// SinkFunc adapts a function to Sink.
type SinkFunc func(f *finding.Finding, isNew bool) bool

// Send calls fn.
func (fn SinkFunc) Send(f *finding.Finding, isNew bool) bool { return fn(f, isNew) }

// UpdateFrequencies are the update export frequencies users can choose, as
// in the reference product.
var UpdateFrequencies = []time.Duration{15 * time.Minute, time.Hour, 6 * time.Hour}

// DefaultUpdateFrequency is the reference product's default.
const DefaultUpdateFrequency = 6 * time.Hour

// ParseUpdateFrequency reads "15m", "1h" or "6h".
func ParseUpdateFrequency(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err == nil {
		for _, f := range UpdateFrequencies {
			if d == f {
				return d, nil
			}
		}
	}
	return 0, fmt.Errorf("update frequency %q: want 15m, 1h or 6h", s)
}

// BatcherStats are the batcher's counters.
type BatcherStats struct {
	New       uint64 `json:"new"`       // new findings sent at once
	Updates   uint64 `json:"updates"`   // updates received
	Coalesced uint64 `json:"coalesced"` // updates replaced by a later one before a flush
	Flushed   uint64 `json:"flushed"`   // updates sent by flushes
	Pending   int    `json:"pending"`   // updates waiting for the next flush
}

// Batcher is the export policy: a new finding goes to every sink at once;
// updates of a finding are held, the latest revision per finding id wins,
// and they go out together every UpdateFrequency. Pending updates are
// bounded by the number of distinct findings updated in one interval.
//
// Suppressed findings must not be published: the caller (ingest) decides
// that before calling Publish.
type Batcher struct {
	every time.Duration
	sinks []Sink

	mu      sync.Mutex
	pending map[string]*finding.Finding

	newN, updates, coalesced, flushed atomic.Uint64
}

// NewBatcher returns a batcher flushing updates every freq (any positive
// duration; DefaultUpdateFrequency when zero) to sinks.
func NewBatcher(freq time.Duration, sinks ...Sink) *Batcher {
	if freq <= 0 {
		freq = DefaultUpdateFrequency
	}
	return &Batcher{every: freq, sinks: sinks, pending: map[string]*finding.Finding{}}
}

// Publish hands a stored finding to the policy. The batcher keeps f until
// the next flush: the caller must not modify it afterwards.
func (b *Batcher) Publish(f *finding.Finding, isNew bool) {
	if isNew {
		b.mu.Lock()
		// A re-created finding carries the latest state itself.
		delete(b.pending, f.ID)
		b.mu.Unlock()
		b.newN.Add(1)
		b.send(f, true)
		return
	}
	b.updates.Add(1)
	b.mu.Lock()
	defer b.mu.Unlock()
	if old, ok := b.pending[f.ID]; ok {
		b.coalesced.Add(1)
		if newer(old, f) {
			return // out of order: keep the later revision
		}
	}
	b.pending[f.ID] = f
}

// newer reports whether a is a later revision than b.
func newer(a, b *finding.Finding) bool {
	if a.Service.Count != b.Service.Count {
		return a.Service.Count > b.Service.Count
	}
	return a.UpdatedAt.After(b.UpdatedAt)
}

// Flush sends every pending update now and returns how many.
func (b *Batcher) Flush() int {
	b.mu.Lock()
	batch := b.pending
	b.pending = make(map[string]*finding.Finding, len(batch))
	b.mu.Unlock()
	for _, f := range batch {
		b.send(f, false)
	}
	b.flushed.Add(uint64(len(batch)))
	return len(batch)
}

func (b *Batcher) send(f *finding.Finding, isNew bool) {
	for _, s := range b.sinks {
		s.Send(f, isNew)
	}
}

// Run flushes updates every interval until ctx ends, then flushes once
// more so no update is held back at shutdown.
func (b *Batcher) Run(ctx context.Context) {
	t := time.NewTicker(b.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			b.Flush()
			return
		case <-t.C:
			b.Flush()
		}
	}
}

// Stats returns the batcher's counters.
func (b *Batcher) Stats() BatcherStats {
	b.mu.Lock()
	n := len(b.pending)
	b.mu.Unlock()
	return BatcherStats{New: b.newN.Load(), Updates: b.updates.Load(), Coalesced: b.coalesced.Load(),
		Flushed: b.flushed.Load(), Pending: n}
}

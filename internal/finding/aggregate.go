package finding

import (
	"sync"
	"sync/atomic"
	"time"
)

// Aggregator merges repeats of the same activity into one finding: the
// first occurrence is new; later ones with the same id bump count and
// eventLastSeen. Updates are coalesced: a finding that changed is handed
// out again at most once per UpdateEvery (by Flush), so a tight loop of
// the same behaviour costs one line per interval, not one per event.
// Memory is bounded: past Capacity the least recently seen finding is
// forgotten (and counted); a later repeat of it is new again.
type Aggregator struct {
	mu          sync.Mutex
	cap         int
	updateEvery time.Duration
	byID        map[string]*agg
	evicted     atomic.Uint64
	merged      atomic.Uint64
}

type agg struct {
	f       *Finding
	dirty   bool
	emitted time.Time
}

// NewAggregator returns an aggregator holding up to capacity findings
// [10000] and re-emitting updates at most every updateEvery [5s].
func NewAggregator(capacity int, updateEvery time.Duration) *Aggregator {
	if capacity <= 0 {
		capacity = 10000
	}
	if updateEvery <= 0 {
		updateEvery = 5 * time.Second
	}
	return &Aggregator{cap: capacity, updateEvery: updateEvery, byID: map[string]*agg{}}
}

// Observe records f. It returns the finding to emit now — f itself when
// it is new, nil when it merged into a known one (Flush will emit it).
func (a *Aggregator) Observe(f *Finding) *Finding {
	a.mu.Lock()
	defer a.mu.Unlock()
	if g, ok := a.byID[f.ID]; ok {
		s := &g.f.Service
		s.Count++
		if f.Service.EventLastSeen.After(s.EventLastSeen) {
			s.EventLastSeen = f.Service.EventLastSeen
		}
		if f.Service.EventFirstSeen.Before(s.EventFirstSeen) {
			s.EventFirstSeen = f.Service.EventFirstSeen
		}
		g.f.UpdatedAt = time.Now().UTC()
		g.dirty = true
		a.merged.Add(1)
		return nil
	}
	if len(a.byID) >= a.cap {
		a.evictOldest()
	}
	a.byID[f.ID] = &agg{f: f, emitted: time.Now()}
	return f
}

// Flush returns copies of the findings updated since they were last
// emitted, for those last emitted at least UpdateEvery ago (all of them
// when force is set).
func (a *Aggregator) Flush(now time.Time, force bool) []*Finding {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []*Finding
	for _, g := range a.byID {
		if g.dirty && (force || now.Sub(g.emitted) >= a.updateEvery) {
			c := *g.f
			out = append(out, &c)
			g.dirty, g.emitted = false, now
		}
	}
	return out
}

func (a *Aggregator) evictOldest() {
	var oldest *agg
	for _, g := range a.byID {
		if oldest == nil || g.f.Service.EventLastSeen.Before(oldest.f.Service.EventLastSeen) {
			oldest = g
		}
	}
	if oldest != nil {
		delete(a.byID, oldest.f.ID)
		a.evicted.Add(1)
	}
}

// AggregatorStats are the aggregator's counters.
type AggregatorStats struct {
	Findings int    `json:"findings"`
	Merged   uint64 `json:"merged"`
	Evicted  uint64 `json:"evicted"`
}

// Stats returns the counters.
func (a *Aggregator) Stats() AggregatorStats {
	a.mu.Lock()
	n := len(a.byID)
	a.mu.Unlock()
	return AggregatorStats{Findings: n, Merged: a.merged.Load(), Evicted: a.evicted.Load()}
}

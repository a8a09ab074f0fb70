package finding

import (
	"container/list"
	"sync"
	"time"
)

// Aggregator merges repeats of the same activity into one finding, the
// way the reference product does: a repeat keeps the original id and
// bumps service.count and service.eventLastSeen (see Key for what "the
// same activity" means).
//
// New versus updated: Observe hands back a new finding at once; a repeat
// returns nil and marks the stored finding changed. Flush hands out the
// changed findings, each at most once per UpdateEvery, so a tight loop of
// the same behaviour costs one update per interval, not one per event.
//
// Memory is bounded: past Capacity the least recently seen finding is
// forgotten (and counted as evicted); a later repeat of it is new again,
// with the same id, so a store downstream still merges it.
//
// An Aggregator is safe for concurrent use. The findings it returns are
// copies: callers may keep or hand them to other goroutines.
type Aggregator struct {
	mu          sync.Mutex
	cap         int
	updateEvery time.Duration
	byID        map[string]*list.Element // of *agg
	lru         list.List                // front: most recently seen
	stats       AggregatorStats
}

type agg struct {
	f       *Finding
	dirty   bool
	emitted time.Time
	// prompt sends the next update without waiting out UpdateEvery: it
	// completes the finding rather than repeating it.
	prompt bool
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
	return &Aggregator{cap: capacity, updateEvery: updateEvery, byID: map[string]*list.Element{}}
}

// Observe records f. It returns a copy of f to emit now when f is new,
// and nil when f merged into a finding already held (Flush emits that
// update later).
func (a *Aggregator) Observe(f *Finding) *Finding {
	a.mu.Lock()
	defer a.mu.Unlock()
	if el, ok := a.byID[f.ID]; ok {
		g := el.Value.(*agg)
		mergeInto(g.f, f)
		g.dirty = true
		a.lru.MoveToFront(el)
		a.stats.Merged++
		return nil
	}
	for len(a.byID) >= a.cap {
		old := a.lru.Back()
		a.lru.Remove(old)
		delete(a.byID, old.Value.(*agg).f.ID)
		a.stats.Evicted++
	}
	c := *f
	a.byID[f.ID] = a.lru.PushFront(&agg{f: &c, emitted: time.Now()})
	a.stats.New++
	out := c
	return &out
}

// mergeInto folds a repeat into the held finding.
func mergeInto(held, rep *Finding) {
	s := &held.Service
	n := rep.Service.Count
	if n < 1 {
		n = 1
	}
	s.Count += n
	if rep.Service.EventLastSeen.After(s.EventLastSeen) {
		s.EventLastSeen = rep.Service.EventLastSeen
		// The latest occurrence's process is the one a responder wants.
		s.RuntimeDetails = rep.Service.RuntimeDetails
	}
	if rep.Service.EventFirstSeen.Before(s.EventFirstSeen) {
		s.EventFirstSeen = rep.Service.EventFirstSeen
	}
	if now := time.Now().UTC(); now.After(held.UpdatedAt) {
		held.UpdatedAt = now
	}
}

// AddHash fills in the executable's SHA-256 of held findings whose acting
// process is processUUID running exe — the file with identity image, when
// both sides know it — and lacks it: the agent hashes executables off the
// hot path, so a finding raised at exec (a dropped binary run) goes out
// before its hash is known. Each filled finding goes out with the next
// Flush, however recently it went out before, its count unchanged. It
// returns how many were filled.
func (a *Aggregator) AddHash(processUUID, exe, image, sha256 string) int {
	if processUUID == "" || exe == "" || sha256 == "" {
		return 0
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for el := a.lru.Front(); el != nil; el = el.Next() {
		g := el.Value.(*agg)
		p := g.f.Service.RuntimeDetails.Process
		if p == nil || p.UUID != processUUID || p.ExecutablePath != exe || p.ExecutableSha256 != "" {
			continue
		}
		// Same process and path is not enough: the file at the path may
		// have been replaced and exec'd again since this finding.
		if image != "" && p.ExeImage != "" && p.ExeImage != image {
			continue
		}
		// The held finding shares its Process with copies handed out.
		c := *p
		c.ExecutableSha256 = sha256
		g.f.Service.RuntimeDetails.Process = &c
		g.dirty, g.prompt = true, true
		n++
	}
	return n
}

// Flush returns copies of the findings updated since they were last
// emitted, for those last emitted at least UpdateEvery ago (all of them
// when force is set).
func (a *Aggregator) Flush(now time.Time, force bool) []*Finding {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []*Finding
	for el := a.lru.Front(); el != nil; el = el.Next() {
		g := el.Value.(*agg)
		if g.dirty && (force || g.prompt || now.Sub(g.emitted) >= a.updateEvery) {
			c := *g.f
			out = append(out, &c)
			g.dirty, g.prompt, g.emitted = false, false, now
		}
	}
	a.stats.Updates += uint64(len(out))
	return out
}

// AggregatorStats are the aggregator's counters.
type AggregatorStats struct {
	Findings int    `json:"findings"` // held now
	New      uint64 `json:"new"`      // first occurrences handed out by Observe
	Merged   uint64 `json:"merged"`   // repeats folded into a held finding
	Updates  uint64 `json:"updates"`  // updated findings handed out by Flush
	Evicted  uint64 `json:"evicted"`  // forgotten to stay within capacity
}

// Stats returns the counters.
func (a *Aggregator) Stats() AggregatorStats {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.stats
	s.Findings = len(a.byID)
	return s
}

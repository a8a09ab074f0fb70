package container

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/mamori-dev/mamori/internal/event"
)

// RetryCache holds events whose cgroup the table has not resolved yet, so
// that no container event leaves with empty container fields. An event is
// released as soon as its cgroup resolves; after MaxWait it is released
// with whatever is known (at least the id and runtime its cgroup path
// names, when the path is known) and counted as unresolved. Events of one
// cgroup leave in the order they came; a full cache drops the newest
// event and counts it.
//
// Offer and Flush are meant for a single pipeline goroutine (Run is that
// goroutine ready-made); counters may be read from anywhere.
type RetryCache struct {
	t       *Table
	cap     int
	maxWait time.Duration
	wake    chan struct{}
	q       []held
	byCg    map[uint64]int // held events per cgroup

	held, released, expired, gone, dropped atomic.Uint64
	pending                                atomic.Int64
}

type held struct {
	ev *event.Event
	at time.Time
}

// RetryOptions size a RetryCache; zero values take the defaults.
type RetryOptions struct {
	Capacity int           // events held at once [8192]
	MaxWait  time.Duration // longest an event is held [2s]
}

// NewRetryCache returns a cache releasing events as t resolves them.
func (t *Table) NewRetryCache(o RetryOptions) *RetryCache {
	if o.Capacity <= 0 {
		o.Capacity = 8192
	}
	if o.MaxWait <= 0 {
		o.MaxWait = 2 * time.Second
	}
	return &RetryCache{t: t, cap: o.Capacity, maxWait: o.MaxWait, wake: t.subscribe(), byCg: map[uint64]int{}}
}

// Offer enriches ev with its container and passes it to emit, or holds it
// until its cgroup resolves. Events that already carry a Container, or
// carry no cgroup id, pass straight through.
func (r *RetryCache) Offer(ev *event.Event, emit func(*event.Event)) {
	id := ev.Process.CgroupID
	if ev.Container != nil || id == 0 {
		emit(ev)
		return
	}
	if r.byCg[id] > 0 {
		// Earlier events of this cgroup are held; keep the order.
		r.hold(ev)
		return
	}
	c, st := r.t.status(id)
	switch st {
	case statusKnown:
		ev.Container = c
		emit(ev)
	case statusMissing:
		// A rescan after the id was first seen did not find its cgroup:
		// waiting cannot help.
		r.gone.Add(1)
		emit(ev)
	default:
		r.hold(ev)
	}
}

func (r *RetryCache) hold(ev *event.Event) {
	if len(r.q) >= r.cap {
		r.dropped.Add(1)
		return
	}
	r.q = append(r.q, held{ev: ev, at: time.Now()})
	r.byCg[ev.Process.CgroupID]++
	r.held.Add(1)
	r.pending.Store(int64(len(r.q)))
}

// Flush releases held events whose cgroup resolved or is gone, and those
// held for MaxWait. Call it when Wake fires and periodically.
func (r *RetryCache) Flush(now time.Time, emit func(*event.Event)) {
	if len(r.q) == 0 {
		return
	}
	keep := r.q[:0]
	blocked := map[uint64]bool{}
	for _, h := range r.q {
		id := h.ev.Process.CgroupID
		if blocked[id] {
			keep = append(keep, h)
			continue
		}
		c, st, _ := r.t.peek(id)
		switch {
		case st == statusKnown:
			h.ev.Container = c
			r.released.Add(1)
		case st == statusMissing:
			r.gone.Add(1)
		case now.Sub(h.at) >= r.maxWait:
			h.ev.Container = r.t.partial(id)
			r.expired.Add(1)
		default:
			blocked[id] = true
			keep = append(keep, h)
			continue
		}
		r.byCg[id]--
		if r.byCg[id] <= 0 {
			delete(r.byCg, id)
		}
		emit(h.ev)
	}
	for i := len(keep); i < len(r.q); i++ {
		r.q[i] = held{} // let released events be collected
	}
	r.q = keep
	r.pending.Store(int64(len(r.q)))
}

// Wake is signalled when the table may have resolved held cgroups.
func (r *RetryCache) Wake() <-chan struct{} { return r.wake }

// Len is the number of events held.
func (r *RetryCache) Len() int { return len(r.q) }

// Run is a pipeline stage: it reads events from in and writes them to out
// enriched, holding those not resolved yet. When in closes, held events
// are released at once (counted as expired) and Run returns.
func (r *RetryCache) Run(ctx context.Context, in <-chan *event.Event, out chan<- *event.Event) {
	send := func(ev *event.Event) {
		select {
		case out <- ev:
		case <-ctx.Done():
		}
	}
	tk := time.NewTicker(tick)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-in:
			if !ok {
				r.Flush(time.Now().Add(r.maxWait), send)
				return
			}
			r.Offer(ev, send)
		case <-r.wake:
			r.Flush(time.Now(), send)
		case now := <-tk.C:
			r.Flush(now, send)
		}
	}
}

// RetryStats are a RetryCache's counters.
type RetryStats struct {
	Held     uint64 // events that had to wait
	Released uint64 // waited, then released with their container resolved
	Expired  uint64 // released after MaxWait with what was known: unresolved
	Gone     uint64 // released unresolved because their cgroup no longer exists
	Dropped  uint64 // lost: the cache was full
	Pending  int64  // held now
}

// Stats returns the counters.
func (r *RetryCache) Stats() RetryStats {
	return RetryStats{
		Held: r.held.Load(), Released: r.released.Load(), Expired: r.expired.Load(),
		Gone: r.gone.Load(), Dropped: r.dropped.Load(), Pending: r.pending.Load(),
	}
}

package transport

import (
	"sync"
	"time"
)

// maxPause bounds how long pulls wait while the server is unavailable (and
// BackoffMax, when smaller), and so how late they resume after it is back.
const maxPause = 30 * time.Second

// maxTracked bounds the messages whose failures a consumer remembers.
const maxTracked = 100_000

// health is what a Consumer knows of the server's own ability to handle
// messages: whether its handlers report it Unavailable (an outage of its
// database or disk), how long pulls pause meanwhile, and each message's
// failures that were not such an outage. JetStream's delivery count also
// counts the deliveries of an outage, which must not use up a message's
// chances. A failure reported as an outage is the message's own after all
// when another message succeeded meanwhile — while it ran, or since the
// message first failed so — for then the server was working.
type health struct {
	base, max time.Duration

	mu          sync.Mutex
	lastSuccess time.Time
	since       time.Time // start of the current or last outage
	until       time.Time // its end; zero while it lasts
	pauseUntil  time.Time
	pauseLen    time.Duration
	failures    map[uint64]*failures // by stream sequence
}

// failures is what a consumer remembers of one message's failures.
type failures struct {
	own   int       // failures of its own
	first time.Time // its first failure reported as an outage
}

func newHealth(base, maxDelay time.Duration) *health {
	return &health{base: base, max: min(maxDelay, maxPause), failures: map[uint64]*failures{}}
}

// succeeded records a message handled by a handler that started at
// started: an outage ends, pulls resume.
func (h *health) succeeded(seq uint64, started time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if started.After(h.lastSuccess) {
		h.lastSuccess = started
	}
	if !h.since.IsZero() && h.until.IsZero() {
		h.until = started
	}
	h.pauseLen, h.pauseUntil = 0, time.Time{}
	delete(h.failures, seq)
}

// outage reports whether the handler of message seq, which started at
// started and reported the server unavailable, saw an outage. It did
// unless the server was working meanwhile: a message succeeded after the
// handler started, or — outside an outage already declared since the last
// success — since this message first failed so (a message claiming an
// outage while others succeed). If so the outage is recorded, pulls pause
// (doubling from base, at most once per pause, up to max) and the pause
// is returned.
func (h *health) outage(seq uint64, started, now time.Time) (time.Duration, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	f := h.track(seq)
	ongoing := !h.since.IsZero() && h.until.IsZero() && !h.since.Before(h.lastSuccess)
	switch {
	case h.lastSuccess.After(started):
		return 0, false
	case ongoing:
		f.first = started // this outage's failure, whatever came before
	case f.first.IsZero() || !h.lastSuccess.After(f.first):
		if f.first.IsZero() {
			f.first = started
		}
	default:
		return 0, false
	}
	if !ongoing {
		h.since, h.until = started, time.Time{}
	}
	if now.Before(h.pauseUntil) {
		return h.pauseUntil.Sub(now), true
	}
	h.pauseLen = min(max(2*h.pauseLen, h.base), h.max)
	h.pauseUntil = now.Add(h.pauseLen)
	return h.pauseLen, true
}

// failed counts one of the message's own failures and returns how many it
// has had.
func (h *health) failed(seq uint64) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	f := h.track(seq)
	f.own++
	return f.own
}

// track returns seq's record, made on first use. At the bound one record
// is forgotten: its message gets more chances, never fewer.
func (h *health) track(seq uint64) *failures {
	f := h.failures[seq]
	if f == nil {
		if len(h.failures) >= maxTracked {
			for k := range h.failures {
				delete(h.failures, k)
				break
			}
		}
		f = &failures{}
		h.failures[seq] = f
	}
	return f
}

// forget drops a message given up on.
func (h *health) forget(seq uint64) {
	h.mu.Lock()
	delete(h.failures, seq)
	h.mu.Unlock()
}

// pausedFor is how long pulls still wait.
func (h *health) pausedFor(now time.Time) time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.pauseUntil.Sub(now)
}

// Outage returns the current or last outage (zero times: none seen); until
// is zero while it lasts.
func (h *health) Outage() (since, until time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.since, h.until
}

// LastStored is when the handler of the last stored message started (zero:
// none yet).
func (h *health) LastStored() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lastSuccess
}

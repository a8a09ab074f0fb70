package transport

import (
	"math/rand/v2"
	"sync"
	"time"
)

// pacer spaces an agent's attempts while the server refuses its messages for
// now (the stream is full, JetStream does not answer, acks time out).
//
// Without it every refused message would be retried at once, and every new
// one sent anyway: under overload each such attempt costs the server a TLS
// read, a JetStream lookup and a refusal, and a thousand agents retrying
// crowd out the consumption that would make room. With it a refused agent
// keeps new messages in its spool and probes again after a delay that
// doubles per failed probe (jittered, so a fleet refused together does not
// come back together), and the server's intake stays near what it can store.
type pacer struct {
	base, max time.Duration

	mu    sync.Mutex
	delay time.Duration // the last backoff; 0 while the server accepts
	until time.Time     // no attempts before this
}

func newPacer(base, max time.Duration) *pacer {
	return &pacer{base: base, max: max}
}

// fail records a refusal seen at now. Refusals arriving while a backoff is
// already running belong to the same episode (a burst of in-flight publishes
// failing together) and do not lengthen it.
func (p *pacer) fail(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if now.Before(p.until) {
		return
	}
	p.delay = min(max(2*p.delay, p.base), p.max)
	// Uniform in [delay/2, delay): spreads a fleet's probes over time.
	d := p.delay/2 + rand.N(p.delay/2+1)
	p.until = now.Add(d)
}

// ok records an accepted message seen at now. An ack arriving during a
// backoff was for a message sent before it, so it does not end the backoff;
// the first success after it does, and resets the delay.
func (p *pacer) ok(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.delay != 0 && !now.Before(p.until) {
		p.delay, p.until = 0, time.Time{}
	}
}

// wait returns how long to hold off attempts at now (0: go ahead).
func (p *pacer) wait(now time.Time) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	if now.Before(p.until) {
		return p.until.Sub(now)
	}
	return 0
}

// backingOff reports whether the last attempt was refused and no later one
// has succeeded yet.
func (p *pacer) backingOff() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.delay != 0
}

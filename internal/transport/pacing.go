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
//
// Outcomes are judged by when their message was sent: an ack or a timeout
// arriving late for a message sent before the current episode began says
// nothing about the server now, so it neither ends nor lengthens a backoff.
type pacer struct {
	base, max time.Duration

	mu    sync.Mutex
	delay time.Duration // the last backoff; 0 while the server accepts
	since time.Time     // when the current episode (or probe) began
	until time.Time     // no attempts before this
}

func newPacer(base, max time.Duration) *pacer {
	return &pacer{base: base, max: max}
}

// fail records a refusal, seen at now, of a message sent at sent.
// Refusals of messages sent before the current probe, or arriving while a
// pause runs, belong to an episode already counted (a burst of in-flight
// publishes failing together) and do not lengthen it.
func (p *pacer) fail(sent, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if sent.Before(p.since) || now.Before(p.until) {
		return
	}
	p.delay = min(max(2*p.delay, p.base), p.max)
	// Uniform in [delay/2, delay]: spreads a fleet's probes over time.
	d := p.delay/2 + rand.N(p.delay/2+1)
	p.since, p.until = now, now.Add(d)
}

// ok records that a message sent at sent was accepted. Only a message sent
// after the pause (a probe) ends the backoff and resets the delay.
func (p *pacer) ok(sent time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.delay != 0 && !sent.Before(p.until) {
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

package transport

import (
	"testing"
	"time"
)

func TestPacerBacksOffAndRecovers(t *testing.T) {
	p := newPacer(100*time.Millisecond, 800*time.Millisecond)
	t0 := time.Unix(1000, 0)
	if p.wait(t0) != 0 || p.backingOff() {
		t.Fatal("a fresh pacer holds off")
	}
	p.fail(t0.Add(-time.Second), t0)
	w := p.wait(t0)
	if w < 50*time.Millisecond || w > 100*time.Millisecond {
		t.Fatalf("first backoff %v, want within [50ms, 100ms]", w)
	}
	// More refusals from the same burst do not lengthen it; nor does a late
	// ack of a message sent before it.
	p.fail(t0.Add(-time.Millisecond), t0.Add(10*time.Millisecond))
	p.ok(t0.Add(-2 * time.Millisecond))
	if got := p.wait(t0); got != w || !p.backingOff() {
		t.Fatalf("within the episode: wait %v (want %v), backing off %v", got, w, p.backingOff())
	}
	// Nor, after the pause, does an outcome of a message sent before the
	// episode began (an ack timeout arriving seconds later, a late ack).
	late := t0.Add(w + time.Second)
	p.fail(t0.Add(-time.Millisecond), late)
	p.ok(t0.Add(-time.Millisecond))
	if p.wait(late) != 0 || !p.backingOff() {
		t.Fatalf("a stale outcome changed the backoff: wait %v, backing off %v", p.wait(late), p.backingOff())
	}
	// Each failed probe doubles the delay, up to the cap.
	now := t0
	var last time.Duration
	for range 6 {
		now = now.Add(p.wait(now))
		p.fail(now, now.Add(time.Millisecond))
		now = now.Add(time.Millisecond)
		last = p.wait(now)
	}
	if last < 399*time.Millisecond || last > 800*time.Millisecond {
		t.Fatalf("capped backoff %v, want within [400ms, 800ms]", last)
	}
	// An accepted probe (sent after the pause) ends it and resets the delay.
	now = now.Add(last)
	p.ok(now)
	if p.wait(now) != 0 || p.backingOff() {
		t.Fatal("a successful probe did not end the backoff")
	}
	p.fail(now, now)
	if w := p.wait(now); w > 100*time.Millisecond {
		t.Fatalf("after recovery the backoff restarts at %v, want ≤ 100ms", w)
	}
}

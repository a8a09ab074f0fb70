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
	p.fail(t0)
	w := p.wait(t0)
	if w < 50*time.Millisecond || w > 100*time.Millisecond {
		t.Fatalf("first backoff %v, want within [50ms, 100ms]", w)
	}
	// More refusals from the same burst do not lengthen it; nor does a late
	// ack of a message sent before it.
	p.fail(t0.Add(10 * time.Millisecond))
	p.ok(t0.Add(20 * time.Millisecond))
	if got := p.wait(t0); got != w || !p.backingOff() {
		t.Fatalf("within the episode: wait %v (want %v), backing off %v", got, w, p.backingOff())
	}
	// Each failed probe doubles the delay, up to the cap.
	now := t0
	var last time.Duration
	for range 6 {
		now = now.Add(p.wait(now))
		p.fail(now)
		last = p.wait(now)
	}
	if last < 400*time.Millisecond || last > 800*time.Millisecond {
		t.Fatalf("capped backoff %v, want within [400ms, 800ms]", last)
	}
	// The first success after the pause ends it and resets the delay.
	now = now.Add(last)
	p.ok(now)
	if p.wait(now) != 0 || p.backingOff() {
		t.Fatal("a successful probe did not end the backoff")
	}
	p.fail(now)
	if w := p.wait(now); w > 100*time.Millisecond {
		t.Fatalf("after recovery the backoff restarts at %v, want ≤ 100ms", w)
	}
}

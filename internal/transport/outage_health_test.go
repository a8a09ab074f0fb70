package transport

import (
	"testing"
	"time"
)

// The consumer's view of the server's health, step by step on a test clock:
// pauses double at most once per pause and reset on a success; an outage
// spans from the first failure nothing disproves to the next success; a
// message failing across two outages is never charged for either; one
// claiming an outage while others succeed is.
func TestHealthJudgesOutages(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	h := newHealth(100*time.Millisecond, time.Second)
	expectOutage := func(step string, seq uint64, started, now int, wantPause time.Duration) {
		t.Helper()
		pause, ok := h.outage(seq, at(started), at(now))
		if !ok || pause != wantPause {
			t.Fatalf("%s: outage %v, pause %v; want an outage, pause %v", step, ok, pause, wantPause)
		}
	}
	expectOwn := func(step string, seq uint64, started, now int) {
		t.Helper()
		if pause, ok := h.outage(seq, at(started), at(now)); ok {
			t.Fatalf("%s: judged an outage (pause %v), want the message's own failure", step, pause)
		}
	}

	// Outage 1: messages 1..3 fail at once; the pause doubles once.
	expectOutage("first failure", 1, 0, 10, 100*time.Millisecond)
	expectOutage("same pause", 2, 0, 20, 90*time.Millisecond)
	expectOutage("after the pause", 3, 150, 160, 200*time.Millisecond)
	if since, until := h.Outage(); !since.Equal(at(0)) || !until.IsZero() {
		t.Fatalf("outage 1: %v – %v", since, until)
	}
	for i := range 50 { // a long outage, pause after pause: it stops at its maximum
		if _, ok := h.outage(1, at(0), at(1000*(i+1))); !ok {
			t.Fatal("long outage: not an outage")
		}
	}
	if h.pauseLen != time.Second {
		t.Fatalf("pause grew to %v, max 1s", h.pauseLen)
	}

	// A success ends it and resets the pause.
	h.succeeded(9, at(5000))
	if since, until := h.Outage(); !since.Equal(at(0)) || !until.Equal(at(5000)) {
		t.Fatalf("outage 1 ended: %v – %v", since, until)
	}
	if h.pausedFor(at(5000)) > 0 {
		t.Fatal("still paused after a success")
	}

	// Outage 2 (a flap): message 1, which failed in outage 1, fails again
	// once outage 2 is declared by another message: still an outage.
	expectOutage("outage 2 begins", 4, 6000, 6010, 100*time.Millisecond)
	expectOutage("a message of outage 1 in outage 2", 1, 6005, 6020, 90*time.Millisecond)
	if f := h.failures[1]; f.own != 0 {
		t.Fatalf("message 1 charged %d failures of its own", f.own)
	}
	h.succeeded(9, at(7000))

	// A message that claims an outage while others succeed: its first
	// claim declares one (nothing disproves it yet), a success follows, and
	// its next claim is its own failure.
	expectOutage("the liar's first claim", 5, 8000, 8010, 100*time.Millisecond)
	h.succeeded(6, at(8020))
	expectOwn("the liar's second claim", 5, 8100, 8110)
	// A failure whose handler overlapped a success is its own, too.
	expectOwn("overlapping a success", 7, 8010, 8200)
}

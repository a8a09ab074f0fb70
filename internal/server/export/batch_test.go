package export

import (
	"context"

	"encoding/json"
	"github.com/prometheus/client_golang/prometheus"
	"testing"
	"time"

	"github.com/mamori-dev/mamori/internal/finding"
)

func revision(base *finding.Finding, count int64) *finding.Finding {
	f := *base
	f.Service.Count = count
	f.UpdatedAt = base.UpdatedAt.Add(time.Duration(count) * time.Second)
	return &f
}

func TestBatcherPolicy(t *testing.T) {
	sink := &countingSink{}
	b := NewBatcher(time.Hour, sink)
	fx := fixtures()
	shell, dns := fx["reverse-shell"], fx["intel-dns"]

	b.Publish(shell, true)
	if len(sink.got) != 1 || sink.news.Load() != 1 {
		t.Fatalf("a new finding was not sent at once: %d", len(sink.got))
	}
	// Updates wait for the flush; the latest revision per finding wins,
	// even when revisions arrive out of order.
	b.Publish(revision(shell, 5), false)
	b.Publish(revision(shell, 7), false)
	b.Publish(revision(shell, 6), false)
	b.Publish(revision(dns, 2), false)
	if len(sink.got) != 1 {
		t.Fatalf("updates were sent before the flush: %d", len(sink.got))
	}
	if s := b.Stats(); s.Pending != 2 || s.Updates != 4 || s.Coalesced != 2 {
		t.Fatalf("stats %+v", s)
	}
	reg := prometheus.NewRegistry()
	if err := reg.Register(b); err != nil {
		t.Fatal(err)
	}
	if got := gather(t, reg); got["mamori_export_updates_pending"] != 2 || got["mamori_export_new_total"] != 1 || got["mamori_export_updates_coalesced_total"] != 2 {
		t.Fatalf("metrics %v", got)
	}
	if n := b.Flush(); n != 2 {
		t.Fatalf("flushed %d", n)
	}
	counts := map[string]int64{}
	for _, f := range sink.got[1:] {
		counts[f.ID] = f.Service.Count
	}
	if counts[shell.ID] != 7 || counts[dns.ID] != 2 {
		t.Fatalf("flushed revisions %v", counts)
	}
	// A finding created again (after the aggregator forgot it) carries the
	// latest state: its pending update is dropped, not sent after it.
	b.Publish(revision(dns, 3), false)
	b.Publish(revision(dns, 4), true)
	if b.Flush() != 0 {
		t.Error("an update outlived the new record that superseded it")
	}
}

func TestBatcherRunFlushesOnTickAndStop(t *testing.T) {
	sink := &countingSink{}
	b := NewBatcher(100*time.Millisecond, sink)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { b.Run(ctx); close(done) }()
	f := fixtures()["reverse-shell"]
	b.Publish(revision(f, 2), false)
	start := time.Now()
	waitFor(t, "tick flush", func() bool { return b.Stats().Flushed == 1 })
	if el := time.Since(start); el < 50*time.Millisecond {
		t.Errorf("flushed after %v, before the interval", el)
	}
	b.Publish(revision(f, 3), false)
	cancel()
	<-done
	if s := b.Stats(); s.Flushed != 2 || s.Pending != 0 {
		t.Fatalf("stop did not flush: %+v", s)
	}
}

// TestBatcherToWebhook runs the policy into a real webhook and receiver,
// in OCSF: new findings arrive as Create at once, updates as Update at the
// flush.
func TestBatcherToWebhook(t *testing.T) {
	rc := newReceiver(t, nil)
	enc, _ := NewEncoder(FormatOCSF, testOptions)
	w, _, _ := startWebhook(t, WebhookConfig{URL: rc.URL, Encoder: enc})
	b := NewBatcher(time.Hour, w)
	f := fixtures()["reverse-shell"]
	b.Publish(f, true)
	waitFor(t, "create", func() bool { return rc.count() == 1 })
	for c := int64(4); c < 10; c++ {
		b.Publish(revision(f, c), false)
	}
	time.Sleep(50 * time.Millisecond)
	if rc.count() != 1 {
		t.Fatalf("updates delivered before the flush: %d", rc.count())
	}
	b.Flush()
	waitFor(t, "update", func() bool { return rc.count() == 2 })
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var first, second OCSFFinding
	if err := json.Unmarshal(rc.bodies[0], &first); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(rc.bodies[1], &second); err != nil {
		t.Fatal(err)
	}
	if first.ActivityID != OCSFActivityCreate || second.ActivityID != OCSFActivityUpdate || second.Count != 9 {
		t.Errorf("got activity %d then %d (count %d)", first.ActivityID, second.ActivityID, second.Count)
	}
	if rc.headers[0].Get("Idempotency-Key") == rc.headers[1].Get("Idempotency-Key") {
		t.Error("two revisions share a record id")
	}
}

// gather reads every metric of reg by name (labels summed).
func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			out[mf.GetName()] += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return out
}

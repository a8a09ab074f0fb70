package export

import (
	"context"
	"encoding/json"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// receiver is a real HTTP server answering with the statuses its handler
// picks and recording what it received.
type receiver struct {
	*httptest.Server
	mu       sync.Mutex
	bodies   [][]byte
	headers  []http.Header
	attempts []time.Time
	respond  func(n int, w http.ResponseWriter) // n counts requests from 1
}

func newReceiver(t *testing.T, respond func(n int, w http.ResponseWriter)) *receiver {
	r := &receiver{respond: respond}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.bodies = append(r.bodies, b)
		r.headers = append(r.headers, req.Header.Clone())
		r.attempts = append(r.attempts, time.Now())
		n := len(r.attempts)
		r.mu.Unlock()
		if r.respond != nil {
			r.respond(n, w)
		}
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.attempts)
}

func startWebhook(t *testing.T, cfg WebhookConfig) (*Webhook, context.CancelFunc, <-chan struct{}) {
	t.Helper()
	w, err := NewWebhook(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return w, cancel, done
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestWebhookDelivers(t *testing.T) {
	rc := newReceiver(t, nil) // 200
	enc, _ := NewEncoder(FormatEventBus, testOptions)
	w, _, _ := startWebhook(t, WebhookConfig{URL: rc.URL + "/hook", Encoder: enc,
		Headers: map[string]string{"Authorization": "Bearer s3cret"}})
	f := fixtures()["reverse-shell"]
	var settled settlements
	if !w.Offer(f, true, settled.done) {
		t.Fatal("send refused")
	}
	waitFor(t, "delivery", func() bool { return settled.counts()[Delivered] == 1 })
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var env Envelope
	if err := json.Unmarshal(rc.bodies[0], &env); err != nil {
		t.Fatal(err)
	}
	if env.Detail.ID != f.ID || env.DetailType != "Mamori Finding" {
		t.Errorf("body: %s", rc.bodies[0])
	}
	h := rc.headers[0]
	if h.Get("Content-Type") != "application/json" || h.Get("Authorization") != "Bearer s3cret" || h.Get("Idempotency-Key") != RecordID(f) {
		t.Errorf("headers: %v", h)
	}
	if s := w.Stats(); s.Queued != 1 || s.Failed != 0 || s.Retries != 0 || s.Deferred != 0 {
		t.Errorf("stats %+v", s)
	}
}

func TestWebhookRetriesWithBackoff(t *testing.T) {
	rc := newReceiver(t, func(n int, w http.ResponseWriter) {
		if n <= 3 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	base := 40 * time.Millisecond
	w, _, _ := startWebhook(t, WebhookConfig{URL: rc.URL, BaseBackoff: base, MaxBackoff: time.Second})
	w.Offer(fixtures()["intel-dns"], true, nil)
	waitFor(t, "delivery", func() bool { return w.Stats().Delivered == 1 })
	if s := w.Stats(); s.Retries != 3 || s.Failed != 0 || rc.count() != 4 {
		t.Fatalf("stats %+v after %d attempts", s, rc.count())
	}
	// Waits grow: retry k waits at least base*2^(k-1)/2 (jitter lives in
	// the upper half).
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for k := 1; k < len(rc.attempts); k++ {
		gap := rc.attempts[k].Sub(rc.attempts[k-1])
		if min := (base << (k - 1)) / 2; gap < min {
			t.Errorf("retry %d after %v, want >= %v", k, gap, min)
		}
	}
	if !equalBodies(rc.bodies) {
		t.Error("retries sent different bodies")
	}
}

func equalBodies(b [][]byte) bool {
	for _, x := range b[1:] {
		if string(x) != string(b[0]) {
			return false
		}
	}
	return true
}

func TestWebhookGivesUp(t *testing.T) {
	rc := newReceiver(t, func(n int, w http.ResponseWriter) { w.WriteHeader(http.StatusInternalServerError) })
	w, _, _ := startWebhook(t, WebhookConfig{URL: rc.URL, MaxAttempts: 3, BaseBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond})
	var settled settlements
	w.Offer(fixtures()["intel-dns"], true, settled.done)
	waitFor(t, "failure", func() bool { return settled.counts()[GivenUp] == 1 })
	if s := w.Stats(); rc.count() != 3 || s.Retries != 2 || s.Delivered != 0 || s.Failed != 1 {
		t.Fatalf("stats %+v after %d attempts", s, rc.count())
	}
}

// A receiver down for a while (a deploy: 5xx, then refused connections)
// gets every record when it is back, with the default policy: it retries
// for a time window, not a handful of attempts.
func TestWebhookOutlastsAReceiverOutage(t *testing.T) {
	rc := newReceiver(t, func(n int, w http.ResponseWriter) {
		if n <= 25 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	w, _, _ := startWebhook(t, WebhookConfig{URL: rc.URL, BaseBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond})
	w.Offer(fixtures()["intel-dns"], true, nil)
	w.Offer(fixtures()["reverse-shell"], true, nil)
	waitFor(t, "delivery after the outage", func() bool { return w.Stats().Delivered == 2 })
	if s := w.Stats(); s.Failed != 0 || s.Deferred != 0 || s.Retries < 25 {
		t.Fatalf("stats %+v", s)
	}
	// The window still ends: a receiver that never comes back has the
	// record handed back for later (Retry: the outbox keeps it), not
	// counted as given up.
	dead := newReceiver(t, func(n int, w http.ResponseWriter) { w.WriteHeader(http.StatusBadGateway) })
	w2, _, _ := startWebhook(t, WebhookConfig{URL: dead.URL, BaseBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond, RetryFor: 100 * time.Millisecond})
	var settled settlements
	w2.Offer(fixtures()["intel-dns"], true, settled.done)
	waitFor(t, "handing back after the window", func() bool { return settled.counts()[Retry] == 1 })
	if s := w2.Stats(); s.Failed != 0 || s.Deferred != 1 {
		t.Fatalf("stats %+v", s)
	}
}

// A receiver refusing one record with 5xx (its content, say) does not hold
// the others back: after a few attempts it waits at the back of the queue,
// and is given up when its own window ends, since the receiver took the
// others meanwhile (a failing receiver's records are handed back instead).
func TestWebhookPoisonRecordIsSetAside(t *testing.T) {
	poison := fixtures()["intel-dns"]
	var mu sync.Mutex
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if strings.Contains(string(b), poison.ID) {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		mu.Lock()
		got = append(got, r.Header.Get("Idempotency-Key"))
		mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	w, _, _ := startWebhook(t, WebhookConfig{URL: srv.URL, BaseBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond,
		RetryFor: 2 * time.Second})
	var settled settlements
	w.Offer(poison, true, settled.done)
	fx := fixtures()
	n := 0
	for name, f := range fx {
		if name != "intel-dns" {
			w.Offer(f, true, nil)
			n++
		}
	}
	waitFor(t, "the others delivered", func() bool { return w.Stats().Delivered == uint64(n) })
	if s := w.Stats(); s.Failed != 0 || s.Deferred != 0 {
		t.Fatalf("the others waited for the poison record to be handed back: %+v", s)
	}
	waitFor(t, "the poison record given up", func() bool { return settled.counts()[GivenUp] == 1 })
	if s := w.Stats(); s.Failed != 1 || s.Deferred != 0 {
		t.Fatalf("stats %+v", s)
	}
	if w.Stats().Pending != 0 || !w.Drain(context.Background()) {
		t.Fatalf("queue not empty: %+v", w.Stats())
	}
}

// A receiver gone for longer than the window: later records get one
// attempt each before they go back, instead of a whole window each.
func TestWebhookReceiverGoneForGood(t *testing.T) {
	dead := newReceiver(t, func(n int, w http.ResponseWriter) { w.WriteHeader(http.StatusBadGateway) })
	w, _, _ := startWebhook(t, WebhookConfig{URL: dead.URL, BaseBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond,
		RetryFor: 200 * time.Millisecond})
	var settled settlements
	w.Offer(fixtures()["intel-dns"], true, settled.done)
	waitFor(t, "the first handed back", func() bool { return settled.counts()[Retry] == 1 })
	before := dead.count()
	start := time.Now()
	w.Offer(fixtures()["reverse-shell"], true, settled.done)
	waitFor(t, "the second handed back", func() bool { return settled.counts()[Retry] == 2 })
	if d, tries := time.Since(start), dead.count()-before; tries != 1 || d > 150*time.Millisecond {
		t.Fatalf("second record: %d attempts over %v, want one at once", tries, d)
	}
}

// A probe (OfferProbe) tests a failing receiver with one attempt, however
// long the retry window.
func TestWebhookProbeIsOneAttempt(t *testing.T) {
	dead := newReceiver(t, func(n int, w http.ResponseWriter) { w.WriteHeader(http.StatusServiceUnavailable) })
	w, _, _ := startWebhook(t, WebhookConfig{URL: dead.URL, BaseBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond})
	var settled settlements
	w.OfferProbe(fixtures()["intel-dns"], true, settled.done)
	waitFor(t, "the probe handed back", func() bool { return settled.counts()[Retry] == 1 })
	if n := dead.count(); n != 1 {
		t.Fatalf("a probe made %d attempts", n)
	}
}

func TestWebhookClientErrorIsNotRetried(t *testing.T) {
	rc := newReceiver(t, func(n int, w http.ResponseWriter) { w.WriteHeader(http.StatusBadRequest) })
	w, _, _ := startWebhook(t, WebhookConfig{URL: rc.URL, BaseBackoff: time.Millisecond})
	w.Offer(fixtures()["intel-dns"], true, nil)
	waitFor(t, "failure", func() bool { return w.Stats().Failed == 1 })
	time.Sleep(50 * time.Millisecond)
	if rc.count() != 1 || w.Stats().Retries != 0 {
		t.Fatalf("a 400 was retried: %d attempts", rc.count())
	}
}

func TestWebhookAttemptTimeout(t *testing.T) {
	rc := newReceiver(t, func(n int, w http.ResponseWriter) {
		if n == 1 {
			time.Sleep(300 * time.Millisecond) // past the attempt timeout
		}
	})
	w, _, _ := startWebhook(t, WebhookConfig{URL: rc.URL, Timeout: 50 * time.Millisecond, BaseBackoff: time.Millisecond})
	start := time.Now()
	w.Offer(fixtures()["intel-dns"], true, nil)
	waitFor(t, "delivery", func() bool { return w.Stats().Delivered == 1 })
	if s := w.Stats(); s.Retries != 1 || rc.count() != 2 {
		t.Fatalf("stats %+v after %d attempts", s, rc.count())
	}
	// The second attempt began before the slow handler finished: the first
	// attempt was cut by the timeout, not waited out.
	rc.mu.Lock()
	gap := rc.attempts[1].Sub(start)
	rc.mu.Unlock()
	if gap >= 300*time.Millisecond {
		t.Errorf("second attempt after %v: the timeout did not cut the first", gap)
	}
}

func TestWebhookRetryAfter(t *testing.T) {
	rc := newReceiver(t, func(n int, w http.ResponseWriter) {
		if n == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
		}
	})
	w, _, _ := startWebhook(t, WebhookConfig{URL: rc.URL, BaseBackoff: time.Millisecond, MaxBackoff: 3 * time.Second})
	w.Offer(fixtures()["intel-dns"], true, nil)
	waitFor(t, "delivery", func() bool { return w.Stats().Delivered == 1 })
	rc.mu.Lock()
	gap := rc.attempts[1].Sub(rc.attempts[0])
	rc.mu.Unlock()
	if gap < 900*time.Millisecond {
		t.Errorf("Retry-After: 1 not honoured: retried after %v", gap)
	}
}

func TestWebhookUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now: connection refused
	w, _, _ := startWebhook(t, WebhookConfig{URL: "http://" + addr + "/", MaxAttempts: 2, BaseBackoff: time.Millisecond})
	w.Offer(fixtures()["intel-dns"], true, nil)
	waitFor(t, "failure", func() bool { return w.Stats().Failed == 1 })
	if s := w.Stats(); s.Retries != 1 {
		t.Errorf("stats %+v", s)
	}
}

func TestWebhookQueueBoundAndOrder(t *testing.T) {
	rc := newReceiver(t, nil)
	w, err := NewWebhook(WebhookConfig{URL: rc.URL, QueueSize: 3})
	if err != nil {
		t.Fatal(err)
	}
	base := fixtures()["reverse-shell"]
	var accepted int
	for i := range 10 {
		f := *base
		f.Service.Count = int64(i + 1)
		if w.Offer(&f, false, nil) {
			accepted++
		}
	}
	if s := w.Stats(); accepted != 3 || s.Queued != 3 || s.Deferred != 7 || s.Pending != 3 {
		t.Fatalf("accepted %d, stats %+v", accepted, s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	waitFor(t, "delivery", func() bool { return w.Stats().Delivered == 3 })
	cancel()
	<-done
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for i, b := range rc.bodies {
		var env Envelope
		if err := json.Unmarshal(b, &env); err != nil {
			t.Fatal(err)
		}
		if env.Detail.Service.Count != int64(i+1) {
			t.Errorf("record %d carries count %d: order not kept", i, env.Detail.Service.Count)
		}
	}
	// After Run has returned nothing is accepted, and that is counted.
	if w.Offer(base, true, nil) || w.Stats().Deferred != 8 {
		t.Errorf("send after stop: stats %+v", w.Stats())
	}
}

func TestWebhookShutdownCountsLeftovers(t *testing.T) {
	block := make(chan struct{})
	rc := newReceiver(t, func(n int, w http.ResponseWriter) { <-block })
	defer close(block)
	w, cancel, done := startWebhook(t, WebhookConfig{URL: rc.URL, Timeout: time.Minute})
	var settled settlements
	for range 4 {
		w.Offer(fixtures()["intel-dns"], true, settled.done)
	}
	waitFor(t, "first attempt", func() bool { return rc.count() == 1 })
	cancel()
	<-done
	// One was in flight, three waited: all four are handed back to the
	// caller (the outbox keeps them), none lost silently.
	if s := w.Stats(); s.Deferred != 4 || s.Delivered != 0 || s.Failed != 0 || s.Pending != 0 {
		t.Fatalf("stats %+v", s)
	}
	if got := settled.counts(); got[Abandoned] != 4 || len(got) != 1 {
		t.Fatalf("settlements %v, want 4 abandoned", got)
	}
}

func TestWebhookDrain(t *testing.T) {
	rc := newReceiver(t, func(n int, w http.ResponseWriter) { time.Sleep(20 * time.Millisecond) })
	w, cancel, done := startWebhook(t, WebhookConfig{URL: rc.URL})
	for range 5 {
		w.Offer(fixtures()["intel-dns"], true, nil)
	}
	ctx, stop := context.WithTimeout(context.Background(), 5*time.Second)
	defer stop()
	if !w.Drain(ctx) {
		t.Fatal("drain timed out")
	}
	cancel()
	<-done
	if s := w.Stats(); s.Delivered != 5 || s.Deferred != 0 {
		t.Fatalf("after drain: %+v", s)
	}
	// A receiver that never answers: Drain gives up at its deadline.
	block := make(chan struct{})
	defer close(block)
	slow := newReceiver(t, func(n int, w http.ResponseWriter) { <-block })
	w2, _, _ := startWebhook(t, WebhookConfig{URL: slow.URL, Timeout: time.Minute})
	w2.Offer(fixtures()["intel-dns"], true, nil)
	short, stop2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer stop2()
	if w2.Drain(short) {
		t.Fatal("drain reported empty while a record was in flight")
	}
}

func TestWebhookMetrics(t *testing.T) {
	rc := newReceiver(t, nil)
	w, _, _ := startWebhook(t, WebhookConfig{Name: "siem", URL: rc.URL})
	reg := prometheus.NewRegistry()
	if err := reg.Register(w); err != nil {
		t.Fatal(err)
	}
	w.Offer(fixtures()["intel-dns"], true, nil)
	waitFor(t, "delivery", func() bool { return w.Stats().Delivered == 1 })
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
			got[mf.GetName()] = v
			if l := m.GetLabel(); len(l) != 2 || l[0].GetValue() != "eventbus" || l[1].GetValue() != "siem" {
				t.Errorf("labels %v", m.GetLabel())
			}
		}
	}
	if got["mamori_export_webhook_delivered_total"] != 1 || got["mamori_export_webhook_queued_total"] != 1 {
		t.Errorf("metrics %v", got)
	}
}

func TestWebhookConfigRefused(t *testing.T) {
	for _, u := range []string{"", "ftp://x/", "http://", "::"} {
		if _, err := NewWebhook(WebhookConfig{URL: u}); err == nil {
			t.Errorf("url %q accepted", u)
		}
	}
}

// settlements counts how records were settled.
type settlements struct {
	mu sync.Mutex
	n  map[Settlement]int
}

func (s *settlements) done(x Settlement) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n == nil {
		s.n = map[Settlement]int{}
	}
	s.n[x]++
}

func (s *settlements) counts() map[Settlement]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.n)
}

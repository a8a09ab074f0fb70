package export

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mamori-dev/mamori/internal/finding"
	"github.com/mamori-dev/mamori/internal/server/store"
	"github.com/mamori-dev/mamori/internal/server/store/storetest"
	"github.com/mamori-dev/mamori/internal/testenv"
)

func TestMain(m *testing.M) { storetest.Main(m) }

func revision(base *finding.Finding, count int64) *finding.Finding {
	f := *base
	f.Service.Count = count
	f.UpdatedAt = base.UpdatedAt.Add(time.Duration(count) * time.Second)
	return &f
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

const testSink = "webhook-test"

// outboxStore opens a real store of engine with the test sink configured.
func outboxStore(t *testing.T, engine, dsn string, updateDelay time.Duration) store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), dsn, store.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatalf("open %s: %v", engine, err)
	}
	t.Cleanup(func() { st.Close() })
	st.SetExports([]string{testSink}, updateDelay)
	return st
}

// startRelay runs a webhook to url and a relay feeding it from st.
func startRelay(t *testing.T, st store.Store, owner, url string, updateDelay time.Duration) (*Relay, *Webhook, func()) {
	t.Helper()
	return startRelayLease(t, st, owner, url, updateDelay, 0)
}

// runWebhookRelay starts a webhook made from wc and a relay made from rc
// feeding it; stop (also run at cleanup) ends both.
func runWebhookRelay(t *testing.T, wc WebhookConfig, rc RelayConfig) (r *Relay, w *Webhook, stop func()) {
	t.Helper()
	if wc.Encoder == nil {
		wc.Encoder, _ = NewEncoder(FormatOCSF, testOptions)
	}
	w, err := NewWebhook(wc)
	if err != nil {
		t.Fatal(err)
	}
	rc.Sink = w
	r = NewRelay(rc)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); w.Run(ctx) }()
	go func() { defer wg.Done(); r.Run(ctx) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(stop)
	return r, w, stop
}

func startRelayLease(t *testing.T, st store.Store, owner, url string, updateDelay, lease time.Duration) (*Relay, *Webhook, func()) {
	t.Helper()
	return runWebhookRelay(t, WebhookConfig{URL: url, BaseBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond},
		RelayConfig{Key: testSink, Store: st, Owner: owner, UpdateDelay: updateDelay,
			Poll: 20 * time.Millisecond, RetryDelay: 50 * time.Millisecond, MaxRetryDelay: 200 * time.Millisecond, Lease: lease})
}

func ocsfOf(t *testing.T, b []byte) OCSFFinding {
	t.Helper()
	var f OCSFFinding
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	return f
}

func newFinding(actor string) *finding.Finding {
	return storetest.Finding(storetest.Spec{Node: "n1", Actor: actor, Seen: time.Now().UTC().Add(-time.Minute)})
}

func upsertAll(t *testing.T, st store.Store, us ...store.Upsert) {
	t.Helper()
	if _, err := st.UpsertFindings(context.Background(), us); err != nil {
		t.Fatal(err)
	}
}

// TestRelayNewAtOnceUpdatesBatched: through a real store and webhook, a new
// finding goes out at once as Create; a burst of updates goes out once, as
// one Update carrying the latest count, after the update delay; suppressed
// findings never.
func TestRelayNewAtOnceUpdatesBatched(t *testing.T) {
	for _, engine := range storetest.Engines {
		t.Run(engine, func(t *testing.T) {
			const delay = 400 * time.Millisecond
			st := outboxStore(t, engine, storetest.DSN(t, engine), delay)
			rc := newReceiver(t, nil)
			r, _, _ := startRelay(t, st, "r1", rc.URL, delay)

			f, quiet := newFinding("/tmp/a"), newFinding("/tmp/quiet")
			upsertAll(t, st, store.Upsert{Finding: f, Reporter: "n1"},
				store.Upsert{Finding: quiet, Reporter: "n1", Suppress: func(r *store.Record) string {
					if r.ID == quiet.ID {
						return "rule-1"
					}
					return ""
				}})
			waitFor(t, "create", func() bool { return rc.count() == 1 })
			first := time.Now()
			for c := int64(2); c <= 6; c++ {
				upsertAll(t, st, store.Upsert{Finding: revision(f, c), Reporter: "n1"})
			}
			waitFor(t, "update", func() bool { return rc.count() == 2 })
			if el := time.Since(first); el < delay*3/4 {
				t.Errorf("update went out %v after the first change, before the %v delay", el, delay)
			}
			time.Sleep(2 * delay) // nothing more may arrive
			rc.mu.Lock()
			bodies := append([][]byte(nil), rc.bodies...)
			rc.mu.Unlock()
			if len(bodies) != 2 {
				t.Fatalf("receiver got %d records, want a Create and one Update", len(bodies))
			}
			c, u := ocsfOf(t, bodies[0]), ocsfOf(t, bodies[1])
			if c.ActivityID != OCSFActivityCreate || c.FindingInfo.UID != f.ID || u.ActivityID != OCSFActivityUpdate || u.Count != 6 {
				t.Fatalf("got %d %s then %d (count %d)", c.ActivityID, c.FindingInfo.UID, u.ActivityID, u.Count)
			}
			if s := r.Stats(); s.Delivered != 2 || s.Out != 0 || s.StoreErrors != 0 {
				t.Fatalf("relay stats %+v", s)
			}
			// A rule added later suppresses a waiting change: skipped.
			upsertAll(t, st, store.Upsert{Finding: revision(f, 7), Reporter: "n1"})
			if _, err := st.ArchiveMatching(context.Background(), []store.Criterion{{Field: "id", Op: store.OpEq, Value: f.ID}}, "rule-2"); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "skip", func() bool { return r.Stats().Skipped == 1 })
			if rc.count() != 2 {
				t.Fatalf("a suppressed finding's update went out")
			}
			reg := prometheus.NewRegistry()
			reg.MustRegister(r, NewBacklog(st, map[string]string{testSink: "siem"}))
			if got := gather(t, reg); got["mamori_export_outbox_delivered_total"] != 2 || got["mamori_export_outbox_skipped_total"] != 1 ||
				got["mamori_export_outbox_pending"] != 0 {
				t.Fatalf("metrics %v", got)
			}
		})
	}
}

// TestRelayLosesNothingAcrossRestarts: records a stopping server could not
// deliver (receiver down) and records a crashed replica still held under
// its lease both reach the receiver once it is back, from a new relay.
func TestRelayLosesNothingAcrossRestarts(t *testing.T) {
	for _, engine := range storetest.Engines {
		t.Run(engine, func(t *testing.T) {
			dsn := storetest.DSN(t, engine)
			st := outboxStore(t, engine, dsn, time.Hour)
			down := newReceiver(t, func(n int, w http.ResponseWriter) { w.WriteHeader(http.StatusServiceUnavailable) })
			_, _, stop := startRelay(t, st, "r1", down.URL, time.Hour)
			var ids []string
			for _, a := range []string{"/tmp/1", "/tmp/2", "/tmp/3", "/tmp/4", "/tmp/5"} {
				f := newFinding(a)
				ids = append(ids, f.ID)
				upsertAll(t, st, store.Upsert{Finding: f, Reporter: "n1"})
			}
			waitFor(t, "attempts on the down receiver", func() bool { return down.count() >= 3 })
			backlog := NewBacklog(st, map[string]string{testSink: "siem"})
			if p := backlog.Problems(context.Background(), 0); len(p) != 1 || !strings.HasPrefix(p[0], "export to siem is behind: 5 records due") {
				t.Errorf("health problems while the receiver is down: %q", p)
			}
			if p := backlog.Problems(context.Background(), time.Hour); len(p) != 0 {
				t.Errorf("problems before the threshold: %q", p)
			}
			stop() // a clean stop hands the records back
			// A crashed replica: two more findings claimed by it and never
			// settled; its 300 ms leases must lapse.
			for _, a := range []string{"/tmp/6", "/tmp/7"} {
				f := newFinding(a)
				ids = append(ids, f.ID)
				upsertAll(t, st, store.Upsert{Finding: f, Reporter: "n1"})
			}
			if got, err := st.ClaimExports(context.Background(), testSink, "crashed", 300*time.Millisecond, 2); err != nil || len(got) != 2 {
				t.Fatalf("crashed replica's claim: %v %v", got, err)
			}

			up := newReceiver(t, nil)
			st2 := outboxStore(t, engine, dsn, time.Hour) // the restarted server
			r2, _, _ := startRelay(t, st2, "r2", up.URL, time.Hour)
			waitFor(t, "every record after the restart", func() bool { return up.count() == len(ids) })
			got := map[string]bool{}
			up.mu.Lock()
			for _, b := range up.bodies {
				got[ocsfOf(t, b).FindingInfo.UID] = true
			}
			up.mu.Unlock()
			for _, id := range ids {
				if !got[id] {
					t.Errorf("finding %s never delivered", id)
				}
			}
			waitFor(t, "outbox empty", func() bool {
				bs, err := st2.ExportBacklogs(context.Background())
				return err == nil && len(bs) == 0
			})
			if s := r2.Stats(); s.Delivered != uint64(len(ids)) {
				t.Fatalf("relay stats %+v", s)
			}
			if p := NewBacklog(st2, nil).Problems(context.Background(), 0); len(p) != 0 {
				t.Errorf("health problems once everything went out: %q", p)
			}
		})
	}
}

// TestRelayReplicasSendEachRecordOnce: two replicas on one PostgreSQL
// database, each with its own relay to the same receiver, share the
// outbox: every record is delivered, none twice.
func TestRelayReplicasSendEachRecordOnce(t *testing.T) {
	dsn := storetest.DSN(t, store.EnginePostgres)
	a, b := outboxStore(t, "postgres", dsn, time.Hour), outboxStore(t, "postgres", dsn, time.Hour)
	rc := newReceiver(t, nil)
	ra, _, _ := startRelay(t, a, "replica-a", rc.URL, time.Hour)
	rb, _, _ := startRelay(t, b, "replica-b", rc.URL, time.Hour)
	const n = 200
	for i := range n {
		st := a
		if i%2 == 1 {
			st = b
		}
		upsertAll(t, st, store.Upsert{Finding: newFinding("/tmp/r" + string(rune('a'+i%26)) + string(rune('a'+i/26))), Reporter: "n1"})
	}
	waitFor(t, "every record", func() bool { return rc.count() >= n })
	time.Sleep(300 * time.Millisecond) // a duplicate would arrive now
	seen := map[string]int{}
	rc.mu.Lock()
	for _, h := range rc.headers {
		seen[h.Get("Idempotency-Key")]++
	}
	rc.mu.Unlock()
	if len(seen) != n || rc.count() != n {
		t.Fatalf("%d records, %d distinct, want %d each", rc.count(), len(seen), n)
	}
	sa, sb := ra.Stats(), rb.Stats()
	if sa.Delivered == 0 || sb.Delivered == 0 || sa.Delivered+sb.Delivered != n {
		t.Fatalf("replica a delivered %d, b %d", sa.Delivered, sb.Delivered)
	}
}

// TestRelayRenewsLeaseOfASlowDelivery: a record a slow receiver holds for
// several lease periods stays leased by its relay; another replica's relay
// never takes it, so it is delivered once.
func TestRelayRenewsLeaseOfASlowDelivery(t *testing.T) {
	for _, engine := range storetest.Engines {
		t.Run(engine, func(t *testing.T) {
			dsn := storetest.DSN(t, engine)
			a, b := outboxStore(t, engine, dsn, time.Hour), outboxStore(t, engine, dsn, time.Hour)
			const lease = 300 * time.Millisecond
			slow := newReceiver(t, func(n int, w http.ResponseWriter) { time.Sleep(4 * lease) })
			ra, _, _ := startRelayLease(t, a, "replica-a", slow.URL, time.Hour, lease)
			upsertAll(t, a, store.Upsert{Finding: newFinding("/tmp/slow"), Reporter: "n1"})
			waitFor(t, "the first attempt", func() bool { return slow.count() == 1 })
			other := newReceiver(t, nil)
			rb, _, _ := startRelayLease(t, b, "replica-b", other.URL, time.Hour, lease)
			waitFor(t, "delivery", func() bool { return ra.Stats().Delivered == 1 })
			time.Sleep(2 * lease)
			if other.count() != 0 || slow.count() != 1 || rb.Stats().Offered != 0 {
				t.Fatalf("the slow record went out again: slow receiver %d, other replica's %d (offered %d)",
					slow.count(), other.count(), rb.Stats().Offered)
			}
		})
	}
}

// TestFileSinkOnAFullDisk: with the export file's disk full, records stay
// in the outbox (no half lines in the file); once there is room every one
// is written, once.
func TestFileSinkOnAFullDisk(t *testing.T) {
	disk := testenv.SmallDisk(t, 4)
	st := outboxStore(t, store.EngineSQLite, storetest.DSN(t, store.EngineSQLite), time.Hour)
	enc, _ := NewEncoder(FormatOCSF, testOptions)
	path := filepath.Join(disk, "findings.jsonl")
	fs, err := OpenFileSink(path, enc, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	// One page left: a record or so fits, the next one is cut short.
	free := testenv.FillDisk(t, disk, 4096)
	r := NewRelay(RelayConfig{Key: testSink, Sink: fs, Store: st, Owner: "r1", Poll: 20 * time.Millisecond,
		RetryDelay: 20 * time.Millisecond, MaxRetryDelay: 100 * time.Millisecond})
	run := func() (stop func()) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { r.Run(ctx); close(done) }()
		return func() { cancel(); <-done }
	}
	stop := run()
	const n = 20
	for i := range n {
		upsertAll(t, st, store.Upsert{Finding: newFinding(fmt.Sprintf("/tmp/full-%d", i)), Reporter: "n1"})
	}
	waitFor(t, "writes refused for want of space", func() bool { _, failed := fs.Counts(); return failed >= 5 })
	stop() // no write in progress while the file is read
	b, _ := os.ReadFile(path)
	if len(b) > 0 && b[len(b)-1] != '\n' {
		t.Fatalf("the full disk's file ends in a partial record (%d bytes)", len(b))
	}
	t.Logf("on the full disk: %d whole records written, %d writes refused", strings.Count(string(b), "\n"), r.Stats().Deferred)
	free()
	defer run()()
	waitFor(t, "every record written", func() bool { w, _ := fs.Counts(); return w == n })
	b, err = os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		ids[ocsfOf(t, []byte(line)).FindingInfo.UID] = true
	}
	if len(ids) != n || strings.Count(string(b), "\n") != n {
		t.Fatalf("%d lines for %d findings, want %d each", strings.Count(string(b), "\n"), len(ids), n)
	}
	waitFor(t, "outbox empty", func() bool {
		bs, err := st.ExportBacklogs(context.Background())
		return err == nil && len(bs) == 0
	})
}

// TestRelayKeepsRecordsThroughALongOutage: a receiver down for longer than
// the webhook's retry window does not empty the outbox; meanwhile the
// relay probes with one record at a time, and once the receiver is back
// everything goes out.
func TestRelayKeepsRecordsThroughALongOutage(t *testing.T) {
	st := outboxStore(t, store.EngineSQLite, storetest.DSN(t, store.EngineSQLite), time.Hour)
	var up atomic.Bool
	rc := newReceiver(t, func(n int, w http.ResponseWriter) {
		if !up.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	r, w, _ := runWebhookRelay(t, WebhookConfig{URL: rc.URL, BaseBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond,
		RetryFor: 100 * time.Millisecond},
		RelayConfig{Key: testSink, Store: st, Owner: "r1", Poll: 10 * time.Millisecond, RetryDelay: 50 * time.Millisecond, MaxRetryDelay: 200 * time.Millisecond})
	const n = 10
	for i := range n {
		upsertAll(t, st, store.Upsert{Finding: newFinding(fmt.Sprintf("/tmp/outage-%d", i)), Reporter: "n1"})
	}
	time.Sleep(1500 * time.Millisecond) // fifteen retry windows
	if b := backlogOf(t, st); b.Pending != n || r.Stats().GivenUp != 0 || w.Stats().Failed != 0 {
		t.Fatalf("after an outage of fifteen retry windows: backlog %+v, relay %+v, webhook %+v", b, r.Stats(), w.Stats())
	}
	// Probing: far fewer attempts than ten records retried in a loop.
	if tries := rc.count(); tries > 120 {
		t.Errorf("%d attempts on the dead receiver in 1.5 s", tries)
	}
	up.Store(true)
	waitFor(t, "everything after the outage", func() bool { return r.Stats().Delivered == n })
	waitFor(t, "outbox empty", func() bool { return backlogOf(t, st).Pending == 0 })
}

// flakySettle is a real store whose first settle fails, as during a
// database blip.
type flakySettle struct {
	store.Store
	failed atomic.Bool
}

func (f *flakySettle) SettleExport(ctx context.Context, it store.ExportItem, requeueAt time.Time) error {
	if f.failed.CompareAndSwap(false, true) {
		return fmt.Errorf("injected: database unreachable")
	}
	return f.Store.SettleExport(ctx, it, requeueAt)
}

// TestRelayResendsWhenASettleFails: a delivered record whose settle failed
// is not held for ever under a lease its relay keeps renewing: the lease
// lapses and the record goes out again (at least once), then the outbox
// empties.
func TestRelayResendsWhenASettleFails(t *testing.T) {
	st := outboxStore(t, store.EngineSQLite, storetest.DSN(t, store.EngineSQLite), time.Hour)
	flaky := &flakySettle{Store: st}
	rc := newReceiver(t, nil)
	r, _, _ := startRelayLease(t, flaky, "r1", rc.URL, time.Hour, 300*time.Millisecond)
	upsertAll(t, st, store.Upsert{Finding: newFinding("/tmp/blip"), Reporter: "n1"})
	waitFor(t, "outbox empty after the failed settle", func() bool { return backlogOf(t, st).Pending == 0 })
	if !flaky.failed.Load() || rc.count() != 2 || r.Stats().StoreErrors == 0 {
		t.Fatalf("settle failed %v, %d deliveries, relay %+v; want the record sent again once", flaky.failed.Load(), rc.count(), r.Stats())
	}
}

func backlogOf(t *testing.T, st store.Store) store.ExportBacklog {
	t.Helper()
	bs, err := st.ExportBacklogs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bs {
		if b.Sink == testSink {
			return b
		}
	}
	return store.ExportBacklog{Sink: testSink}
}

// failingRenewals is a real store whose lease renewals fail while down is
// set, as when the database is away for longer than a lease.
type failingRenewals struct {
	store.Store
	down atomic.Bool
}

func (f *failingRenewals) RenewExports(ctx context.Context, sink string, items []store.ExportItem, lease time.Duration) error {
	if f.down.Load() {
		return fmt.Errorf("injected: database unreachable")
	}
	return f.Store.RenewExports(ctx, sink, items, lease)
}

// TestRelayTakeoverKeepsALaterChange: an update is out with a slow
// receiver while renewals fail; its lease lapses, the finding changes, and
// the relay re-claims the row it still has out. Settling the old content
// must not delete the later change: it goes out too.
func TestRelayTakeoverKeepsALaterChange(t *testing.T) {
	st := outboxStore(t, store.EngineSQLite, storetest.DSN(t, store.EngineSQLite), 50*time.Millisecond)
	flaky := &failingRenewals{Store: st}
	release := make(chan struct{})
	var held atomic.Bool
	rc := newReceiver(t, func(n int, w http.ResponseWriter) {
		if n == 2 && held.CompareAndSwap(false, true) {
			<-release // the first update waits here
		}
	})
	const lease = 300 * time.Millisecond
	startRelayLease(t, flaky, "r1", rc.URL, 50*time.Millisecond, lease)
	f := newFinding("/tmp/takeover")
	upsertAll(t, st, store.Upsert{Finding: f, Reporter: "n1"})
	waitFor(t, "the create", func() bool { return rc.count() == 1 })
	upsertAll(t, st, store.Upsert{Finding: revision(f, 2), Reporter: "n1"})
	waitFor(t, "the first update held by the receiver", func() bool { return held.Load() })
	flaky.down.Store(true)
	time.Sleep(2 * lease) // the lease lapses
	upsertAll(t, st, store.Upsert{Finding: revision(f, 3), Reporter: "n1"})
	time.Sleep(200 * time.Millisecond) // the relay re-claims the row it has out
	flaky.down.Store(false)
	close(release)
	waitFor(t, "the later change", func() bool {
		rc.mu.Lock()
		defer rc.mu.Unlock()
		for _, b := range rc.bodies {
			if ocsfOf(t, b).Count == 3 {
				return true
			}
		}
		return false
	})
}

// TestRelayPoisonRecordDoesNotStallTheSink: a record the receiver refuses
// on its own (a 500 on its content) does not stall the sink: probed, it
// gets one attempt; a healthy record queued behind it goes out within a
// few probe waits; and it is given up once others went through during its
// window (it was retried for ever before).
func TestRelayPoisonRecordDoesNotStallTheSink(t *testing.T) {
	st := outboxStore(t, store.EngineSQLite, storetest.DSN(t, store.EngineSQLite), time.Hour)
	poison := newFinding("/tmp/poison")
	rc := newReceiver(t, nil)
	rc.respond = func(n int, w http.ResponseWriter) {
		rc.mu.Lock()
		body := rc.bodies[n-1]
		rc.mu.Unlock()
		if strings.Contains(string(body), poison.ID) {
			w.WriteHeader(http.StatusInternalServerError)
		}
	}
	r, w, _ := runWebhookRelay(t, WebhookConfig{URL: rc.URL, BaseBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond,
		RetryFor: 2 * time.Second},
		RelayConfig{Key: testSink, Store: st, Owner: "r1", Poll: 10 * time.Millisecond, RetryDelay: 50 * time.Millisecond, MaxRetryDelay: 100 * time.Millisecond})
	upsertAll(t, st, store.Upsert{Finding: poison, Reporter: "n1"})
	// The poison record spends its first window alone: handed back, probing
	// starts, and with nothing else due the poison record is the probe.
	waitFor(t, "probe mode", func() bool { return r.Stats().Deferred >= 1 })
	waitFor(t, "the poison record probed", func() bool { return r.Stats().Offered >= 2 })
	start := time.Now()
	upsertAll(t, st, store.Upsert{Finding: newFinding("/tmp/healthy"), Reporter: "n1"})
	waitFor(t, "the healthy record", func() bool { return r.Stats().Delivered == 1 })
	if el := time.Since(start); el > time.Second {
		t.Errorf("a healthy record waited %v behind a probing poison record", el)
	}
	// More records flow while the poison record takes its next window:
	// the receiver takes them, so at the window's end it is given up.
	for i := 0; r.Stats().GivenUp == 0; i++ {
		if i == 50 {
			t.Fatalf("the poison record was not given up while others went through: relay %+v, webhook %+v", r.Stats(), w.Stats())
		}
		upsertAll(t, st, store.Upsert{Finding: newFinding(fmt.Sprintf("/tmp/healthy-%d", i)), Reporter: "n1"})
		time.Sleep(200 * time.Millisecond)
	}
	waitFor(t, "outbox empty", func() bool { return backlogOf(t, st).Pending == 0 })
}

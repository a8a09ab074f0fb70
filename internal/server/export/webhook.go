package export

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mamori-dev/mamori/internal/finding"
)

// WebhookConfig configures a Webhook. Zero values take the defaults noted.
type WebhookConfig struct {
	// Name labels the webhook in logs and metrics ["webhook"].
	Name string
	// URL receives one POST per record; http or https.
	URL string
	// Encoder makes the request body [event-bus envelope].
	Encoder Encoder
	// Headers are added to every request (for example Authorization).
	Headers map[string]string
	// QueueSize bounds the records waiting for delivery [1000]; past it
	// Offer hands records back (counted as deferred).
	QueueSize int
	// Timeout bounds one attempt, connection to response body [10s].
	Timeout time.Duration
	// MaxAttempts per record, the first included [0: no limit but RetryFor].
	MaxAttempts int
	// RetryFor bounds how long a record is retried in a row while the
	// receiver fails or cannot be reached [1h]; it then goes back to the
	// caller (Retry), which keeps it — the export outbox, until the
	// receiver is back. A record failing on its own is set aside after a
	// few attempts so the others go first.
	RetryFor time.Duration
	// BaseBackoff is the wait before the first retry [500ms]; each further
	// retry doubles it, up to MaxBackoff [1m]. A Retry-After header from
	// the receiver is honoured within MaxBackoff.
	BaseBackoff time.Duration
	MaxBackoff  time.Duration
	// Client sends the requests [a client without its own timeout; Timeout
	// applies per attempt].
	Client    *http.Client
	UserAgent string // ["mamori"]
	Logger    *slog.Logger
}

// WebhookStats are a webhook's counters since it was made.
type WebhookStats struct {
	Queued    uint64 `json:"queued"`    // records accepted into the queue
	Delivered uint64 `json:"delivered"` // records a receiver answered 2xx
	Failed    uint64 `json:"failed"`    // records given up: retry window spent or refused (4xx)
	Deferred  uint64 `json:"deferred"`  // records handed back (queue full, or left at shutdown): the outbox keeps them
	Retries   uint64 `json:"retries"`   // attempts after the first
	Encode    uint64 `json:"encodeErrors"`
	Pending   int    `json:"pending"` // records in the queue now
}

type record struct {
	id   string // finding id, for logs
	key  string // record id, sent as Idempotency-Key
	body []byte
	// first is when delivery was first tried (zero before): a record is
	// given up RetryFor after it, however often it was set aside.
	first time.Time
	done  func(Settlement) // called once, when the record leaves
	// probe: the caller is testing a failing receiver with this record,
	// which gets one attempt.
	probe bool
}

// setAsideAfter is how many failed attempts a record gets before it goes to
// the back of the queue when others wait: a receiver refusing one record
// (a 500 on its content) must not hold every other back for RetryFor.
const setAsideAfter = 5

// Webhook delivers records to one HTTP endpoint in order, with retries and
// exponential backoff. Offer never blocks: a full queue hands the record
// back to the caller (the export outbox keeps it). Run delivers until its context ends.
type Webhook struct {
	cfg   WebhookConfig
	queue chan record
	stop  chan struct{} // closed when Run returns

	queued, delivered, failed, deferred, retries, encodeErrs atomic.Uint64
	// outstanding counts records accepted and not yet finished (queued or
	// in flight); it is raised before a record enters the queue, so Drain
	// never sees a record in neither place.
	outstanding atomic.Int64
	// failingSince is when the receiver's current run of failures began
	// (zero after a success); only Run's goroutine touches it. Once it is
	// RetryFor old, records get one attempt each before they go back, so a
	// receiver gone for good does not hold each record for RetryFor.
	failingSince time.Time
	// lastSuccess is when the receiver last took a record (Run's goroutine
	// only): a record failing through its window while others went through
	// is refused on its own.
	lastSuccess time.Time
	// stopMu orders Offer against Run's end: no record enters the queue
	// once Run has begun handing the queued ones back.
	stopMu  sync.Mutex
	stopped bool

	descs map[string]*prometheus.Desc
}

// NewWebhook checks cfg and returns a webhook; call Run to deliver.
func NewWebhook(cfg WebhookConfig) (*Webhook, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("webhook url: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("webhook url %q: want an http or https URL with a host", cfg.URL)
	}
	if cfg.Name == "" {
		cfg.Name = "webhook"
	}
	if cfg.Encoder == nil {
		cfg.Encoder, _ = NewEncoder(FormatEventBus, Options{})
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = 1000
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.RetryFor <= 0 {
		cfg.RetryFor = time.Hour
	}
	if cfg.BaseBackoff <= 0 {
		cfg.BaseBackoff = 500 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = time.Minute
	}
	cfg.MaxBackoff = max(cfg.MaxBackoff, cfg.BaseBackoff)
	if cfg.Client == nil {
		cfg.Client = &http.Client{}
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = "mamori"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	w := &Webhook{cfg: cfg, queue: make(chan record, cfg.QueueSize), stop: make(chan struct{})}
	labels := prometheus.Labels{"webhook": cfg.Name, "format": string(cfg.Encoder.Format())}
	w.descs = map[string]*prometheus.Desc{}
	for name, help := range map[string]string{
		"queued": "Records accepted into the webhook queue.", "delivered": "Records the receiver answered 2xx.",
		"failed":   "Records given up: retried for the retry window, or refused (4xx).",
		"deferred": "Records handed back to the export outbox for later: queue full, or left at shutdown.", "retries": "Delivery attempts after the first.",
		"encode_errors": "Findings that could not be encoded.",
	} {
		w.descs[name] = prometheus.NewDesc("mamori_export_webhook_"+name+"_total", help, nil, labels)
	}
	w.descs["pending"] = prometheus.NewDesc("mamori_export_webhook_pending", "Records waiting in the webhook queue.", nil, labels)
	return w, nil
}

// Offer encodes f and queues it for delivery (Sink). It returns false
// when the queue is full or the webhook stopped: the caller keeps the
// record. An unencodable finding is taken and given up at once.
func (w *Webhook) Offer(f *finding.Finding, isNew bool, done func(Settlement)) bool {
	return w.offer(f, isNew, done, false)
}

// OfferProbe is Offer for a record that tests a failing receiver (Prober):
// it gets one attempt, so a record the receiver refuses on its own cannot
// hold the others back for a whole retry window.
func (w *Webhook) OfferProbe(f *finding.Finding, isNew bool, done func(Settlement)) bool {
	return w.offer(f, isNew, done, true)
}

func (w *Webhook) offer(f *finding.Finding, isNew bool, done func(Settlement), probe bool) bool {
	if done == nil {
		done = func(Settlement) {}
	}
	body, err := w.cfg.Encoder.Encode(f, isNew)
	if err != nil {
		w.encodeErrs.Add(1)
		w.cfg.Logger.Error("webhook: encode", "webhook", w.cfg.Name, "finding", f.ID, "err", err)
		done(GivenUp)
		return true
	}
	w.stopMu.Lock()
	defer w.stopMu.Unlock()
	if w.stopped {
		w.deferred.Add(1)
		return false
	}
	w.outstanding.Add(1)
	select {
	case w.queue <- record{id: f.ID, key: RecordID(f), body: body, done: done, probe: probe}:
		w.queued.Add(1)
		return true
	default:
		w.outstanding.Add(-1)
		if n := w.deferred.Add(1); n&(n-1) == 0 { // log at powers of two, not per record
			w.cfg.Logger.Warn("webhook: queue full, record left in the export outbox for later", "webhook", w.cfg.Name, "deferred", n)
		}
		return false
	}
}

// Run delivers queued records one at a time until ctx ends. Records still
// queued then are handed back (Abandoned) and counted as deferred.
func (w *Webhook) Run(ctx context.Context) {
	defer func() {
		w.stopMu.Lock()
		w.stopped = true
		close(w.stop)
		w.stopMu.Unlock()
		for {
			select {
			case r := <-w.queue:
				w.deferred.Add(1)
				w.outstanding.Add(-1)
				r.done(Abandoned)
			default:
				return
			}
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-w.queue:
			if !w.deliver(ctx, r) {
				w.outstanding.Add(-1)
			}
		}
	}
}

// Drain waits until every queued record has been delivered or given up,
// or ctx ends; it reports whether the queue emptied. Call it before
// cancelling Run's context at shutdown so queued records get their chance.
func (w *Webhook) Drain(ctx context.Context) bool {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for w.outstanding.Load() > 0 {
		select {
		case <-ctx.Done():
			return false
		case <-w.stop:
			return len(w.queue) == 0
		case <-t.C:
		}
	}
	return true
}

// errPermanent marks a response not worth retrying.
var errPermanent = errors.New("refused")

// deliver tries r until it is delivered, refused, or its retry window
// (RetryFor since its first attempt, or since the receiver began failing)
// is spent. It reports true when it set r aside at the back of the queue
// instead, others waiting behind it.
func (w *Webhook) deliver(ctx context.Context, r record) (setAside bool) {
	var err error
	if r.first.IsZero() {
		r.first = time.Now()
	}
	attempt := 1
	for ; ; attempt++ {
		var retryAfter time.Duration
		retryAfter, err = w.attempt(ctx, r)
		if err == nil {
			w.delivered.Add(1)
			w.failingSince, w.lastSuccess = time.Time{}, time.Now()
			r.done(Delivered)
			return false
		}
		if w.failingSince.IsZero() {
			w.failingSince = time.Now()
		}
		if errors.Is(err, errPermanent) || (w.cfg.MaxAttempts > 0 && attempt >= w.cfg.MaxAttempts) ||
			time.Since(r.first) >= w.cfg.RetryFor || time.Since(w.failingSince) >= w.cfg.RetryFor || r.probe || ctx.Err() != nil {
			break
		}
		if attempt == 3 { // once per record, not per attempt
			w.cfg.Logger.Warn("webhook: receiver failing, retrying", "webhook", w.cfg.Name, "finding", r.id,
				"for up to", w.cfg.RetryFor, "err", err)
		}
		if attempt%setAsideAfter == 0 && len(w.queue) > 0 {
			select {
			case w.queue <- r: // still outstanding: no count changes
				w.retries.Add(1)
				return true
			default: // the queue is full again: keep trying this one
			}
		}
		wait := w.backoff(attempt)
		if retryAfter > 0 {
			wait = min(retryAfter, w.cfg.MaxBackoff)
		}
		w.cfg.Logger.Debug("webhook: retrying", "webhook", w.cfg.Name, "finding", r.id, "attempt", attempt, "in", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
		if ctx.Err() != nil {
			break
		}
		w.retries.Add(1)
	}
	if ctx.Err() != nil {
		w.deferred.Add(1) // shutting down: not the receiver's fault
		r.done(Abandoned)
		return false
	}
	if errors.Is(err, errPermanent) || (w.cfg.MaxAttempts > 0 && attempt >= w.cfg.MaxAttempts) {
		w.failed.Add(1)
		r.done(GivenUp)
		w.cfg.Logger.Warn("webhook: delivery failed", "webhook", w.cfg.Name, "finding", r.id, "err", err)
		return false
	}
	if !w.lastSuccess.IsZero() && w.lastSuccess.After(r.first) {
		// The receiver took other records meanwhile: it refuses this one
		// on its own (its content, say), and retrying it for ever would
		// stall the sink once a window.
		w.failed.Add(1)
		r.done(GivenUp)
		w.cfg.Logger.Warn("webhook: record refused through its retry window while others went through; given up", "webhook", w.cfg.Name, "finding", r.id, "err", err)
		return false
	}
	// The receiver keeps failing: the record goes back to the export
	// outbox, which keeps it until the receiver is back.
	w.deferred.Add(1)
	r.done(Retry)
	w.cfg.Logger.Debug("webhook: receiver failing through the retry window; record back in the export outbox", "webhook", w.cfg.Name, "finding", r.id, "err", err)
	return false
}

// backoff is the wait after the given failed attempt: BaseBackoff doubled
// per attempt, capped, with jitter in its upper half so many senders do not
// retry in lockstep.
func (w *Webhook) backoff(attempt int) time.Duration {
	d := w.cfg.BaseBackoff << min(attempt-1, 30)
	if d <= 0 || d > w.cfg.MaxBackoff {
		d = w.cfg.MaxBackoff
	}
	return d/2 + rand.N(d/2+1)
}

// attempt makes one request. It returns the receiver's Retry-After, if any.
func (w *Webhook) attempt(ctx context.Context, r record) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.cfg.URL, bytes.NewReader(r.body))
	if err != nil {
		return 0, fmt.Errorf("%w: build request: %v", errPermanent, err)
	}
	req.Header.Set("Content-Type", w.cfg.Encoder.ContentType())
	req.Header.Set("User-Agent", w.cfg.UserAgent)
	req.Header.Set("Idempotency-Key", r.key)
	for k, v := range w.cfg.Headers {
		req.Header.Set(k, v)
	}
	resp, err := w.cfg.Client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("post: %w", err)
	}
	// Read a bounded amount so the connection can be reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch code := resp.StatusCode; {
	case code >= 200 && code < 300:
		return 0, nil
	case code == http.StatusRequestTimeout || code == http.StatusTooEarly || code == http.StatusTooManyRequests || code >= 500:
		return retryAfter(resp.Header.Get("Retry-After")), fmt.Errorf("receiver answered %s", resp.Status)
	default:
		return 0, fmt.Errorf("%w: receiver answered %s", errPermanent, resp.Status)
	}
}

func retryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}

// Stats returns the webhook's counters.
func (w *Webhook) Stats() WebhookStats {
	return WebhookStats{Queued: w.queued.Load(), Delivered: w.delivered.Load(), Failed: w.failed.Load(),
		Deferred: w.deferred.Load(), Retries: w.retries.Load(), Encode: w.encodeErrs.Load(), Pending: len(w.queue)}
}

// Describe implements prometheus.Collector.
func (w *Webhook) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range w.descs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (w *Webhook) Collect(ch chan<- prometheus.Metric) {
	s := w.Stats()
	for name, v := range map[string]uint64{"queued": s.Queued, "delivered": s.Delivered, "failed": s.Failed,
		"deferred": s.Deferred, "retries": s.Retries, "encode_errors": s.Encode} {
		ch <- prometheus.MustNewConstMetric(w.descs[name], prometheus.CounterValue, float64(v))
	}
	ch <- prometheus.MustNewConstMetric(w.descs["pending"], prometheus.GaugeValue, float64(s.Pending))
}

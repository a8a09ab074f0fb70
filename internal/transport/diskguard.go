package transport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sys/unix"
)

// DefaultMinFreeBytes is the free space the embedded store's disk keeps:
// below it the server stops taking agent messages until twice as much is
// free. At the bench host's ~5,000 messages/s it is many seconds of writes,
// far more than the two seconds between checks.
const DefaultMinFreeBytes = 64 << 20

// Why a DiskGuard refuses agent messages, in stable words: coverage puts
// them in issue texts.
const (
	RefusalDisk  = "the disk under its message store is full or low on free space"
	RefusalStore = "its message store cannot write to its disk"
)

// refusingSinceKey, in the MAMORI stream's metadata, records since when a
// pause has lasted, so a restarted server keeps it and its start.
const refusingSinceKey = "mamori.refusing-since"

// lastPauseKey records the last pause that ended ("SINCE UNTIL"): a
// server restarted soon after still explains the silence of agents that
// back off and replay (coverage's SERVER_BEHIND), instead of calling them
// not reporting.
const lastPauseKey = "mamori.last-pause"

// DiskGuardConfig configures a DiskGuard. Zero values take the defaults noted.
type DiskGuardConfig struct {
	Embedded *Embedded           // required
	JS       jetstream.JetStream // required: sets the MAMORI stream's bound
	// StreamMaxBytes is the stream's bound while intake runs [DefaultStreamMaxBytes].
	StreamMaxBytes int64
	// MinFree pauses intake below it; intake resumes at twice as much [DefaultMinFreeBytes].
	MinFree  int64
	Interval time.Duration // between checks [2s]
	Metrics  *Metrics
	Logger   *slog.Logger
	// Free reports the free bytes of the filesystem under dir [statfs].
	Free func(dir string) (int64, error)
	Now  func() time.Time
}

// DiskState is what a DiskGuard last found.
type DiskState struct {
	// Refusing is RefusalDisk or RefusalStore while the server refuses
	// agent messages, empty while it takes them.
	Refusing string
	Reason   string    // of the current or last refusal
	Since    time.Time // when the refusal began (kept after it ends)
	Until    time.Time // when the last refusal ended; zero while refusing
	Free     int64     // free bytes under the store at the last check
	// StoreFailed says why JetStream cannot write, when it cannot.
	StoreFailed string
}

// DiskGuard keeps an embedded JetStream store usable when its disk fills.
//
// NATS does not acknowledge a message it failed to write (no space left),
// but it keeps the stream failed afterwards: publishes go unanswered even
// once space returns, until JetStream restarts. So the guard refuses agent
// messages before the disk is full — it lowers the stream's bound to one
// byte, so agents are refused for now, keep new messages in their spools
// and back off, while the server drains what the stream holds — and lets
// them in again once twice MinFree is free. If a write failed anyway
// (another program filled the disk between two checks), it restarts
// JetStream once there is room again, reopening the stream from disk;
// agents then replay their spools. Nothing is dropped on the way.
type DiskGuard struct {
	cfg DiskGuardConfig
	dir string
	log *slog.Logger

	check sync.Mutex // one Check at a time
	// restart pacing: restarts that do not cure the store back off
	nextRestart time.Time
	restartWait time.Duration
	// restarting is set while JetStream was stopped by the guard and not
	// yet started again.
	restarting bool

	mu    sync.Mutex
	state DiskState
}

// NewDiskGuard checks cfg; Restore and Run do the work.
func NewDiskGuard(cfg DiskGuardConfig) (*DiskGuard, error) {
	if cfg.Embedded == nil || cfg.JS == nil {
		return nil, errors.New("disk guard: no embedded server or JetStream")
	}
	if cfg.StreamMaxBytes <= 0 {
		cfg.StreamMaxBytes = DefaultStreamMaxBytes
	}
	if cfg.MinFree <= 0 {
		cfg.MinFree = DefaultMinFreeBytes
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 2 * time.Second
	}
	cfg.Metrics = orNewMetrics(cfg.Metrics)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Free == nil {
		cfg.Free = freeBytes
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &DiskGuard{cfg: cfg, dir: cfg.Embedded.storeDir, log: cfg.Logger}, nil
}

// State returns what the last check found.
func (g *DiskGuard) State() DiskState {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.state
}

// Restore takes up a pause a previous run of the server left on the stream
// (its bound at one byte and its start in the stream's metadata), or the
// last pause that ended, which coverage still counts on while agents
// replay. Call it before EnsureStream resets the bound and metadata; the
// first Check pauses again while the disk has not recovered, or writes the
// ended pause back.
func (g *DiskGuard) Restore(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := g.cfg.JS.Stream(ctx, StreamName)
	if err != nil {
		return // no stream yet: nothing to take up
	}
	cfg := st.CachedInfo().Config
	if since, err := time.Parse(time.RFC3339Nano, cfg.Metadata[refusingSinceKey]); err == nil && cfg.MaxBytes == 1 {
		g.mu.Lock()
		g.state = DiskState{Refusing: RefusalDisk, Reason: RefusalDisk, Since: since}
		g.mu.Unlock()
		return
	}
	if since, until, ok := parsePause(cfg.Metadata[lastPauseKey]); ok {
		g.mu.Lock()
		g.state = DiskState{Reason: RefusalDisk, Since: since, Until: until}
		g.mu.Unlock()
	}
}

func formatPause(since, until time.Time) string {
	return since.UTC().Format(time.RFC3339Nano) + " " + until.UTC().Format(time.RFC3339Nano)
}

func parsePause(v string) (since, until time.Time, ok bool) {
	a, b, found := strings.Cut(v, " ")
	if !found {
		return time.Time{}, time.Time{}, false
	}
	since, err1 := time.Parse(time.RFC3339Nano, a)
	until, err2 := time.Parse(time.RFC3339Nano, b)
	if err1 != nil || err2 != nil || until.Before(since) {
		return time.Time{}, time.Time{}, false
	}
	return since, until, true
}

// PausedSince is when the pause in force began (zero: none), for
// EnsureStream to keep it.
func (g *DiskGuard) PausedSince() time.Time {
	st := g.State()
	if st.Refusing == "" {
		return time.Time{}
	}
	return st.Since
}

// Run checks at once and then every Interval until ctx ends.
func (g *DiskGuard) Run(ctx context.Context) {
	t := time.NewTicker(g.cfg.Interval)
	defer t.Stop()
	for {
		g.Check(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Check looks at the disk and the store once and acts on what it finds.
func (g *DiskGuard) Check(ctx context.Context) {
	g.check.Lock()
	defer g.check.Unlock()
	free, err := g.cfg.Free(g.dir)
	if err != nil {
		g.log.Warn("disk guard: cannot read free space", "dir", g.dir, "err", err)
		return
	}
	g.cfg.Metrics.StoreFree.Set(float64(free))
	prev := g.State()
	refusing := prev.Refusing != ""
	since := prev.Since // of the pause, kept across restarts
	if !refusing {
		since = g.cfg.Now()
	}
	var ended time.Time // when a pause ended in this check
	failed := g.storeFailed()
	if failed != "" && g.restartable(failed) && free >= 2*g.cfg.MinFree && !g.cfg.Now().Before(g.nextRestart) {
		failed = g.restart(failed, free)
	}
	switch {
	case failed != "":
		// Refusing for now whatever the bound says: the stream does not answer.
		if prev.StoreFailed == "" {
			g.log.Error("disk guard: the message store cannot write; agents keep their messages in their spools",
				"err", failed, "free", free, "restartAt", 2*g.cfg.MinFree)
		}
		refusing = true
	case free < g.cfg.MinFree || (refusing && free < 2*g.cfg.MinFree):
		// Low, or not yet recovered from low: hold intake (again, after a
		// restart or a server start that reset the bound).
		if err := g.setBound(ctx, 1, since, ""); err != nil {
			g.log.Warn("disk guard: pause intake", "err", err)
			break // the state says what the stream does: unchanged
		}
		if !refusing {
			g.log.Error("disk guard: disk low on space; the server refuses agent messages for now (agents keep them in their spools)",
				"dir", g.dir, "free", free, "minFree", g.cfg.MinFree, "resumeAt", 2*g.cfg.MinFree)
		}
		refusing = true
	default:
		last := "" // the pause ending now, or the last one that ended
		if refusing {
			ended = g.cfg.Now()
			last = formatPause(since, ended)
		} else if !prev.Since.IsZero() && !prev.Until.IsZero() {
			last = formatPause(prev.Since, prev.Until)
		}
		if err := g.setBound(ctx, g.cfg.StreamMaxBytes, time.Time{}, last); err != nil {
			g.log.Warn("disk guard: resume intake", "err", err)
			ended = time.Time{}
			break
		}
		if refusing {
			g.log.Info("disk guard: the disk has room again; the server takes agent messages", "free", free)
		}
		refusing = false
	}
	next := DiskState{Reason: prev.Reason, Since: prev.Since, Until: prev.Until, Free: free, StoreFailed: failed}
	reason := RefusalDisk
	if failed != "" && !g.restartable(failed) && free >= g.cfg.MinFree {
		reason = RefusalStore // not for want of space: the operator's to fix
	}
	switch {
	case refusing && prev.Refusing == "":
		next.Refusing, next.Reason, next.Since, next.Until = reason, reason, since, time.Time{}
	case refusing:
		next.Refusing, next.Reason = reason, reason
	case prev.Refusing != "":
		next.Until = ended // the time written with the bound's lift
	}
	paused := 0.0
	if refusing {
		paused = 1
	}
	g.cfg.Metrics.IntakePaused.Set(paused)
	g.mu.Lock()
	g.state = next
	g.mu.Unlock()
}

// restartable reports whether restarting JetStream can cure failed: a
// stream that ran out of space, or JetStream the guard itself stopped.
// Other failures (permissions, I/O errors) need the operator.
func (g *DiskGuard) restartable(failed string) bool {
	return g.restarting || strings.Contains(failed, "no space left") || strings.Contains(failed, "quota exceeded")
}

// restart restarts JetStream and returns why the store still fails ("" when
// it works). Restarts that do not cure it are spaced out, 10 s doubling to
// 5 minutes: each one interrupts every JetStream client.
func (g *DiskGuard) restart(failed string, free int64) string {
	g.restartWait = min(max(2*g.restartWait, 10*time.Second), 5*time.Minute)
	g.nextRestart = g.cfg.Now().Add(g.restartWait)
	g.restarting = true
	if err := g.cfg.Embedded.RestartJetStream(); err != nil {
		g.log.Error("disk guard: restart JetStream", "err", err, "nextTry", g.restartWait)
		return err.Error()
	}
	g.restarting = false
	g.cfg.Metrics.StoreRestarts.Inc()
	if still := g.storeFailed(); still != "" {
		return still
	}
	g.log.Warn("disk guard: restarted JetStream after a failed write; the stream answers again", "failed", failed, "free", free)
	g.restartWait = 0
	return ""
}

// storeFailed returns why JetStream cannot write, or "" when it can.
func (g *DiskGuard) storeFailed() string {
	s := g.cfg.Embedded.Server
	if !s.JetStreamEnabled() {
		return "JetStream is disabled"
	}
	h := s.Healthz(&server.HealthzOptions{Details: true})
	if h == nil {
		return ""
	}
	var why []string
	for _, e := range h.Errors {
		why = append(why, e.Error)
	}
	if len(why) == 0 && h.Error != "" {
		why = append(why, h.Error)
	}
	return strings.Join(why, "; ")
}

// setBound sets the MAMORI stream's MaxBytes, recording since when a pause
// lasts (zero: not paused) and the last pause that ended (formatPause; "":
// none) in its metadata. Lowering the bound never discards what the stream
// holds (DiscardNew); it only refuses new messages.
func (g *DiskGuard) setBound(ctx context.Context, maxBytes int64, since time.Time, last string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := g.cfg.JS.Stream(ctx, StreamName)
	if err != nil {
		return fmt.Errorf("stream %s: %w", StreamName, err)
	}
	cfg := st.CachedInfo().Config
	mark := ""
	if maxBytes == 1 {
		mark = since.UTC().Format(time.RFC3339Nano)
	}
	if cfg.MaxBytes == maxBytes && cfg.Metadata[refusingSinceKey] == mark && cfg.Metadata[lastPauseKey] == last {
		return nil
	}
	cfg.MaxBytes = maxBytes
	md := map[string]string{}
	for k, v := range cfg.Metadata {
		if k != refusingSinceKey && k != lastPauseKey {
			md[k] = v
		}
	}
	if mark != "" {
		md[refusingSinceKey] = mark
	}
	if last != "" {
		md[lastPauseKey] = last
	}
	cfg.Metadata = md
	if _, err := g.cfg.JS.UpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("set stream %s bound to %d bytes: %w", StreamName, maxBytes, err)
	}
	return nil
}

func freeBytes(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

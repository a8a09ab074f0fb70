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

// Refusal reasons, in stable words: coverage puts them in issue texts.
const (
	RefusalDiskLow     = "the disk under its message store is low on free space"
	RefusalStoreFailed = "its message store failed to write to its disk"
)

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
	// Refusing is the reason the server refuses agent messages (one of the
	// Refusal constants), empty while it takes them.
	Refusing string
	Since    time.Time // when the refusal began
	Free     int64     // free bytes under the store at the last check
}

// DiskGuard keeps an embedded JetStream store usable when its disk fills.
//
// NATS answers a failed store write (no space left) by failing the stream
// until JetStream restarts: publishes then go unanswered even after space
// returns, and an acknowledged message still in its write cache is lost if
// the process dies first. So the guard refuses agent messages before the
// disk is full — it lowers the stream's bound to one byte; agents are
// refused for now, keep new messages in their spools and back off, and the
// server drains what the stream holds — and lets them in again once twice
// MinFree is free. If a write failed anyway (another program filled the
// disk between two checks), it restarts JetStream once there is room again,
// which writes out what NATS held in memory and reopens the stream; agents
// then replay their spools. Nothing is dropped on the way.
type DiskGuard struct {
	cfg DiskGuardConfig
	dir string
	log *slog.Logger

	mu    sync.Mutex
	state DiskState
}

// NewDiskGuard checks cfg; Run does the work.
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
	free, err := g.cfg.Free(g.dir)
	if err != nil {
		g.log.Warn("disk guard: cannot read free space", "dir", g.dir, "err", err)
		return
	}
	g.cfg.Metrics.StoreFree.Set(float64(free))
	failed := g.storeFailed()
	prev := g.State()
	next := DiskState{Refusing: prev.Refusing, Since: prev.Since, Free: free}
	switch {
	case failed != "" && free < 2*g.cfg.MinFree:
		// Restarting now would fail again: wait for room.
		next.Refusing = RefusalStoreFailed
		if prev.Refusing != RefusalStoreFailed {
			g.log.Error("disk guard: the message store cannot write; agents keep their messages in their spools until the disk has room",
				"err", failed, "free", free, "needed", 2*g.cfg.MinFree)
		}
	case failed != "":
		if err := g.cfg.Embedded.RestartJetStream(); err != nil {
			g.log.Error("disk guard: restart JetStream", "err", err)
			next.Refusing = RefusalStoreFailed
			break
		}
		g.cfg.Metrics.StoreRestarts.Inc()
		g.log.Warn("disk guard: restarted JetStream after a failed write; the stream answers again", "failed", failed, "free", free)
		// Intake resumes below, on the next check, if the disk allows.
		next.Refusing = RefusalStoreFailed
	case free < g.cfg.MinFree:
		if err := g.setBound(ctx, 1); err != nil {
			g.log.Warn("disk guard: pause intake", "err", err)
		}
		if prev.Refusing == "" {
			g.log.Error("disk guard: disk low on space; the server refuses agent messages for now (agents keep them in their spools)",
				"dir", g.dir, "free", free, "minFree", g.cfg.MinFree)
		}
		if prev.Refusing != RefusalStoreFailed {
			next.Refusing = RefusalDiskLow
		}
	case prev.Refusing != "" && free >= 2*g.cfg.MinFree:
		if err := g.setBound(ctx, g.cfg.StreamMaxBytes); err != nil {
			g.log.Warn("disk guard: resume intake", "err", err)
			break
		}
		g.log.Info("disk guard: disk has room again; the server takes agent messages", "free", free)
		next.Refusing = ""
	case prev.Refusing == "" && free < 2*g.cfg.MinFree:
		// Between the two marks after a start: keep the bound as it is.
	}
	switch {
	case next.Refusing == "":
		next.Since = time.Time{}
	case prev.Refusing == "":
		next.Since = g.cfg.Now()
	}
	paused := 0.0
	if next.Refusing != "" {
		paused = 1
	}
	g.cfg.Metrics.IntakePaused.Set(paused)
	g.mu.Lock()
	g.state = next
	g.mu.Unlock()
}

// storeFailed returns why JetStream cannot write, or "" when it can.
func (g *DiskGuard) storeFailed() string {
	s := g.cfg.Embedded.Server
	if !s.JetStreamEnabled() {
		return "JetStream is disabled"
	}
	h := s.Healthz(&server.HealthzOptions{})
	if h != nil && h.Status != "ok" && strings.Contains(h.Error, "write error") {
		return h.Error
	}
	return ""
}

// setBound sets the MAMORI stream's MaxBytes. Lowering it never discards
// what the stream holds (DiscardNew); it only refuses new messages.
func (g *DiskGuard) setBound(ctx context.Context, maxBytes int64) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := g.cfg.JS.Stream(ctx, StreamName)
	if err != nil {
		return fmt.Errorf("stream %s: %w", StreamName, err)
	}
	cfg := st.CachedInfo().Config
	if cfg.MaxBytes == maxBytes {
		return nil
	}
	cfg.MaxBytes = maxBytes
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

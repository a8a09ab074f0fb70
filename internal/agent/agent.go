// Package agent is the node agent's event pipeline: it loads the sensor,
// feeds cgroup notifications to the container table, enriches every event
// with its process (UUIDs, lineage, hash, user) and its container, holds
// events whose container is not known yet, and hands the result to
// subscribers (the JSON event stream, the detection engine, the terminal).
//
// Flow and bounds:
//
//	ring buffer → reader (decode, process table) → queue → retry cache → dispatch → subscribers
//
// The queue between the reader and the retry cache is bounded and the
// reader blocks on it, so a slow pipeline leaves records in the ring buffer,
// whose overflow the kernel counts per kind; nothing is dropped in user
// space without a counter.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mamori-dev/mamori/internal/container"
	"github.com/mamori-dev/mamori/internal/event"
	"github.com/mamori-dev/mamori/internal/proc"
	"github.com/mamori-dev/mamori/internal/sensor"
)

// Options configure an Agent.
type Options struct {
	// NodeID identifies this node; see LoadNodeID.
	NodeID string
	// QueueSize bounds the queue between reader and retry cache [16384].
	QueueSize int
	// RetryWait is the longest an event waits for its container [2s].
	RetryWait time.Duration
	// Sensor and Containers pass options through to those packages.
	Sensor     sensor.Options
	Containers container.Options
	Processes  proc.Options
	// EngineSockets adds container engine API sockets (globs allowed) to
	// the well-known ones a connect is told to reach.
	EngineSockets []string
	Logger        *slog.Logger
}

// Subscriber receives each enriched event on the dispatch goroutine. It
// must not keep ev past the call unless it copies it: the event is shared
// with the other subscribers.
type Subscriber func(ev *event.Event)

// Agent runs the pipeline.
type Agent struct {
	opts   Options
	log    *slog.Logger
	sensor *sensor.Sensor
	ctrs   *container.Table
	// engines tells a unix connect that reached a container engine's API.
	engines *container.EngineSockets
	procs   *proc.Table
	retry   *container.RetryCache
	queue   chan *event.Event

	mu   sync.RWMutex
	subs map[int]Subscriber
	next int

	started    time.Time
	dispatched atomic.Uint64
	lifeLost   atomic.Uint64
	hashLost   atomic.Uint64
}

// New loads the sensor and prepares the tables. Nothing runs until Run.
func New(opts Options) (*Agent, error) {
	if opts.NodeID == "" {
		return nil, errors.New("agent: node id is required")
	}
	if opts.QueueSize <= 0 {
		opts.QueueSize = 16384
	}
	if opts.RetryWait <= 0 {
		opts.RetryWait = 2 * time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	a := &Agent{opts: opts, log: log, queue: make(chan *event.Event, opts.QueueSize), subs: map[int]Subscriber{}}

	po := opts.Processes
	po.NodeID, po.Logger = opts.NodeID, log
	po.Hashed = a.hashed
	procs, err := proc.New(po)
	if err != nil {
		return nil, fmt.Errorf("process table: %w", err)
	}
	a.procs = procs

	co := opts.Containers
	co.Logger = log
	co.OnLifecycle = a.lifecycle
	ctrs, err := container.New(co)
	if err != nil {
		return nil, fmt.Errorf("container table: %w", err)
	}
	a.ctrs = ctrs
	a.engines = container.NewEngineSockets(co, opts.EngineSockets...)

	so := opts.Sensor
	so.Logger = log
	if so.CgroupRoot == "" {
		so.CgroupRoot = ctrs.CgroupRoot()
	}
	s, err := sensor.Load(so)
	if err != nil {
		return nil, fmt.Errorf("load sensor: %w", err)
	}
	a.sensor = s
	// Loading parsed the kernel's BTF (tens of MB, now garbage): hand it
	// back before the pipeline starts, so steady-state memory is ours.
	debug.FreeOSMemory()
	a.retry = ctrs.NewRetryCache(container.RetryOptions{Capacity: opts.QueueSize, MaxWait: opts.RetryWait})
	return a, nil
}

// Subscribe adds a subscriber and returns a function removing it.
func (a *Agent) Subscribe(s Subscriber) (cancel func()) {
	a.mu.Lock()
	id := a.next
	a.next++
	a.subs[id] = s
	a.mu.Unlock()
	return func() {
		a.mu.Lock()
		delete(a.subs, id)
		a.mu.Unlock()
	}
}

// Run starts the tables and the pipeline and blocks until ctx is done or
// the sensor fails. The sensor's programs stay loaded until Close.
func (a *Agent) Run(ctx context.Context) error {
	a.started = time.Now()
	if err := a.procs.Seed(); err != nil {
		a.log.Warn("seed process table", "err", err)
	}
	if err := a.ctrs.Start(ctx); err != nil {
		return fmt.Errorf("start container table: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var wg sync.WaitGroup
	out := make(chan *event.Event, 1024)
	wg.Add(5)
	go func() { defer wg.Done(); a.procs.Run(ctx) }()
	// A hook detached by another root process is re-attached within this
	// period, and heartbeats report it (coverage: HOOK_DETACHED).
	go func() { defer wg.Done(); a.sensor.WatchHooks(ctx, 2*time.Second) }()
	go func() { defer wg.Done(); a.retry.Run(ctx, a.queue, out) }()
	go func() { defer wg.Done(); a.dispatch(ctx, out) }()
	go func() {
		defer wg.Done()
		// Often enough that exited leaves (proc.Options.LeafExitGrace)
		// leave soon after their grace during an exec storm.
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				a.procs.Expire(now)
			}
		}
	}()
	err := a.sensor.Run(ctx, a.read)
	cancel()
	wg.Wait()
	// Events read but not yet through the detectors when the agent stops
	// are not processed; say how many, rather than lose them silently.
	if n := len(a.queue) + len(out) + int(a.retry.Stats().Pending); n > 0 {
		a.log.Warn("agent stopped with events read from the kernel but not yet through the detectors", "events", n)
	}
	if err != nil {
		return fmt.Errorf("sensor: %w", err)
	}
	return nil
}

// read runs on the ring-buffer reader goroutine.
func (a *Agent) read(ev *event.Event) {
	if c := ev.Cgroup; c != nil && c.Hierarchy == 0 {
		switch ev.Kind {
		case event.KindCgroupMkdir:
			a.ctrs.OnCgroupMkdir(c.ID, c.Path)
		case event.KindCgroupRmdir:
			a.ctrs.OnCgroupRmdir(c.ID)
		}
	}
	if ev.Process.PID != 0 {
		a.procs.Apply(ev)
	}
	a.queue <- ev // blocks: back-pressure into the ring buffer
}

// lifecycle receives container start/stop events from the container
// table's resolver. It never blocks the resolver for long: a full queue
// loses the lifecycle event and counts it.
func (a *Agent) lifecycle(ev *event.Event) {
	select {
	case a.queue <- ev:
	case <-time.After(100 * time.Millisecond):
		a.lifeLost.Add(1)
	}
}

// hashed receives a process's late hash from the process table's hashing
// goroutine: the event goes down the pipeline like a kernel one (container
// resolution, detection), unless the queue stays full, which is counted.
func (a *Agent) hashed(ev *event.Event) {
	select {
	case a.queue <- ev:
	case <-time.After(100 * time.Millisecond):
		a.hashLost.Add(1)
	}
}

func (a *Agent) dispatch(ctx context.Context, in <-chan *event.Event) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-in:
			switch {
			case ev.Kind == event.KindExec:
				container.AnnotateExec(ev)
			case ev.Kind == event.KindConnect && ev.Net != nil && ev.Net.PeerInode != 0:
				if p, ok := a.engines.Match(ev.Net.PeerDev, ev.Net.PeerInode); ok {
					ev.Net.EngineSocket = p
				}
			}
			a.dispatched.Add(1)
			a.mu.RLock()
			for _, s := range a.subs {
				s(ev)
			}
			a.mu.RUnlock()
		}
	}
}

// Hooks reports the sensor's per-hook status.
func (a *Agent) Hooks() []sensor.HookStatus { return a.sensor.Status() }

// BPFObjects names the build of the BPF objects loaded, for coverage:
// "default", or "compat: " and why.
func (a *Agent) BPFObjects() string {
	v := a.sensor.Variant()
	s := "compat: " + v.Why
	if !v.Compat {
		s = "default"
		if v.Why != "" { // the probe could not tell: say so
			s += ": " + v.Why
		}
	}
	// Within what a heartbeat may carry (coverage.Heartbeat.Validate).
	if len(s) > 500 {
		s = strings.ToValidUTF8(s[:500], "")
	}
	return s
}

// Close detaches every program.
func (a *Agent) Close() error { return a.sensor.Close() }

// Stats is a snapshot of every counter in the pipeline.
type Stats struct {
	NodeID     string               `json:"nodeId"`
	Started    time.Time            `json:"started"`
	Sensor     sensor.Counters      `json:"sensor"`
	Containers container.Stats      `json:"containers"`
	Retry      container.RetryStats `json:"retry"`
	Processes  proc.Stats           `json:"processes"`
	Queue      int                  `json:"queueLength"`
	QueueCap   int                  `json:"queueCapacity"`
	Dispatched uint64               `json:"dispatched"`
	// LifecycleLost counts container start/stop events lost to a full queue.
	LifecycleLost uint64 `json:"lifecycleLost"`
	// HashEventsLost counts late-hash (exec_hashed) events lost to a full queue.
	HashEventsLost uint64 `json:"hashEventsLost"`
}

// Stats returns the pipeline's counters.
func (a *Agent) Stats() Stats {
	return Stats{
		NodeID: a.opts.NodeID, Started: a.started,
		Sensor: a.sensor.Counters(), Containers: a.ctrs.Stats(), Retry: a.retry.Stats(),
		Processes: a.procs.Stats(), Queue: len(a.queue), QueueCap: cap(a.queue),
		Dispatched: a.dispatched.Load(), LifecycleLost: a.lifeLost.Load(), HashEventsLost: a.hashLost.Load(),
	}
}

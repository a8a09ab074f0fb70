package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mamori-dev/mamori/internal/event"
	"github.com/mamori-dev/mamori/internal/finding"
	"github.com/mamori-dev/mamori/internal/sensor"
	"github.com/mamori-dev/mamori/internal/server/coverage"
	"github.com/mamori-dev/mamori/internal/transport"
)

// realHooks is the hook list a real agent on this machine reports: every
// program of the sensor, attached (the two module hooks absent, as here).
var realHooks = func() []coverage.Hook {
	ps, err := sensor.Programs()
	if err != nil {
		panic(err)
	}
	out := make([]coverage.Hook, 0, len(ps))
	for _, p := range ps {
		h := coverage.Hook{Program: p.Program, Family: p.Family, Hook: p.Hook, Optional: p.Optional, Attached: true}
		if p.Program == "enter_init_module" || p.Program == "exit_finit_module" {
			h.Attached, h.Optional, h.Error = false, true, "not available on this kernel: no such tracepoint"
		}
		out = append(out, h)
	}
	return out
}()

// simAgent is one simulated node: the agent's own enrollment and publisher
// (its credential, its NATS connection, its spool), fed by the generator
// instead of a sensor.
type simAgent struct {
	node    string
	pub     *transport.Publisher
	started time.Time

	mu       sync.Mutex
	findings []*finding.Finding // made so far, for updates
	elide    coverage.HookElision
}

// enrollFleet enrolls n agents against s, 32 at a time.
func enrollFleet(ctx context.Context, s *server, n int, dir string) ([]*simAgent, time.Duration, error) {
	token, err := s.joinToken()
	if err != nil {
		return nil, 0, err
	}
	agents := make([]*simAgent, n)
	errs := make(chan error, n)
	sem := make(chan struct{}, 32)
	start := time.Now()
	var wg sync.WaitGroup
	quiet := slog.New(slog.DiscardHandler)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			node := fmt.Sprintf("bench-%04d", i)
			creds, err := transport.Enroll(ctx, transport.EnrollOptions{URL: s.url + transport.EnrollPath, Token: token, NodeID: node, Cluster: "bench"})
			if err != nil {
				errs <- err
				return
			}
			pub, err := transport.NewPublisher(transport.PublisherConfig{Creds: creds, SpoolDir: filepath.Join(dir, "agents", node), Logger: quiet})
			if err != nil {
				errs <- err
				return
			}
			agents[i] = &simAgent{node: node, pub: pub, started: time.Now().UTC()}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, 0, fmt.Errorf("enroll: %w", err)
	}
	return agents, time.Since(start), nil
}

func closeFleet(agents []*simAgent) {
	var wg sync.WaitGroup
	for _, a := range agents {
		if a == nil {
			continue
		}
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = a.pub.Close(ctx)
		})
	}
	wg.Wait()
}

// heartbeat is what a healthy agent on this machine reports: the real
// hook list, elided as the agent elides it when unchanged.
func (a *simAgent) heartbeat(now time.Time) coverage.Heartbeat {
	hb := coverage.Heartbeat{NodeID: a.node, Hostname: a.node + ".bench", Cluster: "bench", Platform: "host",
		AgentVersion: "bench", Kernel: "6.18.0", BTF: true, Time: now, Started: a.started, IntervalSeconds: 10,
		LastEvent: now, Drops: map[string]uint64{"kernel": 0, "decode": 0, "queue": 0, "retry": 0, "spool": 0},
		Hooks:    realHooks,
		Runtimes: []coverage.Runtime{{Name: "podman", Socket: "/var/lib/containers/storage", Reachable: true}}}
	a.mu.Lock()
	a.elide.Apply(&hb)
	a.mu.Unlock()
	return hb
}

// nextFinding returns a new finding of this node, or (update) a later count
// of one it already reported, as the agent's aggregator sends them.
func (a *simAgent) nextFinding(seq int64, update bool, now time.Time) *finding.Finding {
	a.mu.Lock()
	defer a.mu.Unlock()
	if update && len(a.findings) > 0 {
		f := a.findings[int(seq)%len(a.findings)]
		g := *f
		g.Service.Count++
		g.Service.EventLastSeen, g.UpdatedAt = now, now
		a.findings[int(seq)%len(a.findings)] = &g
		return &g
	}
	f := newFinding(a.node, fmt.Sprintf("/tmp/dropped-%d", seq), now)
	if len(a.findings) < 256 {
		a.findings = append(a.findings, f)
	}
	return f
}

// newFinding is a NewBinaryExecuted finding of node about exe, in a container.
func newFinding(node, exe string, now time.Time) *finding.Finding {
	ev := &event.Event{Time: now, Process: event.Process{PID: 4242, NSPID: 7, Comm: "dropped",
		UUID: "00000000-0000-4000-8000-000000004242", Exe: exe, Args: []string{exe}, Cwd: "/", User: "root", Start: now.Add(-time.Second),
		Lineage: []event.Ancestor{{PID: 1, UUID: "00000000-0000-4000-8000-000000000001", Name: "init", Exe: "/sbin/init"}}},
		Container: &event.Container{ID: "c0ffee" + node, Name: "web", Runtime: "containerd", Image: "shop/web:1"}}
	f := finding.New("Execution:Runtime/NewBinaryExecuted", ev, finding.Agent{NodeID: node, Hostname: node + ".bench", Version: "bench"}, exe, nil)
	f.CreatedAt, f.UpdatedAt = now, now
	return f
}

// load publishes heartbeats and findings at the given total rates, spread
// over the fleet, until stop is closed. It counts what it published.
type load struct {
	heartbeats, findings atomic.Int64
	errors               atomic.Int64
}

func (l *load) run(agents []*simAgent, hbRate, fRate int, stop <-chan struct{}) {
	const workers = 8
	const tick = 10 * time.Millisecond
	var wg sync.WaitGroup
	var fseq atomic.Int64
	for w := range workers {
		mine := agents[w*len(agents)/workers : (w+1)*len(agents)/workers]
		if len(mine) == 0 {
			continue
		}
		wg.Go(func() {
			t := time.NewTicker(tick)
			defer t.Stop()
			start := time.Now()
			var sentHB, sentF int64
			next := 0
			for {
				select {
				case <-stop:
					return
				case now := <-t.C:
					// Catch up to the schedule: tick jitter must not lower the rate.
					el := now.Sub(start).Seconds()
					wantHB := int64(el * float64(hbRate) / workers)
					wantF := int64(el * float64(fRate) / workers)
					nowUTC := now.UTC()
					for ; sentHB < wantHB; sentHB++ {
						a := mine[next%len(mine)]
						next++
						if _, err := a.pub.Publish(transport.KindHeartbeat, a.heartbeat(nowUTC)); err != nil {
							l.errors.Add(1)
							continue
						}
						l.heartbeats.Add(1)
					}
					for ; sentF < wantF; sentF++ {
						a := mine[next%len(mine)]
						next++
						seq := fseq.Add(1)
						if _, err := a.pub.Publish(transport.KindFinding, a.nextFinding(seq, seq%2 == 0, nowUTC)); err != nil {
							l.errors.Add(1)
							continue
						}
						l.findings.Add(1)
					}
				}
			}
		})
	}
	wg.Wait()
}

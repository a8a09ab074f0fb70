package coverage_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mamori-dev/mamori/internal/server/coverage"
	"github.com/mamori-dev/mamori/internal/server/store"
	"github.com/mamori-dev/mamori/internal/server/store/storetest"
)

// benchMonitor is a Monitor on a fresh store of engine, and the 40-hook
// list of the benchmarks' nodes.
func benchMonitor(b *testing.B, engine string) (*coverage.Monitor, []coverage.Hook) {
	st := storetest.Open(b, engine, store.Options{})
	m, err := coverage.New(coverage.Config{Store: st, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	hooks := make([]coverage.Hook, 40)
	for i := range hooks {
		hooks[i] = coverage.Hook{Program: fmt.Sprintf("prog_%02d", i), Family: "file", Hook: fmt.Sprintf("tracepoint/syscalls/sys_exit_call%02d", i), Attached: true}
	}
	return m, hooks
}

// BenchmarkHeartbeats is the server's cost per heartbeat of a steady fleet
// (1,000 nodes, a 40-hook list each, elided as agents send it) recorded by
// 256 concurrent handlers, as ingest does: op = one heartbeat.
func BenchmarkHeartbeats(b *testing.B) {
	for _, engine := range storetest.Engines {
		b.Run(engine, func(b *testing.B) {
			m, hooks := benchMonitor(b, engine)
			const nodes = 1000
			elide := make([]coverage.HookElision, nodes)
			beat := func(i int) *coverage.Heartbeat {
				now := time.Now().UTC()
				h := healthy(fmt.Sprintf("node-%04d", i), now)
				h.Hooks = hooks
				elide[i].Apply(h)
				return h
			}
			ctx := context.Background()
			for i := range nodes { // every node known, its list stored
				if err := m.Record(ctx, beat(i), time.Now(), time.Time{}); err != nil {
					b.Fatal(err)
				}
			}
			var mu sync.Mutex
			next := 0
			cpu0 := processCPU()
			b.ResetTimer()
			var wg sync.WaitGroup
			work := make(chan struct{})
			for range 256 {
				wg.Go(func() {
					for range work {
						mu.Lock()
						i := next % nodes
						next++
						h := beat(i)
						mu.Unlock()
						if err := m.Record(ctx, h, time.Now(), time.Time{}); err != nil {
							b.Error(err)
						}
					}
				})
			}
			for b.Loop() {
				work <- struct{}{}
			}
			close(work)
			wg.Wait()
			// Wall time per heartbeat is bound by batching (handlers wait
			// for their batch's commit); CPU time is the cost.
			b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
		})
	}
}

// processCPU is this process's user+system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkSweep is one sweep of a steady fleet (1,000 nodes with a 40-hook
// list each, elided as agents send it, all reporting): op = one sweep,
// which re-judges every node.
func BenchmarkSweep(b *testing.B) {
	for _, engine := range storetest.Engines {
		b.Run(engine, func(b *testing.B) {
			m, hooks := benchMonitor(b, engine)
			ctx := context.Background()
			for i := range 1000 {
				// Twice, as agents send them: the list, then elided.
				var elide coverage.HookElision
				for range 2 {
					h := healthy(fmt.Sprintf("node-%04d", i), time.Now().UTC())
					h.Hooks = hooks
					elide.Apply(h)
					if err := m.Record(ctx, h, time.Now(), time.Time{}); err != nil {
						b.Fatal(err)
					}
				}
			}
			cpu0 := processCPU()
			b.ResetTimer()
			for b.Loop() {
				if err := m.Sweep(ctx); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
		})
	}
}

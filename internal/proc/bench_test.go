package proc

import (
	"os"
	"testing"
	"time"

	"github.com/mamori-dev/mamori/internal/event"
)

// Pids far above any live process, so /proc lookups miss as they would
// for a process that already exited.
const benchPID = 3_900_000

// benchChain builds sh → worker in the table, worker being pid with its
// real start time when it is live, and returns the worker's process.
func benchChain(b *testing.B, tb *Table, pid uint32, uid uint32) event.Process {
	start := uint64(2e9)
	if s, err := readProc("/proc", pid); err == nil {
		start = s.startTicks * (1e9 / ticksPerSecond)
	}
	sh := event.Process{PID: benchPID, PPID: 1, StartNS: 1e9}
	tb.Apply(&event.Event{Kind: event.KindExec, Process: sh,
		Exec: &event.Exec{Path: "/bin/sh", Args: []string{"sh", "-c", "worker"}}})
	tb.Apply(&event.Event{Kind: event.KindFork, Process: sh,
		Fork: &event.Fork{ChildPID: pid, ChildTID: pid, ChildStartNS: start}})
	w := event.Process{PID: pid, PPID: benchPID, UID: uid, EUID: uid, StartNS: start, ParentStartNS: 1e9}
	tb.Apply(&event.Event{Kind: event.KindExec, Process: w,
		Exec: &event.Exec{Path: "/usr/bin/worker", Args: []string{"worker", "--serve"}}})
	if tb.Stats().Entries < 2 {
		b.Fatal("chain not in the table")
	}
	return w
}

func benchApply(b *testing.B, tb *Table, w event.Process) {
	b.ReportAllocs()
	for b.Loop() {
		ev := &event.Event{Kind: event.KindConnect, Process: w, Net: &event.Net{}}
		tb.Apply(ev)
		if len(ev.Process.Lineage) == 0 || ev.Process.UUID == "" {
			b.Fatal("event not enriched")
		}
	}
}

// BenchmarkProcApplyKnown is the common case: an event (a connect) from a
// live process the table knows, whose user has a name and whose lineage is
// already built.
func BenchmarkProcApplyKnown(b *testing.B) {
	tb, err := New(Options{NodeID: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	benchApply(b, tb, benchChain(b, tb, uint32(os.Getpid()), uint32(os.Getuid())))
}

// BenchmarkProcApplyUnnamedUser is the same event from a process whose
// uid has no passwd entry (common in containers) or whose /proc entry is
// already gone: the table looks the name up again on every event.
func BenchmarkProcApplyUnnamedUser(b *testing.B) {
	tb, err := New(Options{NodeID: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	benchApply(b, tb, benchChain(b, tb, uint32(os.Getpid()), 4_000_123))
}

// BenchmarkProcApplyLifecycle is a short-lived child per iteration: fork,
// exec (hash cached), one event, exit, with the exited entries expired as
// the agent does.
func BenchmarkProcApplyLifecycle(b *testing.B) {
	tb, err := New(Options{NodeID: "bench", ExitGrace: time.Nanosecond})
	if err != nil {
		b.Fatal(err)
	}
	start := benchChain(b, tb, benchPID+1, 0).StartNS
	exe := &event.Exec{Path: "/bin/true", Args: []string{"true"}, Inode: 42, Dev: 7}
	tb.hash.cache[keyOf(exe)] = "cached-sum"
	parent := event.Process{PID: benchPID + 1, StartNS: start}
	child := uint32(benchPID + 100)
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		i++
		pid := child + uint32(i%50_000)
		cstart := start + uint64(i)*1e7
		tb.Apply(&event.Event{Kind: event.KindFork, Process: parent,
			Fork: &event.Fork{ChildPID: pid, ChildTID: pid, ChildStartNS: cstart}})
		p := event.Process{PID: pid, PPID: parent.PID, StartNS: cstart, ParentStartNS: start}
		x := *exe
		tb.Apply(&event.Event{Kind: event.KindExec, Process: p, Exec: &x})
		ev := &event.Event{Kind: event.KindOpen, Process: p}
		tb.Apply(ev)
		if ev.Process.ExeSHA256 != "cached-sum" {
			b.Fatalf("hash %q", ev.Process.ExeSHA256)
		}
		tb.Apply(&event.Event{Kind: event.KindExit, Process: p, Exit: &event.Exit{}})
		if i%1000 == 0 {
			tb.Expire(time.Now())
		}
	}
	b.ReportMetric(float64(tb.Stats().Entries), "entries")
}

package proc

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mamori-dev/mamori/internal/event"
)

func newTable(t *testing.T, o Options) *Table {
	t.Helper()
	if o.NodeID == "" {
		o.NodeID = "node-test"
	}
	tb, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

// startNS reads a live process's start time as the kernel would report it
// (boot ns); /proc only has ticks, so add a sub-tick offset to prove the
// rounding makes both agree.
func startNS(t *testing.T, pid int) uint64 {
	t.Helper()
	s, err := readProc("/proc", uint32(pid))
	if err != nil {
		t.Fatal(err)
	}
	return s.startTicks*(1e9/ticksPerSecond) + 4_321_000
}

func TestSeedGivesLineageToOlderProcesses(t *testing.T) {
	tb := newTable(t, Options{})
	if err := tb.Seed(); err != nil {
		t.Fatal(err)
	}
	if tb.Stats().Seeded < 2 {
		t.Fatalf("seeded %d processes", tb.Stats().Seeded)
	}
	me := os.Getpid()
	ev := &event.Event{Kind: event.KindOpen, Process: event.Process{
		PID: uint32(me), PPID: uint32(os.Getppid()), StartNS: startNS(t, me), ParentStartNS: startNS(t, os.Getppid()),
	}}
	tb.Apply(ev)
	if ev.Process.UUID != tb.UUID(uint32(me), startNS(t, me)) {
		t.Fatalf("uuid %q differs from the seeded identity", ev.Process.UUID)
	}
	exe, _ := os.Executable()
	if ev.Process.Exe != exe {
		t.Errorf("exe %q, want %q", ev.Process.Exe, exe)
	}
	if len(ev.Process.Lineage) == 0 || ev.Process.Lineage[0].PID != uint32(os.Getppid()) {
		t.Fatalf("lineage %+v does not start with the parent %d", ev.Process.Lineage, os.Getppid())
	}
	if ev.Process.ParentUUID != ev.Process.Lineage[0].UUID {
		t.Errorf("parent uuid %q != lineage[0] %q", ev.Process.ParentUUID, ev.Process.Lineage[0].UUID)
	}
	last := ev.Process.Lineage[len(ev.Process.Lineage)-1]
	if last.PID != 1 {
		t.Errorf("lineage ends at pid %d, want init", last.PID)
	}
	if ev.Process.User == "" {
		t.Errorf("no user name for uid %d", ev.Process.UID)
	}
}

func TestUUIDsDifferAcrossNodesAndPidReuse(t *testing.T) {
	a, b := newTable(t, Options{NodeID: "a"}), newTable(t, Options{NodeID: "b"})
	if a.UUID(42, 1e9) == b.UUID(42, 1e9) {
		t.Error("same pid and start on two nodes share a uuid")
	}
	if a.UUID(42, 1e9) == a.UUID(42, 2e9) {
		t.Error("pid reuse keeps the uuid")
	}
	if a.UUID(42, 1e9) != a.UUID(42, 1e9+5e6) {
		t.Error("uuid depends on sub-tick start time")
	}

	// A reused pid must not inherit the old process's identity or image.
	old := &event.Event{Kind: event.KindExec, Process: event.Process{PID: 4242, StartNS: 1e9},
		Exec: &event.Exec{Path: "/old"}}
	a.Apply(old)
	reused := &event.Event{Kind: event.KindOpen, Process: event.Process{PID: 4242, StartNS: 9e9}}
	a.Apply(reused)
	if reused.Process.UUID == old.Process.UUID || reused.Process.Exe == "/old" {
		t.Fatalf("reused pid got the old identity: %+v", reused.Process)
	}
}

func TestForkExecLineage(t *testing.T) {
	tb := newTable(t, Options{})
	sh := &event.Event{Kind: event.KindExec, Process: event.Process{PID: 100, PPID: 1, StartNS: 5e9, UID: 0},
		Exec: &event.Exec{Path: "/bin/sh", Args: []string{"sh", "-c", "x"}}}
	tb.Apply(sh)
	tb.Apply(&event.Event{Kind: event.KindFork, Process: event.Process{PID: 100, StartNS: 5e9},
		Fork: &event.Fork{ChildPID: 101, ChildTID: 101, ChildStartNS: 6e9}})
	child := &event.Event{Kind: event.KindExec, Process: event.Process{PID: 101, PPID: 100, StartNS: 6e9, ParentStartNS: 5e9},
		Exec: &event.Exec{Path: "/usr/bin/curl", Args: []string{"curl", "x"}}}
	tb.Apply(child)
	p := child.Process
	if p.ParentUUID != sh.Process.UUID {
		t.Fatalf("child parent uuid %q, want %q", p.ParentUUID, sh.Process.UUID)
	}
	if len(p.Lineage) != 1 || p.Lineage[0].Exe != "/bin/sh" || p.Lineage[0].Args[1] != "-c" {
		t.Fatalf("lineage %+v", p.Lineage)
	}
	if got := tb.UUID(101, 6e9); p.UUID != got {
		t.Errorf("child uuid %q, want %q", p.UUID, got)
	}
}

// A process exec'd with LD_PRELOAD is marked so on its later events and
// its forked children's, until it execs again without.
func TestPreloadedIsRemembered(t *testing.T) {
	tb := newTable(t, Options{})
	tb.Apply(&event.Event{Kind: event.KindExec, Process: event.Process{PID: 200, PPID: 1, StartNS: 7e9},
		Exec: &event.Exec{Path: "/usr/sbin/logrotate", LDPreload: "/tmp/evil.so"}})
	tb.Apply(&event.Event{Kind: event.KindFork, Process: event.Process{PID: 200, StartNS: 7e9},
		Fork: &event.Fork{ChildPID: 201, ChildTID: 201, ChildStartNS: 8e9}})
	for _, pid := range []uint32{200, 201} {
		start := uint64(7e9)
		if pid == 201 {
			start = 8e9
		}
		ev := &event.Event{Kind: event.KindUnlink, Process: event.Process{PID: pid, StartNS: start}}
		tb.Apply(ev)
		if !ev.Process.Preloaded {
			t.Errorf("pid %d: not marked preloaded", pid)
		}
	}
	again := &event.Event{Kind: event.KindExec, Process: event.Process{PID: 200, StartNS: 7e9}, Exec: &event.Exec{Path: "/usr/sbin/logrotate"}}
	tb.Apply(again)
	if again.Process.Preloaded {
		t.Error("still marked after an exec without LD_PRELOAD")
	}
	py := &event.Event{Kind: event.KindExec, Process: event.Process{PID: 200, StartNS: 7e9},
		Exec: &event.Exec{Path: "/usr/bin/python3", CodeEnv: []string{"PYTHONPATH=/tmp/x"}}}
	tb.Apply(py)
	if !py.Process.Preloaded {
		t.Error("PYTHONPATH does not mark the process")
	}
}

// A busybox shell runs its applets by exec'ing /proc/self/exe with the
// applet's name as argv[0]; the kernel names the process "exe", which a
// rule on the process name cannot use. The process goes by the applet's
// name, on the exec and on its later events, until it execs again.
func TestProcessExecdAsExeGoesByItsArgv0(t *testing.T) {
	tb := newTable(t, Options{})
	ex := &event.Event{Kind: event.KindExec, Process: event.Process{PID: 200, PPID: 1, StartNS: 5e9, Comm: "exe"},
		Exec: &event.Exec{Path: "/bin/busybox", Args: []string{"whoami"}}}
	tb.Apply(ex)
	open := &event.Event{Kind: event.KindOpen, Process: event.Process{PID: 200, StartNS: 5e9, Comm: "exe"}}
	tb.Apply(open)
	if ex.Process.Comm != "whoami" || open.Process.Comm != "whoami" {
		t.Fatalf("names %q, %q; want whoami", ex.Process.Comm, open.Process.Comm)
	}
	// A child it forks (same image, same kernel name) goes by it too.
	tb.Apply(&event.Event{Kind: event.KindFork, Process: event.Process{PID: 200, StartNS: 5e9, Comm: "exe"},
		Fork: &event.Fork{ChildPID: 202, ChildTID: 202, ChildStartNS: 7e9}})
	child := &event.Event{Kind: event.KindOpen, Process: event.Process{PID: 202, PPID: 200, StartNS: 7e9, Comm: "exe"}}
	tb.Apply(child)
	if child.Process.Comm != "whoami" {
		t.Fatalf("the forked child is named %q", child.Process.Comm)
	}
	again := &event.Event{Kind: event.KindExec, Process: event.Process{PID: 200, StartNS: 5e9, Comm: "cat"},
		Exec: &event.Exec{Path: "/bin/cat", Args: []string{"cat", "x"}}}
	tb.Apply(again)
	later := &event.Event{Kind: event.KindOpen, Process: event.Process{PID: 200, StartNS: 5e9, Comm: "cat"}}
	tb.Apply(later)
	if again.Process.Comm != "cat" || later.Process.Comm != "cat" {
		t.Fatalf("after a plain exec: %q, %q", again.Process.Comm, later.Process.Comm)
	}
	// A file really called exe keeps its name.
	real := &event.Event{Kind: event.KindExec, Process: event.Process{PID: 201, PPID: 1, StartNS: 6e9, Comm: "exe"},
		Exec: &event.Exec{Path: "/opt/tool/exe", Args: []string{"launcher"}}}
	tb.Apply(real)
	if real.Process.Comm != "exe" {
		t.Fatalf("a file named exe was renamed %q", real.Process.Comm)
	}
}

func TestBoundedWithEvictionCounted(t *testing.T) {
	tb := newTable(t, Options{Capacity: 100, ExitGrace: time.Millisecond})
	for pid := uint32(1000); pid < 1300; pid++ {
		tb.Apply(&event.Event{Kind: event.KindOpen, Process: event.Process{PID: pid, StartNS: uint64(pid) * 1e9}})
	}
	st := tb.Stats()
	if st.Entries > 100 || st.Evicted == 0 {
		t.Fatalf("entries %d evicted %d with capacity 100", st.Entries, st.Evicted)
	}
	for pid := uint32(1200); pid < 1300; pid++ {
		tb.Apply(&event.Event{Kind: event.KindExit, Process: event.Process{PID: pid, StartNS: uint64(pid) * 1e9},
			Exit: &event.Exit{}})
	}
	time.Sleep(5 * time.Millisecond)
	tb.Expire(time.Now())
	if st := tb.Stats(); st.Expired == 0 || st.Entries >= 100 {
		t.Fatalf("exited processes not expired: %+v", st)
	}
}

func TestExecutableHashedOffThePath(t *testing.T) {
	tb := newTable(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go tb.Run(ctx)

	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	path, _ := exec.LookPath("sleep")
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if s, err := readProc("/proc", uint32(pid)); err == nil && len(s.args) > 0 && s.args[0] == "sleep" {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	x := &event.Exec{Path: path, Inode: st.Ino, Dev: uint32(st.Dev),
		MTime: time.Unix(st.Mtim.Unix()), CTime: time.Unix(st.Ctim.Unix())}
	ev := &event.Event{Kind: event.KindExec, Process: event.Process{PID: uint32(pid), StartNS: startNS(t, pid)}, Exec: x}
	tb.Apply(ev)

	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	want := hex.EncodeToString(sum[:])
	var got string
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end) && got == ""; {
		later := &event.Event{Kind: event.KindOpen, Process: event.Process{PID: uint32(pid), StartNS: startNS(t, pid)}}
		tb.Apply(later)
		got = later.Process.ExeSHA256
		time.Sleep(5 * time.Millisecond)
	}
	if got != want {
		t.Fatalf("sha256 %q, want %q (stats %+v)", got, want, tb.Stats())
	}
	// A second exec of the same file is served from the cache.
	again := &event.Event{Kind: event.KindExec, Process: event.Process{PID: uint32(pid), StartNS: startNS(t, pid)}, Exec: x}
	tb.Apply(again)
	if again.Process.ExeSHA256 != want || tb.Stats().HashCacheHit == 0 {
		t.Fatalf("cached hash not used: %q %+v", again.Process.ExeSHA256, tb.Stats())
	}
}

func TestReadProcHostileName(t *testing.T) {
	dir := t.TempDir()
	pdir := dir + "/77"
	if err := os.MkdirAll(pdir, 0o755); err != nil {
		t.Fatal(err)
	}
	stat := "77 (a) b (c) ) S 5 77 77 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 12345 0 0\n"
	if err := os.WriteFile(pdir+"/stat", []byte(stat), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := readProc(dir, 77)
	if err != nil {
		t.Fatal(err)
	}
	if s.name != "a) b (c) " || s.ppid != 5 || s.startTicks != 12345 {
		t.Fatalf("parsed %+v", s)
	}
	if err := os.WriteFile(pdir+"/stat", []byte("77 (x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readProc(dir, 77); err == nil {
		t.Fatal("truncated stat accepted")
	}
}

// TestLineageFollowsAncestorExec: after an ancestor execs, its
// descendants' next events show its new image; a leaf's exec leaves the
// lineages already built in place (they are shared, not rebuilt).
func TestLineageFollowsAncestorExec(t *testing.T) {
	tb := newTable(t, Options{})
	exec := func(pid, ppid uint32, start, pstart uint64, path string) *event.Event {
		ev := &event.Event{Kind: event.KindExec, Process: event.Process{PID: pid, PPID: ppid, StartNS: start, ParentStartNS: pstart},
			Exec: &event.Exec{Path: path, Args: []string{path}}}
		tb.Apply(ev)
		return ev
	}
	fork := func(pid uint32, start uint64, child uint32, cstart uint64) {
		tb.Apply(&event.Event{Kind: event.KindFork, Process: event.Process{PID: pid, StartNS: start},
			Fork: &event.Fork{ChildPID: child, ChildTID: child, ChildStartNS: cstart}})
	}
	other := func(pid uint32, start uint64) *event.Event {
		ev := &event.Event{Kind: event.KindConnect, Process: event.Process{PID: pid, StartNS: start}}
		tb.Apply(ev)
		return ev
	}
	exec(100, 1, 5e9, 0, "/bin/sh")
	fork(100, 5e9, 101, 6e9)
	exec(101, 100, 6e9, 5e9, "/usr/bin/make")
	fork(101, 6e9, 102, 7e9)
	first := exec(102, 101, 7e9, 6e9, "/usr/bin/cc").Process.Lineage
	if len(first) != 2 || first[0].Exe != "/usr/bin/make" || first[1].Exe != "/bin/sh" {
		t.Fatalf("lineage %+v", first)
	}
	// A leaf execing (102 has no children) does not rebuild 102's lineage.
	exec(102, 101, 7e9, 6e9, "/usr/bin/ld")
	if again := other(102, 7e9).Process.Lineage; &again[0] != &first[0] {
		t.Error("a leaf's exec rebuilt the lineage")
	}
	// The middle ancestor execs: its descendant sees the new image.
	exec(101, 100, 6e9, 5e9, "/usr/bin/ninja")
	if got := other(102, 7e9).Process.Lineage; len(got) != 2 || got[0].Exe != "/usr/bin/ninja" {
		t.Errorf("after the parent's exec: lineage %+v", got)
	}
}

// A process gone before the hasher reached it (a dropper that ran for a
// millisecond) is hashed through the file at its path, resolved in its
// parent's root, but only while that is the very file it executed; the
// late hash goes out as an exec_hashed event with the process's identity.
func TestExitedProcessHashedByPath(t *testing.T) {
	hashed := make(chan *event.Event, 4)
	tb := newTable(t, Options{Hashed: func(ev *event.Event) { hashed <- ev }})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go tb.Run(ctx)

	src, err := exec.LookPath("true")
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	run := func(name string) (*event.Exec, int) {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o755); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(path)
		if err := cmd.Run(); err != nil {
			t.Fatal(err)
		}
		var st unix.Stat_t
		if err := unix.Stat(path, &st); err != nil {
			t.Fatal(err)
		}
		kdev := uint32(unix.Major(st.Dev))<<20 | uint32(unix.Minor(st.Dev)) // as the kernel reports it
		return &event.Exec{Path: path, Inode: st.Ino, Dev: kdev,
			MTime: time.Unix(st.Mtim.Unix()), CTime: time.Unix(st.Ctim.Unix())}, cmd.Process.Pid
	}
	applyExec := func(x *event.Exec, pid int) *event.Event {
		ev := &event.Event{Kind: event.KindExec, Exec: x, Process: event.Process{PID: uint32(pid), PPID: uint32(os.Getpid()),
			StartNS: uint64(time.Now().UnixNano()), CgroupID: 4242}}
		tb.Apply(ev)
		return ev
	}
	sum := sha256.Sum256(data)
	x, pid := run("dropper")
	ev := applyExec(x, pid)
	select {
	case h := <-hashed:
		p := h.Process
		if h.Kind != event.KindExecHashed || p.UUID != ev.Process.UUID || p.ExeSHA256 != hex.EncodeToString(sum[:]) ||
			p.Exe != x.Path || p.CgroupID != 4242 || p.PPID != uint32(os.Getpid()) {
			t.Fatalf("late hash event %+v, want %s of %s (%s)", h, hex.EncodeToString(sum[:]), x.Path, ev.Process.UUID)
		}
	case <-time.After(2 * time.Second):
		t.Fatalf("no late hash for an exited process (stats %+v)", tb.Stats())
	}
	// The file changed after the process ran: not the executed image.
	y, pid2 := run("rewritten")
	if err := os.WriteFile(y.Path, append(data, 0), 0o755); err != nil {
		t.Fatal(err)
	}
	failed := tb.Stats().HashFailed
	applyExec(y, pid2)
	select {
	case h := <-hashed:
		t.Fatalf("hash of a file rewritten since the exec: %+v", h.Process)
	case <-time.After(500 * time.Millisecond):
	}
	if tb.Stats().HashFailed == failed {
		t.Errorf("the refused hash was not counted: %+v", tb.Stats())
	}
}

// An exited leaf leaves after LeafExitGrace; an exited parent whose child
// named it in a lineage stays for ExitGrace.
func TestExitedLeavesGoFirst(t *testing.T) {
	tb := newTable(t, Options{ExitGrace: time.Hour, LeafExitGrace: time.Millisecond})
	parent := event.Process{PID: 300, StartNS: 3e9}
	child := event.Process{PID: 301, StartNS: 4e9, PPID: 300, ParentStartNS: 3e9}
	tb.Apply(&event.Event{Kind: event.KindFork, Process: parent, Fork: &event.Fork{ChildPID: 301, ChildStartNS: 4e9}})
	ev := &event.Event{Kind: event.KindOpen, Process: child}
	tb.Apply(ev)
	if len(ev.Process.Lineage) == 0 || ev.Process.Lineage[0].PID != 300 {
		t.Fatalf("child's lineage %+v", ev.Process.Lineage)
	}
	for _, p := range []event.Process{child, parent} {
		tb.Apply(&event.Event{Kind: event.KindExit, Process: p, Exit: &event.Exit{}})
	}
	tb.Expire(time.Now().Add(time.Second))
	if _, ok := tb.Lookup(301); ok {
		t.Error("exited leaf still held after LeafExitGrace")
	}
	if _, ok := tb.Lookup(300); !ok {
		t.Error("exited parent named in a lineage dropped before ExitGrace")
	}
}

// A hash that completes after the process exec'd another image is not
// that image's: it must not land on the entry, nor go out as its hash.
func TestLateHashOfAnEarlierImageIsDropped(t *testing.T) {
	var hashed []*event.Event
	var mu sync.Mutex
	tb := newTable(t, Options{Hashed: func(ev *event.Event) { mu.Lock(); hashed = append(hashed, ev); mu.Unlock() }})
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	pid := cmd.Process.Pid
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if s, err := readProc("/proc", uint32(pid)); err == nil && len(s.args) > 0 && s.args[0] == "sleep" {
			break
		}
	}
	identity := func(path string) *event.Exec {
		var st unix.Stat_t
		if err := unix.Stat(path, &st); err != nil {
			t.Fatal(err)
		}
		return &event.Exec{Path: path, Inode: st.Ino, Dev: uint32(st.Dev),
			MTime: time.Unix(st.Mtim.Unix()), CTime: time.Unix(st.Ctim.Unix())}
	}
	sleepPath, _ := exec.LookPath("sleep")
	truePath, _ := exec.LookPath("true")
	// Both execs are applied before the hasher runs: the job for the first
	// (whose file /proc/PID/exe really is) completes after the second.
	tb.Apply(&event.Event{Kind: event.KindExec, Process: event.Process{PID: uint32(pid), StartNS: startNS(t, pid)}, Exec: identity(sleepPath)})
	tb.Apply(&event.Event{Kind: event.KindExec, Process: event.Process{PID: uint32(pid), StartNS: startNS(t, pid)}, Exec: identity(truePath)})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go tb.Run(ctx)
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if st := tb.Stats(); st.HashDone+st.HashFailed >= 2 {
			break
		}
	}
	if st := tb.Stats(); st.HashDone+st.HashFailed < 2 {
		t.Fatalf("hash jobs not done: %+v", st)
	}
	later := &event.Event{Kind: event.KindOpen, Process: event.Process{PID: uint32(pid), StartNS: startNS(t, pid)}}
	tb.Apply(later)
	mu.Lock()
	defer mu.Unlock()
	// The second image's job finds /proc/PID/exe is not its file and
	// hashes the file at its path, which is: that hash may land, the
	// first image's never.
	b, err := os.ReadFile(truePath)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	trueSum := hex.EncodeToString(sum[:])
	if later.Process.Exe != truePath || (later.Process.ExeSHA256 != "" && later.Process.ExeSHA256 != trueSum) {
		t.Fatalf("entry runs %s with hash %q, want none or %s's", later.Process.Exe, later.Process.ExeSHA256, truePath)
	}
	for _, ev := range hashed {
		if ev.Exec.Path != truePath || ev.Process.ExeSHA256 != trueSum {
			t.Errorf("hashed event for %s with %q — the earlier image's hash went out", ev.Exec.Path, ev.Process.ExeSHA256)
		}
	}
}

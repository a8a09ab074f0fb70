// Command sensor measures what the mamori agent costs the workloads it
// watches and what it sustains, side by side in one run:
//
//   - the slowdown of four loops (exec, open/close of an unwatched file, TCP
//     connect/accept on loopback, DNS query/answer against a DNS server on
//     loopback) with `mamori agent` running versus not, interleaved in
//     rounds (A/B, B/A, …) to cancel drift, plus a diagnostic pass that
//     reads the kernel's run time of each of the agent's BPF programs per
//     loop iteration;
//   - the events per second the agent reads on one core with zero loss,
//     stepping a generator's rate up until the agent falls behind;
//   - the agent's peak RSS with 1,000 live processes.
//
// The benchmark pins itself (and so every workload it runs) to one CPU and
// the agent to another, so the agent's user-space work does not compete
// with the measured loops. Run it as root: `go run ./bench/sensor` or
// scripts/bench.sh, which also writes the results as markdown.
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

var (
	mamoriBin     = flag.String("mamori", "bin/mamori", "mamori binary (scripts/bench.sh builds it)")
	workCPU       = flag.Int("cpu", 0, "CPU the workloads (this program) are pinned to")
	agentCPU      = flag.Int("agent-cpu", 1, "CPU the agent is pinned to")
	rounds        = flag.Int("rounds", 4, "with/without rounds per loop (the order alternates)")
	scale         = flag.Float64("scale", 1, "iteration multiplier for the overhead loops")
	stepSecs      = flag.Float64("step-seconds", 4, "seconds per throughput step")
	maxRate       = flag.Int("max-rate", 600000, "highest generator rate tried (events/s)")
	rssProcs      = flag.Int("procs", 1000, "live processes for the memory measurement")
	markdown      = flag.String("markdown", "", "also write the results as markdown to this file")
	profileOut    = flag.String("agent-profile", "", "write the agent's Go CPU profile during the throughput steps to this file")
	niceness      = flag.Int("nice", -20, "nice value of the workloads, so other tenants of their CPU barely preempt them")
	agentNice     = flag.Int("agent-nice", -20, "nice value of the agent, so other tenants of its CPU do not take its core")
	quietWait     = flag.Duration("wait-quiet", 2*time.Minute, "longest wait, before each overhead phase, for the machine to be ≤ 15% busy")
	only          = flag.String("only", "overhead,floor,bpf,variants,throughput,rss", "parts to run, comma-separated")
	loopFilter    = flag.String("loops", "", "run only the overhead loops whose name contains one of these comma-separated words")
	compatObjects = flag.Bool("compat", false, "run the agent with the BPF objects built for older kernels (--bpf-objects compat)")
	stopAgent     = flag.Bool("agent-stopped", false, "diagnostic: stop the agent (SIGSTOP) once its hooks are attached, so the overhead loops measure the kernel side alone")
)

const metricsAddr = "127.0.0.1:19464"

const pinnedEnv = "MAMORI_BENCH_PINNED"

func main() {
	flag.Parse()
	log.SetFlags(0)
	if os.Geteuid() != 0 {
		fatal("run as root: the agent loads BPF programs")
	}
	if *workCPU == *agentCPU {
		fatal("-cpu and -agent-cpu must differ")
	}
	pinSelf(*workCPU)
	go func() {
		c := make(chan os.Signal, 1)
		signal.Notify(c, os.Interrupt, syscall.SIGTERM)
		<-c
		fatal("interrupted")
	}()
	parts := map[string]bool{}
	for _, p := range strings.Split(*only, ",") {
		parts[strings.TrimSpace(p)] = true
	}

	m := machineInfo()
	fmt.Print(m.text())
	e := setup()
	onCleanup(func() { os.RemoveAll(e.dir) })
	defer runCleanups()
	res := results{machine: m}
	if parts["overhead"] {
		res.loops = e.overhead()
	}
	if parts["floor"] {
		res.floor = e.hookFloor()
	}
	if parts["bpf"] {
		res.bpf = e.bpfCost()
	}
	if parts["variants"] {
		res.variant = e.variantCosts()
	}
	if parts["throughput"] {
		f := e.throughput()
		res.flood = &f
	}
	if parts["rss"] {
		mm := e.rss()
		res.mem = &mm
	}
	res.machine.othersAfter = otherBPFHolders()
	res.machine.loadAfter = loadAvg()
	out := res.markdown()
	fmt.Print("\n" + out)
	if *markdown != "" {
		if err := os.WriteFile(*markdown, []byte(out), 0o644); err != nil {
			fatalf("write %s: %v", *markdown, err)
		}
	}
}

// pinSelf re-executes the program with its CPU affinity set to cpu and its
// nice value to -nice, so that every thread of the Go runtime and every
// child (exec'd /bin/true, sleep) inherits them. Setting them here without
// a re-exec would change only the calling thread.
//
// At nice -20 the scheduler gives the timed loops ~99% of their CPU against
// a nice-0 tenant, which otherwise swamps a 5% effect on a shared VM. (A
// real-time policy would do more, but a spinning real-time thread starves
// the Go runtime's other threads on the same CPU.) The agent gets the same
// treatment on its own CPU (-agent-nice), so that what it sustains on one
// core is measured with the whole core.
func pinSelf(cpu int) {
	var want unix.CPUSet
	want.Set(cpu)
	var have unix.CPUSet
	if err := unix.SchedGetaffinity(0, &have); err == nil && have == want && os.Getenv(pinnedEnv) == "1" {
		return
	}
	runtime.LockOSThread()
	if err := unix.SchedSetaffinity(0, &want); err != nil {
		fatalf("pin to CPU %d: %v", cpu, err)
	}
	// PRIO_PROCESS with who 0 is the calling thread on Linux.
	if err := unix.Setpriority(unix.PRIO_PROCESS, 0, *niceness); err != nil {
		fatalf("nice %d: %v", *niceness, err)
	}
	exe, err := os.Executable()
	if err != nil {
		fatalf("re-exec pinned: %v", err)
	}
	env := append(os.Environ(), pinnedEnv+"=1")
	fatalf("re-exec pinned: %v", syscall.Exec(exe, os.Args, env))
}

// machine describes where and under what load the benchmark ran.
type machine struct {
	date, kernel, cpu string
	ncpu              int
	loadBefore        string
	loadAfter         string
	others            []string // other processes holding BPF programs
	othersAfter       []string
}

func machineInfo() machine {
	var u unix.Utsname
	_ = unix.Uname(&u)
	m := machine{
		date:       time.Now().UTC().Format("2006-01-02 15:04 UTC"),
		kernel:     unix.ByteSliceToString(u.Release[:]),
		ncpu:       onlineCPUs(),
		loadBefore: loadAvg(),
		others:     otherBPFHolders(),
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

// onlineCPUs counts the machine's CPUs; runtime.NumCPU would count only
// the one this pinned process may use.
func onlineCPUs() int {
	b, err := os.ReadFile("/sys/devices/system/cpu/online")
	if err != nil {
		return 0
	}
	n := 0
	for _, r := range strings.Split(strings.TrimSpace(string(b)), ",") {
		lo, hi, found := strings.Cut(r, "-")
		a, _ := strconv.Atoi(lo)
		z := a
		if found {
			z, _ = strconv.Atoi(hi)
		}
		n += z - a + 1
	}
	return n
}

func (m machine) text() string {
	s := fmt.Sprintf("bench: %s, kernel %s, %d CPUs (%s); workload pinned to CPU %d at nice %d, agent to CPU %d at nice %d; load average %s\n",
		m.date, m.kernel, m.ncpu, m.cpu, *workCPU, *niceness, *agentCPU, *agentNice, m.loadBefore)
	if len(m.others) > 0 {
		s += "bench: WARNING: other processes hold BPF programs (their hooks slow the baseline too): " +
			strings.Join(m.others, ", ") + "\n"
	}
	return s
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// otherBPFHolders lists processes other than this one that hold BPF program
// file descriptors: another agent or a sensor test running beside the
// benchmark adds its hooks' cost to both sides of every comparison.
func otherBPFHolders(skip ...int) []string {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var out []string
	for _, d := range ents {
		pid, err := strconv.Atoi(d.Name())
		if err != nil || pid == self || slices.Contains(skip, pid) {
			continue
		}
		fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		if err != nil {
			continue
		}
		n := 0
		for _, fd := range fds {
			if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); err == nil && l == "anon_inode:bpf-prog" {
				n++
			}
		}
		if n > 0 {
			comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
			out = append(out, fmt.Sprintf("%d %s (%d programs)", pid, strings.TrimSpace(string(comm)), n))
		}
	}
	return out
}

var (
	cleanupMu sync.Mutex
	cleanups  = map[int]func(){}
	cleanupID int
)

// onCleanup registers f to run at exit or on interrupt (an agent to stop,
// processes to kill) and returns a function that runs it early instead.
func onCleanup(f func()) func() {
	cleanupMu.Lock()
	defer cleanupMu.Unlock()
	cleanupID++
	id := cleanupID
	cleanups[id] = f
	return func() {
		cleanupMu.Lock()
		g, ok := cleanups[id]
		delete(cleanups, id)
		cleanupMu.Unlock()
		if ok {
			g()
		}
	}
}

func runCleanups() {
	cleanupMu.Lock()
	fs := cleanups
	cleanups = map[int]func(){}
	cleanupMu.Unlock()
	for _, f := range fs {
		f()
	}
}

// fatalf stops what the benchmark started, then exits.
func fatalf(format string, args ...any) {
	runCleanups()
	log.Fatalf(format, args...)
}

func fatal(args ...any) { fatalf("%s", fmt.Sprint(args...)) }

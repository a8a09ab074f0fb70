package main

import (
	"fmt"
	"log"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// floodStep is one generator rate held for a while.
type floodStep struct {
	target     int     // events/s asked for; 0 = as fast as possible
	generated  float64 // events/s the generator achieved
	read       float64 // records/s the agent read
	lost       float64 // lost events of every kind during the step
	ringFull   float64 // of which: ring buffer full
	recursion  float64 // of which: BPF programs skipped by recursion protection
	backlog    float64 // records emitted but not yet read when the step ended
	catchUp    time.Duration
	agentShare float64 // share of its one core the agent used
}

// keptUp says the agent read what was generated without loss and without
// a backlog worth more than a quarter second.
func (s floodStep) keptUp() bool {
	return s.lost == 0 && s.backlog <= 0.25*s.generated
}

type floodResult struct {
	steps    []floodStep
	peakMB   float64 // agent VmHWM after the flood
	profile  string
	fillerOn bool
}

// best is the highest generated rate the agent kept up with.
func (f floodResult) best() (floodStep, bool) {
	var b floodStep
	ok := false
	for _, s := range f.steps {
		if s.keptUp() && s.generated > b.generated {
			b, ok = s, true
		}
	}
	return b, ok
}

// generator issues failed connects to an abstract unix socket address
// nobody listens on: the sensor reports every one (attempts count), it is
// cheap for the kernel (no path walk: the generator must not be the
// limit), and it changes nothing. One thread runs on the workload CPU; a
// filler thread runs on the agent's CPU at SCHED_IDLE, so it only takes
// what the agent leaves idle and the agent keeps its whole core.
type generator struct {
	path string
	done atomic.Int64
}

func (g *generator) run(stop <-chan struct{}, start, end time.Time, rate int, cpu int, idle bool, wg *sync.WaitGroup) {
	defer wg.Done()
	// Never unlocked: a goroutine that exits locked takes its thread with
	// it, so no other goroutine inherits the changed affinity or policy.
	runtime.LockOSThread()
	if cpu >= 0 {
		var set unix.CPUSet
		set.Set(cpu)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			log.Printf("flood: pin filler to CPU %d: %v", cpu, err)
			return
		}
	}
	if idle {
		if err := unix.SchedSetAttr(0, &unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_IDLE}, 0); err != nil {
			log.Printf("flood: SCHED_IDLE: %v", err)
			return
		}
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		log.Printf("flood: socket: %v", err)
		return
	}
	defer unix.Close(fd)
	sa := &unix.SockaddrUnix{Name: g.path}
	const batch = 32
	for {
		select {
		case <-stop:
			return
		default:
		}
		now := time.Now()
		if now.After(end) {
			return // on its own too: the step must end even if main is starved
		}
		if rate > 0 {
			due := int64(now.Sub(start).Seconds() * float64(rate))
			if g.done.Load() >= due {
				time.Sleep(50 * time.Microsecond)
				continue
			}
		}
		for i := 0; i < batch; i++ {
			_ = unix.Connect(fd, sa)
		}
		g.done.Add(batch)
	}
}

// throughput steps the generator's rate up until the agent, pinned to one
// core, loses events or falls behind, or the generator cannot go faster.
func (e *env) throughput() floodResult {
	res := floodResult{fillerOn: true}
	opts := agentOptions{}
	if *profileOut != "" {
		opts.cpuProfile = *profileOut
		res.profile = *profileOut
	}
	ag := startAgent(opts)
	var rates []int
	for _, r := range []int{50e3, 100e3, 150e3, 200e3, 250e3, 300e3, 350e3, 400e3, 500e3, 600e3, 800e3, 1000e3} {
		if r <= *maxRate {
			rates = append(rates, r)
		}
	}
	rates = append(rates, 0)
	for _, rate := range rates {
		s := e.floodStep(ag, rate, res.fillerOn)
		res.steps = append(res.steps, s)
		label := "max"
		if rate > 0 {
			label = fmt.Sprintf("%d/s", rate)
		}
		fmt.Printf("throughput: target %s: generated %.0f/s, read %.0f/s, lost %.0f (ring full %.0f, recursion %.0f), backlog %.0f, agent CPU %.0f%%\n",
			label, s.generated, s.read, s.lost, s.ringFull, s.recursion, s.backlog, 100*s.agentShare)
		if !s.keptUp() {
			break
		}
		if rate > 0 && s.generated < 0.9*float64(rate) {
			// The generator is the limit: one last step at its full speed.
			s := e.floodStep(ag, 0, res.fillerOn)
			res.steps = append(res.steps, s)
			fmt.Printf("throughput: target max: generated %.0f/s, read %.0f/s, lost %.0f (ring full %.0f, recursion %.0f), backlog %.0f, agent CPU %.0f%%\n",
				s.generated, s.read, s.lost, s.ringFull, s.recursion, s.backlog, 100*s.agentShare)
			break
		}
	}
	_, res.peakMB = memMB(ag.pid())
	ag.stop()
	return res
}

func (e *env) floodStep(ag *agentProc, rate int, filler bool) floodStep {
	before := mustScrape()
	cpu0 := cpuSeconds(ag.pid())
	g := &generator{path: fmt.Sprintf("@mamori-bench-nobody-%d", os.Getpid())}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(time.Duration(*stepSecs * float64(time.Second)))
	wg.Add(1)
	go g.run(stop, start, end, rate, -1, false, &wg)
	if filler {
		wg.Add(1)
		go g.run(stop, start, end, rate, *agentCPU, true, &wg)
	}
	time.Sleep(time.Until(end))
	close(stop)
	wg.Wait()
	secs := time.Since(start).Seconds()
	cpu := cpuSeconds(ag.pid()) - cpu0
	atEnd := mustScrape()
	// Catch up: wait until the agent has read what the kernel emitted.
	emitted := atEnd["mamori_sensor_events_emitted_total{*}"]
	t0 := time.Now()
	after := atEnd
	for time.Since(t0) < 10*time.Second && after["mamori_sensor_records_read_total"] < emitted {
		time.Sleep(50 * time.Millisecond)
		after = mustScrape()
	}
	catch := time.Since(t0)
	time.Sleep(300 * time.Millisecond) // let the idle agent settle before the next step
	return floodStep{
		target:     rate,
		generated:  float64(g.done.Load()) / secs,
		read:       (after["mamori_sensor_records_read_total"] - before["mamori_sensor_records_read_total"]) / secs,
		lost:       lost(after) - lost(before),
		ringFull:   after["mamori_sensor_kernel_drops_total{*}"] - before["mamori_sensor_kernel_drops_total{*}"],
		recursion:  after["mamori_sensor_program_misses_total"] - before["mamori_sensor_program_misses_total"],
		backlog:    emitted - atEnd["mamori_sensor_records_read_total"],
		catchUp:    catch,
		agentShare: cpu / secs,
	}
}

// memResult is the agent's memory with many live processes.
type memResult struct {
	procs        int
	tracked      float64
	rssMB, hwmMB float64
}

// rss starts a fresh agent, then n sleeping processes, waits until the
// agent's process table holds them, and reads its memory.
func (e *env) rss() memResult {
	fmt.Printf("memory: agent with %d live processes\n", *rssProcs)
	ag := startAgent(agentOptions{})
	defer ag.stop()
	base := mustScrape()["mamori_process_table_entries"]
	var cmds []*exec.Cmd
	var mu sync.Mutex
	killAll := onCleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range cmds {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
	})
	defer killAll()
	for i := 0; i < *rssProcs; i++ {
		c := exec.Command("sleep", "600")
		if err := c.Start(); err != nil {
			fatalf("start process %d: %v", i, err)
		}
		mu.Lock()
		cmds = append(cmds, c)
		mu.Unlock()
	}
	r := memResult{procs: len(cmds)}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		r.tracked = mustScrape()["mamori_process_table_entries"]
		if r.tracked >= base+float64(len(cmds)) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(2 * time.Second) // hashing and lineage settle
	r.tracked = mustScrape()["mamori_process_table_entries"]
	r.rssMB, r.hwmMB = memMB(ag.pid())
	if r.rssMB == 0 {
		log.Printf("memory: cannot read /proc/%d/status", ag.pid())
	}
	_ = os.Stdout.Sync()
	return r
}

package main

import (
	"bufio"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// agentProc is a `mamori agent` child pinned to the agent CPU.
type agentProc struct {
	cmd  *exec.Cmd
	dir  string
	done func() // stops it, once
}

type agentOptions struct {
	cpuProfile string
	// compat loads the BPF objects built for older kernels.
	compat bool
}

// startAgent runs the full agent (sensor, process and container tables,
// every built-in detector) and returns once its hooks are attached and its
// /proc seeding is done.
func startAgent(o agentOptions) *agentProc {
	dir, err := os.MkdirTemp("", "mamori-bench-agent-")
	if err != nil {
		fatal(err)
	}
	args := []string{"-n", strconv.Itoa(*agentNice - *niceness), "taskset", "-c", strconv.Itoa(*agentCPU), *mamoriBin, "agent", "--data-dir", dir,
		"--metrics-addr", metricsAddr, "--print", "", "-q"}
	if *compatObjects || o.compat {
		args = append(args, "--bpf-objects", "compat")
	}
	if o.cpuProfile != "" {
		args = append(args, "--cpuprofile", o.cpuProfile)
	}
	// nice and taskset exec in place: the child's pid is the agent's. nice
	// adjusts relative to this program's own value.
	cmd := exec.Command("nice", args...)
	logf, err := os.Create(dir + "/agent.log")
	if err != nil {
		fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		fatalf("start agent: %v", err)
	}
	a := &agentProc{cmd: cmd, dir: dir}
	a.done = onCleanup(a.terminate)
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		if m, err := scrape(); err == nil && m[`mamori_sensor_hooks{state="attached"}`] > 0 {
			time.Sleep(500 * time.Millisecond) // let the first /proc seeding and container scan settle
			return a
		}
		if cmd.ProcessState != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	b, _ := os.ReadFile(dir + "/agent.log")
	fatalf("agent did not come up within 90s:\n%s", b)
	return nil
}

func (a *agentProc) pid() int { return a.cmd.Process.Pid }

func (a *agentProc) stop() { a.done() }

func (a *agentProc) terminate() {
	_ = a.cmd.Process.Signal(syscall.SIGINT)
	done := make(chan struct{})
	go func() { _ = a.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = a.cmd.Process.Kill()
		<-done
	}
	os.RemoveAll(a.dir)
}

// scrape reads the agent's metrics. Each series is kept under its full
// name with labels; name{*} also sums a metric over its labels.
func scrape() (map[string]float64, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
		if j := strings.IndexByte(line, '{'); j > 0 && j < i {
			out[line[:j]+"{*}"] += v
		}
	}
	return out, sc.Err()
}

func mustScrape() map[string]float64 {
	m, err := scrape()
	if err != nil {
		fatalf("agent metrics: %v", err)
	}
	return m
}

// lost sums every counter of lost events: ring buffer full, BPF recursion,
// decoder refusals, events given up by the retry cache, lifecycle events.
func lost(m map[string]float64) float64 {
	return m["mamori_sensor_kernel_drops_total{*}"] + m["mamori_sensor_program_misses_total"] +
		m["mamori_sensor_decode_errors_total"] + m[`mamori_retry_cache_events_total{outcome="dropped"}`] +
		m["mamori_agent_lifecycle_events_lost_total"]
}

// cpuSeconds is a process's user+system CPU time, all threads.
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

// memMB returns VmRSS and VmHWM (peak RSS) of a process in MiB.
func memMB(pid int) (rss, hwm float64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "VmRSS:":
			rss = kb / 1024
		case "VmHWM:":
			hwm = kb / 1024
		}
	}
	return rss, hwm
}

// progStat is one BPF program's accumulated run time, from the kernel.
type progStat struct {
	id            int
	name          string
	runNS, runCnt uint64
}

// agentProgs reads the run-time statistics of the agent's BPF programs from
// its file descriptors (only counted while statistics are enabled).
func agentProgs(pid int, names map[int]string) map[int]progStat {
	out := map[int]progStat{}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fdinfo", pid))
	if err != nil {
		return out
	}
	for _, fd := range fds {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%s", pid, fd.Name()))
		// Program fds only: a link's fdinfo names its program's id too, but
		// carries no statistics.
		if err != nil || !strings.Contains(string(b), "prog_type:") {
			continue
		}
		var st progStat
		for _, line := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			n, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			switch k {
			case "prog_id":
				st.id = int(n)
			case "run_time_ns":
				st.runNS = n
			case "run_cnt":
				st.runCnt = n
			}
		}
		if _, ok := names[st.id]; !ok {
			names[st.id] = progName(st.id)
		}
		st.name = names[st.id]
		out[st.id] = st
	}
	return out
}

func progName(id int) string {
	p, err := ebpf.NewProgramFromID(ebpf.ProgramID(id))
	if err != nil {
		return fmt.Sprintf("prog %d", id)
	}
	defer p.Close()
	info, err := p.Info()
	if err != nil || info.Name == "" {
		return fmt.Sprintf("prog %d", id)
	}
	return info.Name
}

// bpfLoopCost is the kernel time the agent's programs spent per iteration
// of one loop.
type bpfLoopCost struct {
	name       string
	nsPerOp    float64 // all programs
	runsPerOp  float64
	top        []progCost
	wallWithNS float64 // ns/op of this pass (statistics on)
}

type progCost struct {
	name      string
	nsPerOp   float64
	runsPerOp float64
}

// bpfCost turns on the kernel's BPF run-time statistics and runs each loop
// once with the agent, attributing its cost to the agent's programs. It is
// a separate pass because the statistics themselves cost two clock reads
// per program run.
func (e *env) bpfCost() []bpfLoopCost {
	fmt.Println("bpf: per-program cost with run-time statistics on")
	ag := startAgent(agentOptions{})
	defer ag.stop()
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		log.Printf("bpf: run-time statistics unavailable: %v", err)
		return nil
	}
	defer stats.Close()
	return e.loopCosts(ag, map[int]string{})
}

// loopCosts runs each loop once with ag and charges it the kernel time of
// ag's programs (run-time statistics must be on).
func (e *env) loopCosts(ag *agentProc, names map[int]string) []bpfLoopCost {
	var out []bpfLoopCost
	for _, l := range e.loops() {
		// The statistics count every process's syscalls: measure what the
		// rest of the machine costs per second, and take it off.
		b0 := agentProgs(ag.pid(), names)
		t0 := time.Now()
		time.Sleep(time.Second)
		bg := agentProgs(ag.pid(), names)
		bgSecs := time.Since(t0).Seconds()
		before := agentProgs(ag.pid(), names)
		d := timeLoop(l)
		after := agentProgs(ag.pid(), names)
		scale := d.Seconds() / bgSecs
		c := bpfLoopCost{name: l.name, wallWithNS: float64(d.Nanoseconds()) / float64(l.n)}
		for id, a := range after {
			b := before[id]
			runs := float64(a.runCnt-b.runCnt) - scale*float64(bg[id].runCnt-b0[id].runCnt)
			ns := float64(a.runNS-b.runNS) - scale*float64(bg[id].runNS-b0[id].runNS)
			if runs < 0.5 || ns <= 0 {
				continue
			}
			pc := progCost{name: a.name, nsPerOp: ns / float64(l.n), runsPerOp: runs / float64(l.n)}
			c.nsPerOp += pc.nsPerOp
			c.runsPerOp += pc.runsPerOp
			c.top = append(c.top, pc)
		}
		sort.Slice(c.top, func(i, j int) bool { return c.top[i].nsPerOp > c.top[j].nsPerOp })
		out = append(out, c)
	}
	return out
}

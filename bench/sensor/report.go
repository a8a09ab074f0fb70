package main

import (
	"fmt"
	"strings"
)

// Targets from the issue that asked for these benchmarks.
const (
	targetSlowdown = 1.05
	targetRate     = 200000
	targetRSSMB    = 100
)

type results struct {
	machine machine
	loops   []loopResult
	floor   *loopResult
	bpf     []bpfLoopCost
	variant []variantCost
	flood   *floodResult
	mem     *memResult
}

func verdict(ok bool) string {
	if ok {
		return "pass"
	}
	return "**FAIL**"
}

func commas(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func (r results) markdown() string {
	var b strings.Builder
	m := r.machine
	fmt.Fprintf(&b, "Run %s on %d vCPU (%s), kernel %s. Workload pinned to CPU %d at nice %d, `mamori agent` (full pipeline: sensor, "+
		"process and container tables, every built-in detector) pinned to CPU %d at nice %d. Load average %s before, %s after.\n",
		m.date, m.ncpu, m.cpu, m.kernel, *workCPU, *niceness, *agentCPU, *agentNice, m.loadBefore, m.loadAfter)
	if others := uniq(append(append([]string(nil), m.others...), m.othersAfter...)); len(others) > 0 {
		fmt.Fprintf(&b, "Other processes held BPF programs when the run started or ended: %s. Each overhead phase "+
			"first waited for none to be loaded.\n", strings.Join(others, ", "))
	}
	b.WriteString("\n")
	r.summary(&b)
	if len(r.loops) > 0 {
		fmt.Fprintf(&b, "\n| loop | ops × rounds | without agent | with agent | slowdown | slowdown of medians | ≤ %.2f |\n|---|---|---|---|---|---|---|\n", targetSlowdown)
		for _, x := range r.loops {
			fmt.Fprintf(&b, "| %s | %s × %d | %s ns/op | %s ns/op | %.3f | %.3f | %s |\n", x.name, commas(float64(x.n)), x.rounds,
				commas(x.nsPerOp(x.without)), commas(x.nsPerOp(x.with)), x.ratio(), x.medianRatio(), verdict(x.ratio() <= targetSlowdown))
		}
		fmt.Fprintf(&b, "\nEach round times every loop in %d pieces on each side (the side going first alternates); ns/op is the "+
			"10th percentile of a side's pieces over all rounds, since noise from other tenants only adds time. The medians' ratio "+
			"is shown for comparison.\n", chunks)
		if busyPhases > 0 {
			fmt.Fprintf(&b, "**%d of %d phases started while other work kept the machine over 15%% busy**: their figures are noisy.\n", busyPhases, allPhases)
		} else {
			fmt.Fprintf(&b, "Every phase started on a machine ≤ 15%% busy (waited up to %s).\n", *quietWait)
		}
	}
	if f := r.floor; f != nil {
		fmt.Fprintf(&b, "\nThe floor under the open loop's figure: one syscall tracepoint whose program does nothing (no agent running), "+
			"timed the same way: %s → %s ns/op, slowdown %.3f (medians %.3f), %s ns per call. No syscall-tracepoint sensor can report "+
			"opens for less on this machine; kprobes, fentry and BPF LSM, which would be cheaper, are not available here.\n",
			commas(f.nsPerOp(f.without)), commas(f.nsPerOp(f.with)), f.ratio(), f.medianRatio(), commas(f.nsPerOp(f.with)-f.nsPerOp(f.without)))
	}
	if len(r.bpf) > 0 {
		b.WriteString("\n| loop | agent's BPF programs run per op | their kernel time per op | measured extra time per op | costliest programs (ns/op) |\n|---|---|---|---|---|\n")
		for _, c := range r.bpf {
			extra := "–"
			for _, x := range r.loops {
				if x.name == c.name {
					extra = commas(x.nsPerOp(x.with)-x.nsPerOp(x.without)) + " ns"
				}
			}
			var top []string
			for i, p := range c.top {
				if i == 4 {
					break
				}
				top = append(top, fmt.Sprintf("%s %.0f", p.name, p.nsPerOp))
			}
			fmt.Fprintf(&b, "| %s | %.1f | %s ns | %s | %s |\n", c.name, c.runsPerOp, commas(c.nsPerOp), extra, strings.Join(top, ", "))
		}
	}
	if len(r.variant) > 0 {
		variantsMarkdown(&b, r.variant)
	}
	if f := r.flood; f != nil {
		b.WriteString("\n| generator target | generated | read by the agent | lost (ring full, recursion, other) | backlog at step end | agent CPU (one core) | kept up |\n|---|---|---|---|---|---|---|\n")
		for _, s := range f.steps {
			t := "as fast as possible"
			if s.target > 0 {
				t = commas(float64(s.target)) + "/s"
			}
			fmt.Fprintf(&b, "| %s | %s/s | %s/s | %s (%s, %s, %s) | %s | %.0f%% | %s |\n", t, commas(s.generated), commas(s.read),
				commas(s.lost), commas(s.ringFull), commas(s.recursion), commas(s.lost-s.ringFull-s.recursion), commas(max(0, s.backlog)), 100*s.agentShare, map[bool]string{true: "yes", false: "**no**"}[s.keptUp()])
		}
		b.WriteString("\nEvents are failed `connect()`s to an abstract unix socket address nobody listens on (one event each). One generator " +
			"thread runs on the workload CPU; a second runs on the agent's CPU at `SCHED_IDLE`, taking only the time the agent leaves idle. " +
			"Lost counts ring-buffer drops, BPF recursion misses, decoder refusals and retry-cache drops.\n")
	}
	if mm := r.mem; mm != nil {
		fmt.Fprintf(&b, "\n| memory | value |\n|---|---|\n| live processes started | %d |\n| processes in the agent's table | %.0f |\n"+
			"| agent RSS | %.1f MiB |\n| agent peak RSS (VmHWM) | %.1f MiB |\n", mm.procs, mm.tracked, mm.rssMB, mm.hwmMB)
		if r.flood != nil && r.flood.peakMB > 0 {
			fmt.Fprintf(&b, "| agent peak RSS after the throughput steps | %.1f MiB |\n", r.flood.peakMB)
		}
	}
	return b.String()
}

func (r results) summary(b *strings.Builder) {
	if len(r.loops) == 0 && r.flood == nil && r.mem == nil {
		return // no part with a target ran
	}
	b.WriteString("| target | measured | verdict |\n|---|---|---|\n")
	if len(r.loops) > 0 {
		worst, name := 0.0, ""
		for _, x := range r.loops {
			if x.ratio() > worst {
				worst, name = x.ratio(), x.name
			}
		}
		fmt.Fprintf(b, "| slowdown ≤ %.2f on every loop | worst %.3f (%s) | %s |\n", targetSlowdown, worst, name, verdict(worst <= targetSlowdown))
	}
	if f := r.flood; f != nil {
		best, ok := f.best()
		rate := 0.0
		if ok {
			rate = best.read
		}
		extra := ""
		if ok && best.agentShare > 0 {
			extra = fmt.Sprintf("; agent used %.0f%% of its core there (≈ %s/s projected at 100%%)", 100*best.agentShare, commas(best.read/best.agentShare))
		}
		fmt.Fprintf(b, "| ≥ %s events/s on one core, zero loss | %s/s with zero loss%s | %s |\n", commas(targetRate), commas(rate), extra, verdict(rate >= targetRate))
	}
	if mm := r.mem; mm != nil {
		fmt.Fprintf(b, "| RSS ≤ %d MB with %d live processes | peak %.1f MiB | %s |\n", targetRSSMB, mm.procs, mm.hwmMB, verdict(mm.hwmMB <= targetRSSMB))
	}
}

func uniq(ss []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range ss {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

package main

import (
	"fmt"
	"log"
	"strings"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// variantCost compares, for one loop, the kernel time per op of the
// default BPF objects and of the build for older kernels, on this kernel.
type variantCost struct {
	name            string
	def, compat     float64 // ns/op, the lowest over rounds
	defTop, compTop string  // the costliest program of each, in its best round
}

// variantCosts runs the agent with each build in turn, rounds times (the
// build going first alternates), with BPF run-time statistics on, and keeps
// each build's lowest kernel time per loop op: noise only adds time. Both
// builds are measured in the same run, on the same loops, so their ratio
// is not a comparison of two machines' moods.
func (e *env) variantCosts() []variantCost {
	fmt.Println("variants: default and compat BPF objects, side by side")
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		log.Printf("variants: run-time statistics unavailable: %v", err)
		return nil
	}
	defer stats.Close()
	best := map[bool]map[string]bpfLoopCost{false: {}, true: {}}
	for r := 0; r < *rounds; r++ {
		for _, compat := range []bool{r%2 == 1, r%2 == 0} {
			fmt.Printf("variants: round %d/%d, compat=%v\n", r+1, *rounds, compat)
			ag := startAgent(agentOptions{compat: compat})
			for _, c := range e.loopCosts(ag, map[int]string{}) {
				if b, ok := best[compat][c.name]; !ok || c.nsPerOp < b.nsPerOp {
					best[compat][c.name] = c
				}
			}
			ag.stop()
		}
	}
	var out []variantCost
	for _, l := range e.loops() {
		d, c := best[false][l.name], best[true][l.name]
		out = append(out, variantCost{name: l.name, def: d.nsPerOp, compat: c.nsPerOp, defTop: topProgram(d), compTop: topProgram(c)})
	}
	return out
}

func topProgram(c bpfLoopCost) string {
	if len(c.top) == 0 {
		return "–"
	}
	return fmt.Sprintf("%s %.0f", c.top[0].name, c.top[0].nsPerOp)
}

// variantsMarkdown renders the comparison.
func variantsMarkdown(b *strings.Builder, vs []variantCost) {
	b.WriteString("\n| loop | default objects: BPF time per op | compat objects (Linux 5.10–5.16) | compat ÷ default | costliest program (default / compat, ns/op) |\n|---|---|---|---|---|\n")
	for _, v := range vs {
		ratio := "–"
		if v.def > 0 {
			ratio = fmt.Sprintf("%.2f", v.compat/v.def)
		}
		fmt.Fprintf(b, "| %s | %s ns | %s ns | %s | %s / %s |\n", v.name, commas(v.def), commas(v.compat), ratio, v.defTop, v.compTop)
	}
	fmt.Fprintf(b, "\nBoth builds loaded in turn on this kernel (`--bpf-objects compat`), %d rounds each, the build going first alternating; "+
		"each figure is the lowest over rounds of the agent's programs' kernel time per op, net of the rest of the machine.\n", *rounds)
}

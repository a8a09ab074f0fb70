package main

import (
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
)

// hookFloor measures what the open loop pays for one syscall tracepoint
// with a program that does nothing: the least any syscall-tracepoint
// sensor can cost there, next to which the agent's own figure is read.
// It times the same loop the same way (chunks, alternating sides).
func (e *env) hookFloor() *loopResult {
	var open loop
	for _, l := range e.loops() {
		if l.name == "open+close unwatched file" {
			open = l
		}
	}
	if open.run == nil {
		return nil
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "floor_empty", Type: ebpf.TracePoint, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	})
	if err != nil {
		fmt.Printf("floor: cannot load an empty program: %v\n", err)
		return nil
	}
	defer prog.Close()
	r := &loopResult{name: "empty program on sys_exit_openat only", n: open.n, rounds: *rounds, chunkN: max(1, open.n/chunks)}
	without := func() {
		waitQuiet(0)
		r.without = append(r.without, timeChunks(open, r.chunkN)...)
	}
	with := func() {
		l, err := link.Tracepoint("syscalls", "sys_exit_openat", prog, nil)
		if err != nil {
			fatalf("floor: attach sys_exit_openat: %v", err)
		}
		waitQuiet(0)
		r.with = append(r.with, timeChunks(open, r.chunkN)...)
		l.Close()
	}
	for i := 0; i < *rounds; i++ {
		fmt.Printf("floor: round %d/%d\n", i+1, *rounds)
		if i%2 == 0 {
			without()
			with()
		} else {
			with()
			without()
		}
	}
	return r
}

package sensor

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// Requests 13 and 15 exist only on x86 (arm64 sets registers through
// PTRACE_SETREGSET); x/sys names them only there, so they are spelled out.
const (
	ptraceSetRegs   = 13
	ptraceSetFPRegs = 15
)

func ptraceName(req uint64) string {
	switch req {
	case unix.PTRACE_TRACEME:
		return "PTRACE_TRACEME"
	case unix.PTRACE_POKETEXT:
		return "PTRACE_POKETEXT"
	case unix.PTRACE_POKEDATA:
		return "PTRACE_POKEDATA"
	case unix.PTRACE_POKEUSR:
		return "PTRACE_POKEUSER"
	case ptraceSetRegs:
		return "PTRACE_SETREGS"
	case ptraceSetFPRegs:
		return "PTRACE_SETFPREGS"
	case unix.PTRACE_ATTACH:
		return "PTRACE_ATTACH"
	case unix.PTRACE_SETREGSET:
		return "PTRACE_SETREGSET"
	case unix.PTRACE_SEIZE:
		return "PTRACE_SEIZE"
	}
	return fmt.Sprintf("ptrace(%d)", req)
}

var bpfCmds = map[uint64]string{0: "BPF_MAP_CREATE", 5: "BPF_PROG_LOAD", 8: "BPF_PROG_ATTACH", 17: "BPF_RAW_TRACEPOINT_OPEN", 28: "BPF_LINK_CREATE"}

func bpfCmdName(cmd uint64) string {
	if n, ok := bpfCmds[cmd]; ok {
		return n
	}
	return fmt.Sprintf("bpf_cmd(%d)", cmd)
}

var setidCalls = []struct {
	name  string
	arity int
}{{"setuid", 1}, {"setgid", 1}, {"setreuid", 2}, {"setregid", 2}, {"setresuid", 3}, {"setresgid", 3}}

func setidName(i uint64) string {
	if i < uint64(len(setidCalls)) {
		return setidCalls[i].name
	}
	return fmt.Sprintf("setid(%d)", i)
}

func setidArity(i uint64) int {
	if i < uint64(len(setidCalls)) {
		return setidCalls[i].arity
	}
	return 3
}

var cloneFlags = []struct {
	bit  uint64
	name string
}{
	{unix.CLONE_NEWNS, "CLONE_NEWNS"}, {unix.CLONE_NEWUTS, "CLONE_NEWUTS"}, {unix.CLONE_NEWIPC, "CLONE_NEWIPC"},
	{unix.CLONE_NEWUSER, "CLONE_NEWUSER"}, {unix.CLONE_NEWPID, "CLONE_NEWPID"}, {unix.CLONE_NEWNET, "CLONE_NEWNET"},
	{unix.CLONE_NEWCGROUP, "CLONE_NEWCGROUP"}, {unix.CLONE_NEWTIME, "CLONE_NEWTIME"},
	{unix.CLONE_FILES, "CLONE_FILES"}, {unix.CLONE_FS, "CLONE_FS"}, {unix.CLONE_SYSVSEM, "CLONE_SYSVSEM"},
}

func cloneFlagNames(f uint64) []string {
	var out []string
	for _, c := range cloneFlags {
		if f&c.bit != 0 {
			out = append(out, c.name)
			f &^= c.bit
		}
	}
	if f != 0 {
		out = append(out, fmt.Sprintf("0x%x", f))
	}
	return out
}

func protString(p uint64) string {
	var b strings.Builder
	for _, x := range []struct {
		bit uint64
		c   byte
	}{{unix.PROT_READ, 'r'}, {unix.PROT_WRITE, 'w'}, {unix.PROT_EXEC, 'x'}} {
		if p&x.bit != 0 {
			b.WriteByte(x.c)
		} else {
			b.WriteByte('-')
		}
	}
	return b.String()
}

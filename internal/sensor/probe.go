package sensor

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// Feature is one kernel capability the sensor may use.
type Feature struct {
	Name      string `json:"name"`
	Available bool   `json:"available"`
	Used      bool   `json:"used"` // the sensor relies on it
	Detail    string `json:"detail,omitempty"`
}

// Probe describes what this kernel allows. It loads nothing permanent.
type Probe struct {
	Kernel    string       `json:"kernel"`
	BTF       bool         `json:"btf"`
	Lockdown  string       `json:"lockdown,omitempty"`
	CgroupV2  string       `json:"cgroupV2Root,omitempty"`
	Features  []Feature    `json:"features"`
	Hooks     []HookStatus `json:"hooks,omitempty"`
	LoadError string       `json:"loadError,omitempty"`
	// Objects is which build of the BPF objects this kernel gets.
	Objects Variant `json:"objects"`
}

// RunProbe checks program types, helpers and maps, then (when withHooks)
// loads the sensor once to report which hooks attach and why others do not.
func RunProbe(withHooks bool) Probe {
	var p Probe
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		p.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	_, err := os.Stat("/sys/kernel/btf/vmlinux")
	p.BTF = err == nil
	if b, err := os.ReadFile("/sys/kernel/security/lockdown"); err == nil {
		p.Lockdown = strings.TrimSpace(string(b))
	}
	p.CgroupV2 = CgroupV2Root()
	_ = rlimit.RemoveMemlock()

	progs := []struct {
		name string
		t    ebpf.ProgramType
		used bool
	}{
		{"program type tracepoint", ebpf.TracePoint, true},
		{"program type raw tracepoint", ebpf.RawTracepoint, false},
		{"program type tracing (fentry probe; tp_btf is judged by the hooks below)", ebpf.Tracing, false},
		{"program type cgroup_skb", ebpf.CGroupSKB, true},
		{"program type cgroup sock_addr", ebpf.CGroupSockAddr, true},
		{"program type kprobe", ebpf.Kprobe, false},
		{"program type LSM", ebpf.LSM, false},
	}
	for _, x := range progs {
		err := features.HaveProgramType(x.t)
		p.Features = append(p.Features, feature(x.name, err, x.used))
	}
	helpers := []struct {
		name string
		t    ebpf.ProgramType
		h    asm.BuiltinFunc
		used bool
		// compat: the compat objects do without it.
		compat bool
	}{
		{"helper bpf_ringbuf_output", ebpf.TracePoint, asm.FnRingbufOutput, true, false},
		{"helper bpf_probe_read_user_str", ebpf.TracePoint, asm.FnProbeReadUserStr, true, false},
		{"helper bpf_get_current_cgroup_id", ebpf.TracePoint, asm.FnGetCurrentCgroupId, true, false},
		// The default objects use these four; without any of them the
		// sensor loads its compat objects (Variant).
		{"helper bpf_loop", ebpf.TracePoint, asm.FnLoop, true, true},
		{"helper bpf_find_vma", ebpf.TracePoint, asm.FnFindVma, true, true},
		{"helper bpf_get_current_task_btf", ebpf.TracePoint, asm.FnGetCurrentTaskBtf, true, true},
		{"helper bpf_task_pt_regs", ebpf.TracePoint, asm.FnTaskPtRegs, true, true},
		{"helper bpf_send_signal", ebpf.TracePoint, asm.FnSendSignal, false, false},
		{"helper bpf_probe_write_user", ebpf.TracePoint, asm.FnProbeWriteUser, false, false},
	}
	for _, x := range helpers {
		err := features.HaveProgramHelper(x.t, x.h)
		f := feature(x.name, err, x.used)
		if x.compat && errors.Is(err, ebpf.ErrNotSupported) {
			f.Detail += "; the BPF objects for older kernels do without it"
		}
		p.Features = append(p.Features, f)
	}
	// A kernel built without CONFIG_KPROBES still loads kprobe programs
	// (the type exists) but has nothing to attach them to.
	kp := Feature{Name: "kprobe attach points (CONFIG_KPROBES)", Available: true}
	if _, err := os.Stat("/sys/kernel/tracing/events"); err != nil {
		kp.Available, kp.Detail = false, "tracefs is not mounted at /sys/kernel/tracing: cannot tell"
	} else if _, err := os.Stat("/sys/kernel/tracing/kprobe_events"); err != nil {
		kp.Available, kp.Detail = false, "no kprobe_events in tracefs: kprobes cannot be attached"
	}
	p.Features = append(p.Features, kp)
	p.Features = append(p.Features, feature("map type ringbuf", features.HaveMapType(ebpf.RingBuf), true))
	p.Features = append(p.Features, feature("map type LPM trie", features.HaveMapType(ebpf.LPMTrie), true))

	p.Objects = ChooseVariant(false)
	if withHooks {
		s, err := Load(Options{})
		if err != nil {
			p.LoadError = err.Error()
		} else {
			p.Hooks = s.Status()
			s.Close()
			// The library's tracing probe tries fentry, which this kind of
			// kernel may refuse while tp_btf works: report tp_btf by what
			// actually attached.
			tp := Feature{Name: "BTF tracepoints (tp_btf)", Used: true, Detail: "no tp_btf hook attached"}
			for _, h := range p.Hooks {
				if strings.HasPrefix(h.Hook, "tp_btf/") && h.Attached {
					tp.Available, tp.Detail = true, ""
				}
			}
			p.Features = append(p.Features, tp)
		}
	}
	return p
}

func feature(name string, err error, used bool) Feature {
	f := Feature{Name: name, Available: err == nil, Used: used}
	if err != nil {
		if errors.Is(err, ebpf.ErrNotSupported) {
			f.Detail = "not supported by this kernel"
		} else {
			f.Detail = err.Error()
		}
	}
	return f
}

// Summary renders the probe for a terminal.
func (p Probe) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "kernel %s, BTF %v, lockdown %q, cgroup v2 at %q\n", p.Kernel, p.BTF, p.Lockdown, p.CgroupV2)
	b.WriteString("\nkernel features:\n")
	for _, f := range p.Features {
		mark := "no "
		if f.Available {
			mark = "yes"
		}
		use := ""
		if f.Used {
			use = " (used)"
		}
		fmt.Fprintf(&b, "  %s  %s%s", mark, f.Name, use)
		if f.Detail != "" {
			fmt.Fprintf(&b, ": %s", f.Detail)
		}
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, "\nthe sensor loads its %s\n", p.Objects)
	if p.LoadError != "" {
		fmt.Fprintf(&b, "\nsensor could not load: %s\n", p.LoadError)
	}
	if len(p.Hooks) > 0 {
		ok := 0
		for _, h := range p.Hooks {
			if h.Attached {
				ok++
			}
		}
		fmt.Fprintf(&b, "\nsensor hooks: %d of %d attached\n", ok, len(p.Hooks))
		for _, h := range p.Hooks {
			if !h.Attached {
				kind := "FAILED  "
				if h.Optional {
					kind = "absent  "
				}
				fmt.Fprintf(&b, "  %s %-28s %s: %s\n", kind, h.Program, h.Hook, h.Error)
			}
		}
	}
	return b.String()
}

package sensor

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
)

// Variant says which build of the BPF objects the sensor loads. The
// default build uses helpers that came with Linux 5.11–5.17; on a kernel
// that lacks any of them — Amazon Linux 2's and Debian 11's 5.10, Ubuntu
// 22.04's 5.15 — every program would fail for want of one, so the compat
// build, which does the same work without them (bpf/include/mamori.h), is
// loaded instead. The choice is made by probing the helpers, not by
// reading the kernel's version: distributions backport.
type Variant struct {
	Compat bool   `json:"compat"`
	Why    string `json:"why,omitempty"`
}

// String names the variant for people.
func (v Variant) String() string {
	if !v.Compat {
		if v.Why != "" {
			return "default BPF objects (" + v.Why + ")"
		}
		return "default BPF objects"
	}
	return "BPF objects for older kernels (" + v.Why + ")"
}

// compatHelpers are the helpers only the default build uses.
var compatHelpers = []asm.BuiltinFunc{asm.FnGetCurrentTaskBtf, asm.FnTaskPtRegs, asm.FnLoop, asm.FnFindVma}

// ChooseVariant probes the helpers the default build needs; force picks
// the compat build regardless.
func ChooseVariant(force bool) Variant {
	if force {
		return Variant{Compat: true, Why: "chosen by option"}
	}
	var missing, unsure []string
	for _, fn := range compatHelpers {
		err := features.HaveProgramHelper(ebpf.TracePoint, fn)
		switch {
		case errors.Is(err, ebpf.ErrNotSupported):
			missing = append(missing, fmt.Sprintf("%s (Linux %s+)", helperName(fn), helperSince[fn]))
		case err != nil:
			// Not a verdict (no privilege, an odd verifier answer): the
			// default objects are tried, and this says why they may fail.
			unsure = append(unsure, fmt.Sprintf("%s: %v", helperName(fn), err))
		}
	}
	if len(missing) == 0 {
		if len(unsure) > 0 {
			return Variant{Why: "could not probe " + strings.Join(unsure, "; ")}
		}
		return Variant{}
	}
	return Variant{Compat: true, Why: "kernel lacks " + strings.Join(missing, ", ")}
}

// Variant reports which build of the objects is loaded.
func (s *Sensor) Variant() Variant { return s.variant }

// helperName is a helper's C name: bpf_get_current_task_btf.
func helperName(fn asm.BuiltinFunc) string {
	return "bpf_" + snake(strings.TrimPrefix(fn.String(), "Fn"))
}

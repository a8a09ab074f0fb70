package sensor

import (
	"testing"

	"github.com/mamori-dev/mamori/internal/testenv"
)

func TestLoadAttachesEveryHook(t *testing.T) {
	testenv.RequireBPF(t)
	s, err := Load(Options{})
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	defer s.Close()
	for _, st := range s.Status() {
		if !st.Attached && !st.Optional {
			t.Errorf("%s (%s) not attached: %s", st.Program, st.Hook, st.Error)
		}
	}
}

// On an older kernel the verifier's "invalid func unknown#158" becomes the
// reason an operator can act on.
func TestOldKernelReasons(t *testing.T) {
	for msg, want := range map[string]string{
		"load program: invalid argument: invalid func unknown#158 (341 line(s) omitted)": "kernel too old: it lacks the BPF helper bpf_get_current_task_btf (Linux 5.11+)",
		"invalid func unknown#175": "kernel too old: it lacks the BPF helper bpf_task_pt_regs (Linux 5.15+)",
		"invalid func unknown#181": "kernel too old: it lacks the BPF helper bpf_loop (Linux 5.17+)",
		"load program: invalid argument: number of funcs in func_info doesn't match number of subprogs": "kernel too old: it cannot load BPF callbacks (bpf_loop, Linux 5.17+)",
		"permission denied": "",
	} {
		if got := kernelTooOld(msg); got != want {
			t.Errorf("kernelTooOld(%q) = %q, want %q", msg, got, want)
		}
	}
}

package sensor

import (
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"strings"
	"testing"

	"github.com/cilium/ebpf/link"

	"github.com/mamori-dev/mamori/internal/testenv"
)

// A root process detaching one of the sensor's cgroup links (as an attacker
// blinding it would, with bpftool) is noticed and undone, and the hook's
// status keeps the tampering.
func TestDetachedHookIsNoticedAndReattached(t *testing.T) {
	testenv.RequireBPF(t)
	if _, err := exec.LookPath("bpftool"); err != nil {
		if testenv.InCI() {
			t.Fatal("bpftool required under CI=true (scripts/setup.sh installs it)")
		}
		t.Skip("skipping: needs bpftool")
	}
	s, err := Load(Options{Only: []string{"dns"}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := s.VerifyHooks(); len(got) != 0 {
		t.Fatalf("untouched hooks reported tampered: %+v", got)
	}
	var victim *heldHook
	for _, h := range s.held {
		if s.status[h.status].Hook == "cgroup_skb/ingress" {
			victim = h
		}
	}
	if victim == nil {
		t.Fatal("no cgroup_skb/ingress hook attached")
	}
	info, err := victim.link.Info()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("bpftool", "link", "detach", "id", fmt.Sprint(info.ID)).CombinedOutput(); err != nil {
		t.Fatalf("bpftool link detach: %v: %s", err, out)
	}
	got := s.VerifyHooks()
	if len(got) != 1 || got[0].Hook != "cgroup_skb/ingress" || !got[0].Reattached {
		t.Fatalf("tampering found: %+v", got)
	}
	var st HookStatus
	for _, h := range s.Status() {
		if h.Hook == "cgroup_skb/ingress" {
			st = h
		}
	}
	if !st.Attached || st.DetachedAt.IsZero() || st.Detaches != 1 {
		t.Fatalf("status after re-attach: %+v", st)
	}
	// The new link is on the cgroup root again, and the old one is gone.
	info, err = victim.link.Info()
	if err != nil || info.Type != link.CgroupType || info.Cgroup().CgroupId == 0 {
		t.Fatalf("re-attached link: %+v %v", info, err)
	}
	out, _ := exec.Command("bpftool", "link", "list").Output()
	if n := strings.Count(string(out), "attach_type cgroup_inet_ingress"); n < 1 {
		t.Fatalf("bpftool lists %d ingress links after re-attach", n)
	}
	if again := s.VerifyHooks(); len(again) != 0 {
		t.Fatalf("re-attached hook reported again: %+v", again)
	}
}

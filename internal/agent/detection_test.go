package agent

import (
	"testing"
	"time"

	"github.com/mamori-dev/mamori/internal/detect"
	"github.com/mamori-dev/mamori/internal/event"
	"github.com/mamori-dev/mamori/internal/finding"
	"github.com/mamori-dev/mamori/internal/intel"
)

// An exec_hashed event can reach detection before its exec (the exec may
// wait for its container's identity): a finding raised on that exec takes
// the hash — but only a finding about the very file hashed.
func TestFindingTakesAHashThatCameFirst(t *testing.T) {
	store, err := intel.NewStore("")
	if err != nil {
		t.Fatal(err)
	}
	eng := detect.NewEngine(finding.Agent{NodeID: "n1", Version: "test"}, nil, detect.Builtin(store)...)
	var got []*finding.Finding
	d := NewDetection(eng, finding.NewAggregator(100, time.Hour), nil, func(f *finding.Finding, isNew bool) {
		if isNew {
			got = append(got, f)
		}
	})
	t0 := time.Unix(1700000000, 0)
	image := func(path string, ino uint64) *event.Exec {
		return &event.Exec{Path: path, Args: []string{path, "-sS", "10.0.0.1"}, Dev: 1, Inode: ino, MTime: t0, CTime: t0}
	}
	proc := event.Process{PID: 9, UUID: "u9", Comm: "nmap", Exe: "/tmp/nmap", Args: []string{"/tmp/nmap", "-sS", "10.0.0.1"}}
	hashedProc := proc
	hashedProc.ExeSHA256 = "aa11"
	d.Handle(&event.Event{Kind: event.KindExecHashed, Time: t0, Process: hashedProc, Exec: image("/tmp/nmap", 5)})
	d.Handle(&event.Event{Kind: event.KindExec, Time: t0, Process: proc, Exec: image("/tmp/nmap", 5)})
	// The same process later runs another file at another path, unhashed.
	other := proc
	other.Comm, other.Exe, other.Args = "masscan", "/tmp/masscan", []string{"/tmp/masscan", "-p1-65535", "10.0.0.0/8"}
	d.Handle(&event.Event{Kind: event.KindExec, Time: t0, Process: other, Exec: image("/tmp/masscan", 6)})
	if len(got) != 2 {
		t.Fatalf("%d new findings, want 2 (one per tool)", len(got))
	}
	if h := got[0].Service.RuntimeDetails.Process.ExecutableSha256; h != "aa11" {
		t.Errorf("the hashed image's finding has hash %q, want aa11", h)
	}
	if h := got[1].Service.RuntimeDetails.Process.ExecutableSha256; h != "" {
		t.Errorf("another image's finding took hash %q", h)
	}
}

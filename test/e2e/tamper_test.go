package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mamori-dev/mamori/internal/testenv"
)

// ingressLinkOf finds the BPF link of pid's cgroup_skb ingress hook: the
// process's link fds (fdinfo link_id) checked against bpftool's listing.
func ingressLinkOf(t *testing.T, pid int) int {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fdinfo", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		if target, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); target != "anon_inode:bpf_link" {
			continue
		}
		info, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%s", pid, fd.Name()))
		if err != nil {
			continue
		}
		var id int
		for _, line := range strings.Split(string(info), "\n") {
			if v, ok := strings.CutPrefix(line, "link_id:"); ok {
				fmt.Sscan(strings.TrimSpace(v), &id)
			}
		}
		out, err := exec.Command("bpftool", "link", "show", "id", fmt.Sprint(id), "-j").Output()
		if err != nil {
			continue
		}
		var l struct {
			Type       string `json:"type"`
			AttachType string `json:"attach_type"`
			CgroupID   uint64 `json:"cgroup_id"`
		}
		if json.Unmarshal(out, &l) == nil && l.Type == "cgroup" && l.AttachType == "cgroup_inet_ingress" && l.CgroupID != 0 {
			return id
		}
	}
	t.Fatalf("no attached cgroup_inet_ingress link among pid %d's fds", pid)
	return 0
}

// nodeIssue returns the local node's coverage status and issue.
func nodeIssue(t *testing.T, bin, dataDir string) (string, string) {
	t.Helper()
	out, err := exec.Command(bin, "coverage", "--data-dir", dataDir, "--json").Output()
	if err != nil {
		return "", ""
	}
	var cov struct {
		Nodes []struct {
			Status string `json:"status"`
			Issue  string `json:"issue"`
		} `json:"nodes"`
	}
	if json.Unmarshal(out, &cov) != nil || len(cov.Nodes) == 0 {
		return "", ""
	}
	return cov.Nodes[0].Status, cov.Nodes[0].Issue
}

// TestDetachedHookShowsInCoverage blinds the running agent's DNS ingress
// hook the way an attacker with root would (`bpftool link detach`): the
// agent re-attaches it (a new ingress link of its own), the node is
// Unhealthy naming the hook, and Healthy again after a minute.
func TestDetachedHookShowsInCoverage(t *testing.T) {
	m := start(t)
	if _, err := exec.LookPath("bpftool"); err != nil {
		if testenv.InCI() {
			t.Fatal("bpftool required under CI=true")
		}
		t.Skip("skipping: needs bpftool")
	}
	bin, dataDir := filepath.Join(m.dir, "mamori"), filepath.Join(m.dir, "data")
	id := ingressLinkOf(t, m.cmd.Process.Pid)
	if out, err := exec.Command("bpftool", "link", "detach", "id", fmt.Sprint(id)).CombinedOutput(); err != nil {
		t.Fatalf("bpftool link detach: %v: %s", err, out)
	}
	detachedAt := time.Now()
	var status, issue string
	for deadline := time.Now().Add(40 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		if status, issue = nodeIssue(t, bin, dataDir); strings.HasPrefix(issue, "HOOK_DETACHED:hook cgroup_skb/ingress was detached") {
			break
		}
	}
	if status != "Unhealthy" || !strings.HasPrefix(issue, "HOOK_DETACHED:hook cgroup_skb/ingress") {
		t.Fatalf("coverage after the detach: %s %q", status, issue)
	}
	// Re-attached: a new ingress link belongs to the agent.
	if again := ingressLinkOf(t, m.cmd.Process.Pid); again == id {
		t.Fatalf("the detached link %d is still the agent's", id)
	}
	// Healthy again once the minute has passed (heartbeats every 10s).
	for deadline := detachedAt.Add(100 * time.Second); time.Now().Before(deadline); time.Sleep(time.Second) {
		if status, issue = nodeIssue(t, bin, dataDir); status == "Healthy" {
			return
		}
	}
	t.Fatalf("coverage a minute after the re-attach: %s %q", status, issue)
}

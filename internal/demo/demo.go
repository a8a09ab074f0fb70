package demo

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os/exec"
	"strings"
)

// Step is one harmless behaviour and the finding it should raise.
type Step struct {
	What    string
	Expect  string
	Command string
}

// Steps are the demo's behaviours: each is the real thing, made harmless
// (a private container, no network reachable, files inside the container).
var Steps = []Step{
	{"query a known command-and-control test domain", "Backdoor:Runtime/C&CActivity.B!DNS",
		"nslookup guarddutyc2activityb.com 127.0.0.1 >/dev/null 2>&1"},
	{"drop a binary into the container and run it", "Execution:Runtime/NewBinaryExecuted",
		"cp /bin/busybox /tmp/payload-echo && /tmp/payload-echo dropped >/dev/null 2>&1"},
	{"run a scanner", "Execution:Runtime/SuspiciousTool", "cp /bin/busybox /tmp/nmap && /tmp/nmap -h >/dev/null 2>&1"},
	{"read the password hashes", "CredentialAccess:Runtime/SensitiveFileRead", "cat /etc/shadow >/dev/null"},
	{"give everyone sudo", "PrivilegeEscalation:Runtime/SensitiveFileModified", "echo 'nobody ALL=(ALL) NOPASSWD:ALL' >> /etc/sudoers"},
	{"try to mount the host's disk", "PrivilegeEscalation:Runtime/ContainerMountsHostDirectory",
		"mount -t ext4 /dev/vda1 /mnt >/dev/null 2>&1"},
	{"try the cgroup release_agent escape", "PrivilegeEscalation:Runtime/CGroupsReleaseAgentModified",
		"echo /tmp/x > /sys/fs/cgroup/release_agent 2>/dev/null"},
	{"download and run a script", "Execution:Runtime/SuspiciousCommand", "wget -q -T 1 -O- http://127.0.0.1:1/x.sh 2>/dev/null | sh"},
	{"ask the cloud metadata service for credentials", "Discovery:Runtime/SuspiciousCommand",
		"wget -q -T 1 -O- http://169.254.169.254/latest/meta-data/iam/ >/dev/null 2>&1"},
	{"wipe the shell history", "DefenseEvasion:Runtime/SuspiciousCommand", "history -c 2>/dev/null; unset HISTFILE"},
}

// Run starts a throwaway container, performs every step and removes the
// container. It returns the container id.
func Run(w io.Writer) (string, error) {
	if _, err := exec.LookPath("podman"); err != nil {
		return "", fmt.Errorf("the demo needs podman (apt-get install podman runc)")
	}
	if err := EnsureImage(); err != nil {
		return "", fmt.Errorf("demo image: %w", err)
	}
	out, err := exec.Command("podman", "--runtime", "runc", "run", "-d", "--rm", "--name", "mamori-demo-"+randSuffix(),
		Image, "sleep", "120").Output()
	if err != nil {
		return "", fmt.Errorf("start demo container: %w", err)
	}
	id := strings.TrimSpace(string(out))
	defer exec.Command("podman", "--runtime", "runc", "rm", "-f", "-t", "0", id).Run()
	fmt.Fprintf(w, "demo container %s\n", id[:12])
	for _, s := range Steps {
		fmt.Fprintf(w, "  %-50s → %s\n", s.What, s.Expect)
		_ = exec.Command("podman", "--runtime", "runc", "exec", id, "sh", "-c", s.Command+"; true").Run()
	}
	return id, nil
}

func randSuffix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

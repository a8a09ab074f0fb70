// Package testenv gates tests on what they need (root, BPF, podman) and
// provides real containers for them. Outside CI a missing requirement skips
// the test with a message naming it; under CI=true it fails the test,
// because CI must run every test for real.
package testenv

import (
	"bytes"
	"github.com/mamori-dev/mamori/internal/demo"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
)

// InCI reports whether the tests run under CI=true.
func InCI() bool { return os.Getenv("CI") == "true" }

// need skips or fails the test when a requirement is missing.
func need(t testing.TB, ok bool, what string) {
	t.Helper()
	if ok {
		return
	}
	if InCI() {
		t.Fatalf("requirement missing under CI=true: %s", what)
	}
	t.Skipf("skipping: needs %s (run as root with the setup from scripts/setup.sh)", what)
}

// RequireRoot needs uid 0.
func RequireRoot(t testing.TB) {
	t.Helper()
	need(t, os.Geteuid() == 0, "root")
}

// RequireBPF needs root and a kernel with BTF.
func RequireBPF(t testing.TB) {
	t.Helper()
	RequireRoot(t)
	_, err := os.Stat("/sys/kernel/btf/vmlinux")
	need(t, err == nil, "kernel BTF at /sys/kernel/btf/vmlinux")
}

// RequirePodman needs root, podman and runc.
func RequirePodman(t testing.TB) {
	t.Helper()
	RequireRoot(t)
	_, err1 := exec.LookPath("podman")
	_, err2 := exec.LookPath("runc")
	need(t, err1 == nil && err2 == nil, "podman and runc (apt-get install podman runc)")
}

// TestImage is the local image every container test uses: a busybox
// root filesystem imported from Debian's busybox-static, no registry needed.
const TestImage = demo.Image

var imageOnce sync.Once
var imageErr error

// EnsureImage imports TestImage once per test binary.
func EnsureImage(t testing.TB) {
	t.Helper()
	RequirePodman(t)
	imageOnce.Do(func() { imageErr = buildImage() })
	if imageErr != nil {
		t.Fatalf("build test image: %v", imageErr)
	}
}

func buildImage() error { return demo.EnsureImage() }

// Podman runs podman with the runtime this machine needs and returns
// trimmed stdout.
func Podman(t testing.TB, args ...string) string {
	t.Helper()
	full := append([]string{"--runtime", "runc"}, args...)
	cmd := exec.Command("podman", full...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("podman %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// StartContainer starts a detached container from TestImage running cmd
// and returns its full 64-hex id; the container is removed at cleanup.
// extra goes before the image (e.g. "--network", "host").
func StartContainer(t testing.TB, extra []string, cmd ...string) string {
	t.Helper()
	EnsureImage(t)
	args := append([]string{"run", "-d"}, extra...)
	args = append(args, TestImage)
	args = append(args, cmd...)
	id := Podman(t, args...)
	t.Cleanup(func() {
		_ = exec.Command("podman", "--runtime", "runc", "rm", "-f", "-t", "0", id).Run()
	})
	return id
}

// Exec runs cmd inside a running container and returns its output.
func Exec(t testing.TB, id string, cmd ...string) string {
	t.Helper()
	return Podman(t, append([]string{"exec", id}, cmd...)...)
}

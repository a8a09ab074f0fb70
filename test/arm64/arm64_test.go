// Package arm64 runs the arm64 build of the sensor on a real arm64 Linux
// kernel — Debian's 6.1 cloud kernel, emulated by qemu — since arm64 nodes
// (Graviton and the like) are half of many fleets and this machine is x86:
// the syscall hooks read arm64's saved registers, and 6.1 is older than
// this machine's kernel, so CO-RE's choices between kernel layouts are
// exercised too. scripts/setup.sh installs qemu and fetches the kernel.
package arm64

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mamori-dev/mamori/internal/event"
	"github.com/mamori-dev/mamori/internal/testenv"
)

// kernelPath is where scripts/setup.sh puts the arm64 kernel.
const kernelPath = "/var/cache/mamori-test/arm64/vmlinuz"

func TestSensorOnArm64(t *testing.T) {
	if testing.Short() {
		t.Skip("boots an emulated arm64 machine (minutes)")
	}
	qemu, err := exec.LookPath("qemu-system-aarch64")
	kernel := os.Getenv("MAMORI_ARM64_KERNEL")
	if kernel == "" {
		kernel = kernelPath
	}
	st, kerr := os.Stat(kernel)
	if kerr == nil && st.Size() == 0 {
		kerr = fmt.Errorf("%s is empty", kernel)
	}
	if err != nil || kerr != nil {
		if testenv.InCI() {
			t.Fatalf("requirement missing under CI=true: qemu-system-aarch64 and an arm64 kernel at %s (scripts/setup.sh): %v %v", kernel, err, kerr)
		}
		t.Skipf("skipping: needs qemu-system-aarch64 and an arm64 kernel at %s (scripts/setup.sh installs both)", kernel)
	}
	dir := t.TempDir()
	build := func(out, pkg string) []byte {
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH=arm64", "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s for arm64: %v\n%s", pkg, err, b)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	initrd := filepath.Join(dir, "initrd.gz")
	if err := writeInitramfs(initrd, map[string][]byte{
		"init":   build(filepath.Join(dir, "init"), "./guest"),
		"mamori": build(filepath.Join(dir, "mamori"), "../../cmd/mamori"),
	}); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 9*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu, "-M", "virt", "-cpu", "max", "-smp", "2", "-m", "1536",
		"-nographic", "-no-reboot", "-nic", "none", // loopback only: no NIC, no option ROM to find
		"-kernel", kernel, "-initrd", initrd,
		"-append", "console=ttyAMA0 rdinit=/init panic=-1 quiet")
	var console bytes.Buffer
	cmd.Stdout, cmd.Stderr = &console, &console
	start := time.Now()
	err = cmd.Run()
	t.Logf("arm64 guest ran %s", time.Since(start).Round(time.Second))
	out := console.String()
	if err != nil || !strings.Contains(out, "GUEST-DONE") || strings.Contains(out, "GUEST-ERROR") {
		t.Fatalf("guest: %v\n%s", err, tail(out, 60))
	}

	var evs []event.Event
	var loadWarnings []string
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if rest, ok := strings.CutPrefix(line, "EVENT "); ok {
			var ev event.Event
			if err := json.Unmarshal([]byte(rest), &ev); err != nil {
				t.Fatalf("event line %q: %v", rest, err)
			}
			evs = append(evs, ev)
		}
		if strings.Contains(line, "not loaded") || strings.Contains(line, "not attached") {
			loadWarnings = append(loadWarnings, line)
		}
	}
	// Every program loads on 6.1/arm64 (a missing syscall, e.g. open, is
	// an optional hook and not logged as a failure).
	if len(loadWarnings) > 0 {
		t.Errorf("BPF programs failed on arm64/6.1:\n%s", strings.Join(loadWarnings, "\n"))
	}

	find := func(what string, ok func(*event.Event) bool) *event.Event {
		t.Helper()
		for i := range evs {
			if ok(&evs[i]) {
				return &evs[i]
			}
		}
		t.Errorf("no %s event among %d:\n%s", what, len(evs), tail(out, 40))
		return nil
	}
	// exec: argv read from the new image's stack.
	find("exec of the marker", func(e *event.Event) bool {
		return e.Kind == event.KindExec && slices.Equal(e.Process.Args, []string{"/init", "child", "marker-arg"})
	})
	// openat(dirfd, path, flags): path and flags are arguments 1 and 2 (x1, x2).
	if e := find("open of /etc/shadow", func(e *event.Event) bool {
		return e.Kind == event.KindOpen && e.File != nil && e.File.Path == "/etc/shadow"
	}); e != nil && (e.Result < 0 || e.File.Flags&0o3 != 0) {
		t.Errorf("open of /etc/shadow: result %d, flags %#x (want a read-only open that succeeded)", e.Result, e.File.Flags)
	}
	// mount(source, target, fstype, ...): source is argument 0, which arm64
	// keeps only in orig_x0 (x0 takes the result).
	if e := find("failed mount", func(e *event.Event) bool {
		return e.Kind == event.KindMount && e.Mount != nil && e.Mount.Target == "/nonexistent-target"
	}); e != nil && (e.Mount.Source != "arm64-src" || e.Mount.FSType != "tmpfs" || e.Result != -2) {
		t.Errorf("mount: source %q, type %q, result %d; want arm64-src, tmpfs, -2 (ENOENT)", e.Mount.Source, e.Mount.FSType, e.Result)
	}
	// connect(fd, addr, len): the socket is argument 0 (orig_x0).
	if e := find("connect to 127.0.0.1:4444", func(e *event.Event) bool {
		return e.Kind == event.KindConnect && e.Net != nil && e.Net.RemoteAddr == "127.0.0.1" && e.Net.RemotePort == 4444
	}); e != nil && (e.Net.FD < 3 || e.Net.FD > 1024) {
		t.Errorf("connect: socket fd %d, want the dialer's descriptor (from orig_x0)", e.Net.FD)
	}
	// capset: the credentials' layout before Linux 6.3 (two 32-bit words).
	if e := find("capset", func(e *event.Event) bool { return e.Kind == event.KindCapset }); e != nil {
		// CAP_BPF (39) sits in the upper 32-bit word: both words are read.
		const netRaw, bpf = 13, 39
		if e.Cred == nil || e.Cred.Effective&(1<<netRaw) != 0 || e.Cred.Effective&(1<<bpf) == 0 || e.Cred.Effective&1 == 0 {
			t.Errorf("capset: effective set %+v, want CAP_NET_RAW dropped and the rest (CAP_CHOWN, CAP_BPF...) kept", e.Cred)
		}
	}
}

// writeInitramfs writes files (at the root, mode 0755) as a gzipped newc
// cpio archive, the format the kernel unpacks into its initial root.
func writeInitramfs(path string, files map[string][]byte) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	zw := gzip.NewWriter(f)
	ino := 1
	entry := func(name string, mode int, data []byte) error {
		hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
			ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
		ino++
		buf := append([]byte(hdr), name...)
		buf = append(buf, 0)
		buf = append(buf, make([]byte, pad4(len(buf)))...)
		buf = append(buf, data...)
		buf = append(buf, make([]byte, pad4(len(data)))...)
		_, err := zw.Write(buf)
		return err
	}
	for _, name := range slices.Sorted(maps.Keys(files)) {
		if err := entry(name, 0o100755, files[name]); err != nil {
			return err
		}
	}
	if err := entry("TRAILER!!!", 0, nil); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return f.Close()
}

func pad4(n int) int { return (4 - n%4) % 4 }

func tail(s string, lines int) string {
	l := strings.Split(s, "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

// Package kernels runs the sensor on real kernels other than this
// machine's, booted under qemu with the sensor as their init's child:
//   - arm64 (Debian 12's 6.1): arm64 nodes (Graviton and the like) are half
//     of many fleets and this machine is x86; the syscall hooks read arm64's
//     saved registers, and CO-RE's choices between layouts are exercised;
//   - the older kernels fleets still run — Debian 11's 5.10 (as Amazon
//     Linux 2's) on x86_64 and arm64, Ubuntu 22.04's 5.15 — which lack
//     helpers the default objects use, so the sensor loads its compat
//     objects there (internal/sensor, Variant).
//
// Each guest checks that every hook attaches and that an exec, an open, a
// failed mount, a connect, a capset and an mprotect come back with their
// arguments. scripts/setup.sh installs qemu and fetches the kernels.
package kernels

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
	"sync"
	"testing"
	"time"

	"github.com/mamori-dev/mamori/internal/event"
	"github.com/mamori-dev/mamori/internal/testenv"
)

// guestKernel is one kernel to boot.
type guestKernel struct {
	name   string
	arch   string // GOARCH
	path   string // where scripts/setup.sh puts it
	env    string // overrides path when set
	compat bool   // the compat objects are expected
}

var guestKernels = []guestKernel{
	{"arm64-debian12-6.1", "arm64", "/var/cache/mamori-test/arm64/vmlinuz", "MAMORI_ARM64_KERNEL", false},
	{"arm64-debian11-5.10", "arm64", "/var/cache/mamori-test/kernels/debian11-5.10-arm64", "", true},
	{"amd64-debian11-5.10", "amd64", "/var/cache/mamori-test/kernels/debian11-5.10-amd64", "", true},
	{"amd64-ubuntu22.04-5.15", "amd64", "/var/cache/mamori-test/kernels/ubuntu22.04-5.15-amd64", "", true},
}

// qemu runs a guest of each architecture: the program, the machine and
// the kernel's console.
var qemu = map[string]struct{ bin, machine, console string }{
	"arm64": {"qemu-system-aarch64", "virt", "ttyAMA0"},
	"amd64": {"qemu-system-x86_64", "q35", "ttyS0"},
}

func TestSensorOnOtherKernels(t *testing.T) {
	if testing.Short() {
		t.Skip("boots emulated machines (minutes)")
	}
	initrds := map[string]func() string{}
	for _, arch := range []string{"arm64", "amd64"} {
		initrds[arch] = sync.OnceValue(func() string { return buildInitramfs(t, arch) })
	}
	for _, k := range guestKernels {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			q := qemu[k.arch]
			bin, err := exec.LookPath(q.bin)
			kernel := k.path
			if v := os.Getenv(k.env); k.env != "" && v != "" {
				kernel = v
			}
			st, kerr := os.Stat(kernel)
			if kerr == nil && st.Size() == 0 {
				kerr = fmt.Errorf("%s is empty", kernel)
			}
			if err != nil || kerr != nil {
				if testenv.InCI() {
					t.Fatalf("requirement missing under CI=true: %s and a kernel at %s (scripts/setup.sh): %v %v", q.bin, kernel, err, kerr)
				}
				t.Skipf("skipping: needs %s and a kernel at %s (scripts/setup.sh installs both)", q.bin, kernel)
			}
			bootAndCheck(t, k, bin, q.machine, q.console, kernel, initrds[k.arch]())
		})
	}
}

// buildInitramfs builds the guest's init and mamori for arch.
func buildInitramfs(t *testing.T, arch string) string {
	dir := t.TempDir()
	build := func(out, pkg string) []byte {
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH="+arch, "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s for %s: %v\n%s", pkg, arch, err, b)
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
	return initrd
}

// probeReport is the part of `mamori probe --json` the test reads.
type probeReport struct {
	Kernel  string `json:"kernel"`
	Objects struct {
		Compat bool   `json:"compat"`
		Why    string `json:"why"`
	} `json:"objects"`
	Hooks []struct {
		Program  string `json:"program"`
		Attached bool   `json:"attached"`
		Optional bool   `json:"optional"`
		Error    string `json:"error"`
	} `json:"hooks"`
}

func bootAndCheck(t *testing.T, k guestKernel, bin, machine, console, kernel, initrd string) {
	ctx, cancel := context.WithTimeout(context.Background(), 9*time.Minute)
	defer cancel()
	// Two guest CPUs on one emulation thread: the guests still run SMP,
	// but multi-threaded TCG could livelock a guest's own code patching
	// (a 5.15 guest hung in a jump label it was rewriting while the host
	// was busy, each CPU waiting for the other).
	cmd := exec.CommandContext(ctx, bin, "-M", machine, "-accel", "tcg,thread=single", "-cpu", "max", "-smp", "2", "-m", "1536",
		"-nographic", "-no-reboot", "-nic", "none", // loopback only: no NIC, no option ROM to find
		"-kernel", kernel, "-initrd", initrd,
		"-append", "console="+console+" rdinit=/init panic=-1 quiet")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	t.Logf("%s guest ran %s", k.name, time.Since(start).Round(time.Second))
	text := out.String()
	if err != nil || !strings.Contains(text, "GUEST-DONE") || strings.Contains(text, "GUEST-ERROR") {
		t.Fatalf("guest: %v\n%s", err, tail(text, 60))
	}

	var evs []event.Event
	var probe *probeReport
	sc := bufio.NewScanner(strings.NewReader(text))
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
		// The console may put escape sequences before the first line.
		if _, rest, ok := strings.Cut(line, "PROBE "); ok {
			probe = &probeReport{}
			if err := json.Unmarshal([]byte(rest), probe); err != nil {
				t.Fatalf("probe line %q: %v", rest, err)
			}
		}
	}
	if probe == nil {
		t.Fatalf("no probe report from the guest:\n%s", tail(text, 40))
	}
	t.Logf("%s: kernel %s, %d hooks, compat objects %v (%s)", k.name, probe.Kernel, len(probe.Hooks), probe.Objects.Compat, probe.Objects.Why)
	if probe.Objects.Compat != k.compat {
		t.Errorf("compat objects %v (%s), want %v", probe.Objects.Compat, probe.Objects.Why, k.compat)
	}
	// Every program loads: a syscall the kernel lacks (fchmodat2 before
	// 6.6) is an optional hook, absent rather than failed.
	for _, h := range probe.Hooks {
		if !h.Attached && !h.Optional {
			t.Errorf("%s not attached on %s: %s", h.Program, probe.Kernel, h.Error)
		}
	}
	checkEvents(t, evs, text)
}

func checkEvents(t *testing.T, evs []event.Event, out string) {
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
	// O_CREAT: the first open made the file, the second found it; the
	// kernel's FMODE_CREATED bit is the same on every kernel tested.
	var made []bool
	for i := range evs {
		if e := &evs[i]; e.Kind == event.KindOpen && e.File != nil && e.File.Path == "/etc/mamori-created" {
			made = append(made, e.File.Created)
		}
	}
	if !slices.Equal(made, []bool{true, false}) {
		t.Errorf("opens of /etc/mamori-created: created %v, want [true false]", made)
	}
	// mount(source, target, fstype, ...): source is argument 0, which arm64
	// keeps only in orig_x0 (x0 takes the result).
	if e := find("failed mount", func(e *event.Event) bool {
		return e.Kind == event.KindMount && e.Mount != nil && e.Mount.Target == "/nonexistent-target"
	}); e != nil && (e.Mount.Source != "guest-src" || e.Mount.FSType != "tmpfs" || e.Result != -2) {
		t.Errorf("mount: source %q, type %q, result %d; want guest-src, tmpfs, -2 (ENOENT)", e.Mount.Source, e.Mount.FSType, e.Result)
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
	// mprotect adding execute to anonymous memory: the VMA is found by
	// bpf_find_vma, or by the compat objects' walk of the VMA tree.
	if e := find("mprotect to r-x", func(e *event.Event) bool {
		return e.Kind == event.KindMprotect && e.Memory != nil && e.Memory.Prot == "r-x"
	}); e != nil && !e.Memory.Anonymous {
		t.Errorf("mprotect: %+v, want anonymous memory", e.Memory)
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

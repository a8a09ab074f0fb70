package sensor

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/mamori-dev/mamori/internal/testenv"
)

// quietContainer starts a container that does nothing after its start,
// and returns its main pid and root.
func quietContainer(t *testing.T) (int, rootID) {
	t.Helper()
	testenv.RequirePodman(t)
	id := testenv.StartContainer(t, nil, "sleep", "600")
	out, err := exec.Command("podman", "inspect", "-f", "{{.State.Pid}}", id).Output()
	if err != nil {
		t.Fatalf("podman inspect: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("container pid %q: %v", out, err)
	}
	fd, root, err := openRoot(pid)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	return pid, root
}

// shadowKey is the identity of a container's /etc/shadow.
func shadowKey(t *testing.T, pid int) inoKey {
	t.Helper()
	return inoOf(t, filepath.Join("/proc", strconv.Itoa(pid), "root/etc/shadow"))
}

// rootState reports a root's process and whether it is known and fresh.
func rootState(w *inodeWatch, id rootID) (pid int, fresh bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if r := w.roots[id]; r != nil {
		return r.pid, r.stale == 0
	}
	return 0, false
}

func waitUntil(d time.Duration, ok func() bool) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if ok() {
			return true
		}
	}
	return ok()
}

// TestRootsFoundThroughProc: a container root is found through /proc, not
// only through its events — when the process it was found through is gone
// and the container stays quiet, and for containers that were running
// before the agent started.
func TestRootsFoundThroughProc(t *testing.T) {
	s := startSensor(t)
	w := s.inodes
	if w == nil {
		t.Fatal("the sensor keeps no inode set")
	}

	t.Run("process gone, container quiet", func(t *testing.T) {
		pid, root := quietContainer(t)
		if !waitUntil(10*time.Second, func() bool { _, fresh := rootState(w, root); return fresh }) {
			t.Fatal("the container's root was never scanned")
		}
		// The process the root is rescanned through exits (here: its pid
		// is one that has); the container makes no event from now on.
		gone := exec.Command("true")
		if err := gone.Run(); err != nil {
			t.Fatal(err)
		}
		dead := gone.Process.Pid
		w.mu.Lock()
		w.roots[root].pid = dead
		w.mu.Unlock()
		// Within a few periodic rescans (the shared sensor rescans every
		// other test's roots too), the root is scanned through another of
		// its processes. Without the sweep nothing would: the container
		// makes no event to ask through.
		if !waitUntil(3*inodeRescan+5*time.Second, func() bool { p, fresh := rootState(w, root); return p != dead && fresh }) {
			p, fresh := rootState(w, root)
			t.Fatalf("root still rescanned through pid %d (gone: %d), fresh %v", p, dead, fresh)
		}
		p, _ := rootState(w, root)
		if fd, now, err := openRoot(p); err != nil || now != root {
			t.Errorf("root found again through pid %d, whose root is %v (%v), not the container's", p, now, err)
		} else {
			unix.Close(fd)
		}
		// The kernel still knows the container's secret (a root lost
		// keeps its files for a while anyway: the check above is the one
		// that tells).
		var one uint32
		if err := w.hash.Lookup(shadowKey(t, pid), &one); err != nil {
			t.Errorf("the container's /etc/shadow is not in the kernel's set: %v", err)
		}
	})

	t.Run("running before the agent", func(t *testing.T) {
		pid, root := quietContainer(t)
		// A second set, on maps of its own, started now: the container
		// makes no event for it to ask through.
		fresh, hash := startFreshWatch(t, w)
		var one uint32
		key := shadowKey(t, pid)
		if !waitUntil(20*time.Second, func() bool { return hash.Lookup(key, &one) == nil }) {
			p, ok := rootState(fresh, root)
			t.Errorf("a container running before the set started: its /etc/shadow not in the set within 20s (root known %v through pid %d)", ok, p)
		}
	})
}

// sensorWithInodes is the shared sensor, for tests of its inode set.
func sensorWithInodes(t *testing.T) *Sensor {
	t.Helper()
	s := startSensor(t)
	testenv.RequireRoot(t)
	if s.inodes == nil {
		t.Fatal("the sensor keeps no inode set")
	}
	return s
}

// rootWithShadow makes a directory to chroot into, holding etc/shadow.
func rootWithShadow(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "etc/shadow"), []byte("root:x:\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// startFreshWatch starts a second inode set, on maps of its own shaped as
// w's, that rescans only once an hour: what it holds at first, only its
// start (and its first sweep) put there. It stops with the test.
func startFreshWatch(t *testing.T, w *inodeWatch) (*inodeWatch, *ebpf.Map) {
	t.Helper()
	hashInfo, err := w.hash.Info()
	if err != nil {
		t.Fatal(err)
	}
	bitsInfo, err := w.bits.Info()
	if err != nil {
		t.Fatal(err)
	}
	hash, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: hashInfo.KeySize, ValueSize: hashInfo.ValueSize, MaxEntries: hashInfo.MaxEntries})
	if err != nil {
		t.Fatal(err)
	}
	bits, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: bitsInfo.KeySize, ValueSize: bitsInfo.ValueSize, MaxEntries: 1})
	if err != nil {
		hash.Close()
		t.Fatal(err)
	}
	fresh := newInodeWatch(slog.Default(), map[string]*ebpf.Map{"watch_inodes": hash, "watch_ino_bits": bits})
	fresh.setRules(DefaultWatch)
	fresh.every = time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	done := make(chan struct{})
	go func() { fresh.run(ctx, started); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
		hash.Close()
		bits.Close()
	})
	<-started
	return fresh, hash
}

// TestSweepBoundsRootsPerCgroup: processes of one cgroup that chroot into
// roots of their own (anyone in a user namespace can) get at most
// maxRootsPerCgroup roots scanned; the others are counted once each as
// lost scans, not again at every sweep.
func TestSweepBoundsRootsPerCgroup(t *testing.T) {
	s := startSensor(t)
	w := s.inodes
	if w == nil {
		t.Fatal("the sensor keeps no inode set")
	}
	cg := filepath.Join(CgroupV2Root(), "mamori-roots-"+strconv.Itoa(rand.Int()))
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Fatalf("make a cgroup: %v", err)
	}
	t.Cleanup(func() { _ = os.Remove(cg) })
	lostBefore := s.Counters().RootScansLost
	const n = maxRootsPerCgroup + 2
	var roots []rootID
	for range n {
		h := exec.Command(actorPath, "chroot-sleep", rootWithShadow(t), "60s", cg)
		if err := h.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = h.Process.Kill(); _ = h.Wait() })
		var id rootID
		if !waitUntil(5*time.Second, func() bool {
			fd, r, err := openRoot(h.Process.Pid)
			if err == nil {
				unix.Close(fd)
				id = r
			}
			return err == nil && r != w.own
		}) {
			t.Fatalf("helper %d did not chroot", h.Process.Pid)
		}
		roots = append(roots, id)
	}
	taken := func() int {
		w.mu.Lock()
		defer w.mu.Unlock()
		k := 0
		for _, id := range roots {
			if w.roots[id] != nil {
				k++
			}
		}
		return k
	}
	// Two periodic rescans: every sweep has seen every helper.
	waitUntil(3*inodeRescan, func() bool { return taken() >= maxRootsPerCgroup })
	time.Sleep(2*inodeRescan + time.Second)
	if k := taken(); k != maxRootsPerCgroup {
		t.Errorf("%d of %d roots of one cgroup taken, want %d", k, n, maxRootsPerCgroup)
	}
	w.mu.Lock()
	refused := 0
	for _, id := range roots {
		if _, ok := w.refused[id]; ok && w.roots[id] == nil {
			refused++
		}
	}
	w.mu.Unlock()
	if refused != n-maxRootsPerCgroup {
		t.Errorf("%d of the roots not taken are recorded as refused, want %d", refused, n-maxRootsPerCgroup)
	}
	// Each refused root is counted once over the three sweeps that saw it
	// (one more lost scan may come from elsewhere: a slow scan on a
	// loaded machine).
	if lost := s.Counters().RootScansLost - lostBefore; lost < n-maxRootsPerCgroup || lost > n-maxRootsPerCgroup+1 {
		t.Errorf("%d lost scans counted for %d roots refused over several sweeps, want each once", lost, n-maxRootsPerCgroup)
	}
}

// TestHostFilesAreNoContainersSecrets: a root whose maker bind-mounts a
// world-readable file of the host (a library, here a stand-in on the
// host's root filesystem) under a secret's name does not get it watched —
// or every read of it on the host would be flagged — while a private file
// of the host mounted as a container's secret (a volume) and a
// world-readable token on a filesystem of the container's own (a
// Kubernetes secret's tmpfs) are watched.
func TestHostFilesAreNoContainersSecrets(t *testing.T) {
	s := sensorWithInodes(t)
	src := t.TempDir()
	lib, key := filepath.Join(src, "libfake.so"), filepath.Join(src, "credentials")
	if err := os.WriteFile(lib, []byte("\x7fELF"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, []byte("[default]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	for _, d := range []string{"etc", "root/.aws", "run/secrets"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"etc/shadow", "root/.aws/credentials"} {
		if err := os.WriteFile(filepath.Join(root, f), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// In a mount namespace of its own: nothing here touches the host's.
	script := `set -e
mount --bind "$1" "$3/etc/shadow"
mount --bind "$2" "$3/root/.aws/credentials"
mount -t tmpfs -o size=64k mamori-secrets "$3/run/secrets"
echo token > "$3/run/secrets/token"
chmod 0644 "$3/run/secrets/token"
exec "$4" chroot-sleep "$3" 120s`
	h := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", lib, key, root, actorPath)
	out := &strings.Builder{}
	h.Stdout, h.Stderr = out, out
	if err := h.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Process.Kill(); _ = h.Wait() })
	in := filepath.Join("/proc", strconv.Itoa(h.Process.Pid), "root")
	if !waitUntil(5*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(in, "run/secrets/token"))
		return err == nil
	}) {
		t.Fatalf("the helper did not make its root: %s", out)
	}

	fresh, hash := startFreshWatch(t, s.inodes)
	watched := func(p string) bool {
		var one uint32
		return hash.Lookup(inoOf(t, filepath.Join(in, p)), &one) == nil
	}
	if !waitUntil(10*time.Second, func() bool { return watched("root/.aws/credentials") && watched("run/secrets/token") }) {
		t.Fatalf("the root's own secrets are not watched: volume %v, tmpfs token %v", watched("root/.aws/credentials"), watched("run/secrets/token"))
	}
	if inoOf(t, filepath.Join(in, "etc/shadow")) != inoOf(t, lib) {
		t.Fatal("the bind mount did not take")
	}
	if watched("etc/shadow") {
		t.Error("a world-readable file of the host, bind-mounted as a root's /etc/shadow, is watched: every read of it would be flagged")
	}
	if n := fresh.sharedSeen.Load(); n != 1 {
		t.Errorf("%d host files counted as named by a root as its secrets, want 1", n)
	}
}

package sensor

import (
	"context"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/mamori-dev/mamori/internal/event"
)

// gatedDir is a FUSE directory whose lookups wait until gate is closed: a
// filesystem daemon that stops answering, as a hostile container's FUSE
// root can. It holds etc/shadow.
type gatedDir struct {
	fs.Inode
	gate  <-chan struct{}
	depth int
}

var (
	_ fs.NodeLookuper  = (*gatedDir)(nil)
	_ fs.NodeGetattrer = (*gatedDir)(nil)
	_ fs.NodeAccesser  = (*gatedDir)(nil)
)

// Getattr waits too: nothing may ask a root's filesystem for attributes
// on the event reader's path.
func (d *gatedDir) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	select {
	case <-d.gate:
	case <-ctx.Done():
		return syscall.EINTR
	}
	out.Mode = syscall.S_IFDIR | 0o755
	return 0
}

// Access answers at once, so that the helper can chroot in.
func (d *gatedDir) Access(context.Context, uint32) syscall.Errno { return 0 }

func (d *gatedDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	select {
	case <-d.gate:
	case <-ctx.Done():
		return nil, syscall.EINTR
	}
	switch {
	case d.depth == 0 && name == "etc":
		out.Mode = syscall.S_IFDIR | 0o755
		return d.NewInode(ctx, &gatedDir{gate: d.gate, depth: 1}, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: 2}), 0
	case d.depth == 1 && name == "shadow":
		out.Mode = syscall.S_IFREG | 0o600
		out.Size = 8
		return d.NewInode(ctx, &fs.MemRegularFile{Data: []byte("root:x:\n"), Attr: fuse.Attr{Mode: 0o600}},
			fs.StableAttr{Mode: syscall.S_IFREG, Ino: 3}), 0
	}
	return nil, syscall.ENOENT
}

// mountStalledRoot mounts a gatedDir; release makes it answer (at the
// latest when the test ends).
func mountStalledRoot(t *testing.T) (mnt string, release func()) {
	t.Helper()
	gate := make(chan struct{})
	released := false
	release = func() {
		if !released {
			released = true
			close(gate)
		}
	}
	mnt = t.TempDir()
	server, err := fs.Mount(mnt, &gatedDir{gate: gate}, &fs.Options{MountOptions: fuse.MountOptions{
		DirectMount: true, FsName: "mamori-stall", Name: "mamori-stall"}})
	if err != nil {
		t.Fatalf("mount a FUSE filesystem: %v", err)
	}
	t.Cleanup(func() {
		release()
		// A scan may still hold the filesystem for a moment.
		for end := time.Now().Add(10 * time.Second); server.Unmount() != nil && time.Now().Before(end); {
			time.Sleep(100 * time.Millisecond)
		}
	})
	return mnt, release
}

// chrootSleeper starts a helper living in root dir (in cgroup cg, when
// set) until the test ends.
func chrootSleeper(t *testing.T, dir, cg string) *exec.Cmd {
	t.Helper()
	args := []string{"chroot-sleep", dir, "120s"}
	if cg != "" {
		args = append(args, cg)
	}
	h := exec.Command(actorPath, args...)
	if err := h.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = h.Process.Kill()
		_ = h.Wait()
	})
	return h
}

// TestASlowRootDoesNotDelayTheOthers: at start, the roots the sweep takes
// are watched as each is scanned, not once the whole sweep is done, so a
// root whose filesystem stops answering (abandoned after scanDeadline)
// does not hold back the secrets of the roots found before it.
func TestASlowRootDoesNotDelayTheOthers(t *testing.T) {
	s := sensorWithInodes(t)
	plain := rootWithShadow(t)
	// The sweep walks /proc in pid order: the plain root's process comes
	// first, the stalled one's after it.
	first := chrootSleeper(t, plain, "")
	mnt, _ := mountStalledRoot(t)
	var stalled *exec.Cmd
	for range 3 {
		if stalled = chrootSleeper(t, mnt, ""); stalled.Process.Pid > first.Process.Pid {
			break
		}
	}
	if stalled.Process.Pid < first.Process.Pid {
		t.Fatalf("pids wrapped: the stalled root's helper %d comes before %d", stalled.Process.Pid, first.Process.Pid)
	}
	key := inoOf(t, filepath.Join(plain, "etc/shadow"))
	if !waitUntil(5*time.Second, func() bool {
		fd, root, err := openRoot(first.Process.Pid)
		if err == nil {
			unix.Close(fd)
		}
		return err == nil && root != s.inodes.own
	}) {
		t.Fatal("the helper did not chroot")
	}
	time.Sleep(200 * time.Millisecond) // the stalled helper chrooted too

	begin := time.Now()
	_, hash := startFreshWatch(t, s.inodes)
	var one uint32
	if !waitUntil(scanDeadline/2, func() bool { return hash.Lookup(key, &one) == nil }) {
		t.Fatalf("the plain root's /etc/shadow is not watched %v after the set started (a later root's scan hangs for %v)",
			time.Since(begin).Round(time.Millisecond), scanDeadline)
	}
}

// TestFUSERootCannotStallTheSensor: a process whose root is a FUSE
// filesystem that stops answering, in a cgroup of its own (so the event
// reader looks at its root), costs the agent one abandoned scan —
// counted, not retried while it hangs — while events keep flowing; once
// the filesystem answers again, its secrets are watched like any root's.
func TestFUSERootCannotStallTheSensor(t *testing.T) {
	s := sensorWithInodes(t)
	w := s.inodes
	mnt, release := mountStalledRoot(t)

	// The helper runs in a cgroup of its own, so that its first event
	// makes the reader look at its root (identity.go, note).
	cg := ownCgroup(t)
	lostBefore := s.Counters().RootScansLost
	_, start := collected.since(1 << 62)
	helper := chrootSleeper(t, mnt, cg)

	// The reader does not wait for it: an event made after the helper's
	// own (its first in its cgroup, from inside the stalled root)
	// arrives.
	pid := uint32(helper.Process.Pid)
	waitFrom(t, start, "connect (from the helper in the FUSE root)", func(ev *event.Event) bool {
		return ev.Kind == event.KindConnect && ev.Process.PID == pid
	})
	host := &where{name: "host", actor: actorPath, tmp: t.TempDir()}
	name := "/etc/mamori-during-stall-" + strconv.Itoa(helper.Process.Pid)
	t.Cleanup(func() { cleanupIn(host, name) })
	mark, _, out, err := host.run(t, "open-write", name)
	mustOK(t, err, out)
	waitFrom(t, mark, "an event while a root's filesystem does not answer", func(ev *event.Event) bool {
		return ev.Kind == event.KindOpen && ev.File.Path == name
	})

	// The root's scan (asked for by the reader, or by the sweep within a
	// rescan) hangs and is abandoned after scanDeadline.
	if !waitUntil(inodeRescan+scanDeadline+3*time.Second, func() bool { return s.Counters().RootScansLost > lostBefore }) {
		t.Fatalf("no scan of the stalled root was abandoned (lost scans %d before, %d now)", lostBefore, s.Counters().RootScansLost)
	}
	lostAtStall := s.Counters().RootScansLost
	fd, root, err := openRoot(helper.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	w.mu.Lock()
	until, hung := w.stuckRoots[root]
	w.mu.Unlock()
	if !hung || !until.IsZero() {
		t.Fatalf("the abandoned scan is not the FUSE root's (hung %v, until %v)", hung, until)
	}

	// Later sweeps leave the hanging root alone: two more rescans lose
	// nothing more (another test's lost scan would show too: none run
	// beside this one).
	time.Sleep(2*inodeRescan + time.Second)
	if now := s.Counters().RootScansLost; now != lostAtStall {
		t.Errorf("the stalled root was scanned again while its first scan hung: lost scans %d, then %d", lostAtStall, now)
	}

	// The filesystem answers again: the hung scan ends, and once its
	// backoff has passed (cut short here), a sweep watches the root's
	// /etc/shadow.
	release()
	waitUntil(5*time.Second, func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return !w.stuckRoots[root].IsZero()
	})
	w.mu.Lock()
	w.stuckRoots[root] = time.Now()
	w.mu.Unlock()
	key := shadowKey(t, helper.Process.Pid)
	var one uint32
	if !waitUntil(inodeRescan+3*time.Second, func() bool { return w.hash.Lookup(key, &one) == nil }) {
		t.Errorf("the FUSE root's /etc/shadow is not watched once its filesystem answers")
	}
}

// TestHungRootForgottenWhenGone: a root whose scan hung, and whose
// processes are gone by the time the scan ends, is forgotten rather than
// backed off: a new root that takes its device number (allocated lowest
// free) is scanned at once.
func TestHungRootForgottenWhenGone(t *testing.T) {
	s := sensorWithInodes(t)
	w := s.inodes
	mnt, release := mountStalledRoot(t)
	cg := ownCgroup(t)
	helper := chrootSleeper(t, mnt, cg)
	var root rootID
	if !waitUntil(inodeRescan+scanDeadline+3*time.Second, func() bool {
		fd, id, err := openRoot(helper.Process.Pid)
		if err != nil {
			return false
		}
		unix.Close(fd)
		root = id
		w.mu.Lock()
		defer w.mu.Unlock()
		until, hung := w.stuckRoots[id]
		return hung && until.IsZero()
	}) {
		t.Fatal("the FUSE root's scan did not hang")
	}
	_ = helper.Process.Kill()
	_ = helper.Wait()
	release()
	if !waitUntil(5*time.Second, func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		_, hung := w.stuckRoots[root]
		return !hung
	}) {
		w.mu.Lock()
		until := w.stuckRoots[root]
		w.mu.Unlock()
		t.Fatalf("a root no process has is backed off until %v", until)
	}
}

// ownCgroup makes a cgroup of the test's own, removed when it ends.
func ownCgroup(t *testing.T) string {
	t.Helper()
	cg := filepath.Join(CgroupV2Root(), "mamori-fuse-"+strconv.Itoa(rand.Int()))
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Fatalf("make a cgroup: %v", err)
	}
	t.Cleanup(func() { _ = os.Remove(cg) })
	return cg
}

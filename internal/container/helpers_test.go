package container

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mamori-dev/mamori/internal/event"
	"github.com/mamori-dev/mamori/internal/testenv"
)

// requireBinaries needs the named programs: skip outside CI, fail under it.
func requireBinaries(t testing.TB, names ...string) {
	t.Helper()
	testenv.RequireRoot(t)
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			if testenv.InCI() {
				t.Fatalf("requirement missing under CI=true: %s (%v)", n, err)
			}
			t.Skipf("skipping: needs %s", n)
		}
	}
}

func randHex(t testing.TB, n int) string {
	b := make([]byte, n/2)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// cgroupOfPID returns the v2 path of a process from the "0::" line of
// /proc/PID/cgroup.
func cgroupOfPID(t testing.TB, pid string) string {
	t.Helper()
	f, err := os.Open("/proc/" + pid + "/cgroup")
	if err != nil {
		t.Fatalf("read cgroup of %s: %v", pid, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if p, ok := strings.CutPrefix(sc.Text(), "0::"); ok {
			return p
		}
	}
	t.Fatalf("no cgroup v2 line for pid %s", pid)
	return ""
}

// cgroupIDOf stats the cgroup directory: its inode is the cgroup id.
func cgroupIDOf(t testing.TB, root, path string) uint64 {
	t.Helper()
	id, _, err := statCgroup(filepath.Join(root, path))
	if err != nil {
		t.Fatalf("stat cgroup %s: %v", path, err)
	}
	return id
}

// lifeRecorder collects lifecycle events.
type lifeRecorder struct {
	mu  sync.Mutex
	evs []*event.Event
}

func (l *lifeRecorder) add(ev *event.Event) {
	l.mu.Lock()
	l.evs = append(l.evs, ev)
	l.mu.Unlock()
}

// wait returns the first event of kind for container id.
func (l *lifeRecorder) wait(t testing.TB, kind event.Kind, id string, d time.Duration) *event.Event {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		l.mu.Lock()
		for _, ev := range l.evs {
			if ev.Kind == kind && ev.Container != nil && ev.Container.ID == id {
				l.mu.Unlock()
				return ev
			}
		}
		l.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no %s event for container %s within %s", kind, id, d)
	return nil
}

func (l *lifeRecorder) count(kind event.Kind, id string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, ev := range l.evs {
		if ev.Kind == kind && ev.Container != nil && ev.Container.ID == id {
			n++
		}
	}
	return n
}

// startTable builds and starts a table, stopped at cleanup.
func startTable(t testing.TB, o Options) *Table {
	t.Helper()
	if o.ResyncInterval == 0 {
		o.ResyncInterval = 200 * time.Millisecond
	}
	tbl, err := New(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := tbl.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	return tbl
}

// waitResolved polls Lookup until the id is known and, for containers,
// satisfies done (metadata complete enough for the test).
func waitResolved(t testing.TB, tbl *Table, id uint64, d time.Duration, done func(*event.Container) bool) *event.Container {
	t.Helper()
	deadline := time.Now().Add(d)
	var last *event.Container
	for time.Now().Before(deadline) {
		c, known := tbl.Lookup(id)
		if known && (done == nil || done(c)) {
			return c
		}
		last = c
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("cgroup %d not resolved within %s (last %+v)", id, d, last)
	return nil
}

// makeCgroup creates a real cgroup directory (with parents) under the v2
// hierarchy and removes it at cleanup; it returns its id.
func makeCgroup(t testing.TB, root, path string) uint64 {
	t.Helper()
	abs := filepath.Join(root, path)
	if err := os.MkdirAll(abs, 0o755); err != nil {
		t.Fatalf("mkdir cgroup %s: %v", abs, err)
	}
	t.Cleanup(func() { removeCgroupTree(root, path) })
	return cgroupIDOf(t, root, path)
}

// removeCgroupTree removes path and its now-empty parents up to the first
// path segment.
func removeCgroupTree(root, path string) {
	for p := filepath.Clean(path); p != "/" && p != "."; p = filepath.Dir(p) {
		if err := os.Remove(filepath.Join(root, p)); err != nil && !os.IsNotExist(err) {
			return
		}
	}
}

// testRoot is the cgroup v2 hierarchy on this machine.
func testRoot(t testing.TB) string {
	t.Helper()
	root, err := detectCgroup2Root("/proc/self/mountinfo")
	if err != nil {
		t.Skipf("no cgroup v2 hierarchy: %v", err)
	}
	return root
}

package sensor

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The sweep finds roots through /proc rather than through events: at
// start (containers already running, whose next event may be the
// attacker's read) and at each periodic rescan, for the roots whose
// process is gone (a container whose first process exited while the rest
// stay quiet) and for roots no event has named yet. It costs an open and
// a statx per process (nothing is asked of the roots' filesystems: see
// openRoot), and a scan only for a root it takes.
const (
	// sweepChunk is how many /proc entries a sweep reads at a time.
	sweepChunk = 1024
	// maxRoots bounds the roots kept (each costs a scan per rescan), and
	// maxRootsPerCgroup the roots the sweep takes from one cgroup: a
	// process that may chroot (a container's root, or anyone in a user
	// namespace) can make roots at will, but not cgroups. Roots refused
	// are counted once each as lost scans.
	maxRoots          = 512
	maxRootsPerCgroup = 4
	maxRefused        = 4096
)

// sweep looks through /proc for a process in each root of lost (whose own
// process left it) and in roots not known yet, and scans each root found
// through the first such process, each into the kernel's set as soon as
// it is scanned. It returns the lost roots it found.
func (w *inodeWatch) sweep(ctx context.Context, lost map[rootID]bool) map[rootID]bool {
	found := map[rootID]bool{}
	d, err := os.Open("/proc")
	if err != nil {
		w.log.Debug("sweep /proc for roots", "err", err)
		return found
	}
	defer d.Close()
	self := os.Getpid()
	w.mu.Lock()
	rules := w.rules
	perCgroup := map[uint64]int{}
	for _, r := range w.roots {
		for cg := range r.cgroups {
			perCgroup[cg]++
		}
	}
	w.mu.Unlock()
	sw := &sweepRun{lost: lost, found: found, tried: map[rootID]bool{}, perCgroup: perCgroup, rules: rules}
	// Every process is looked at, a chunk of /proc at a time: one that
	// forks tens of thousands of processes cannot push a root out of view.
	for {
		names, err := d.Readdirnames(sweepChunk)
		for _, name := range names {
			if ctx.Err() != nil {
				return found
			}
			if pid, err := strconv.Atoi(name); err == nil && pid != self {
				w.sweepOne(sw, pid)
			}
		}
		if err != nil || len(names) == 0 {
			if err != nil && !errors.Is(err, io.EOF) {
				w.log.Debug("sweep /proc for roots", "err", err)
			}
			return found
		}
	}
}

// sweepRun is one sweep's state.
type sweepRun struct {
	lost, found, tried map[rootID]bool
	perCgroup          map[uint64]int // roots taken per cgroup
	rules              []WatchRule
}

// sweepOne looks at the root of one process.
func (w *inodeWatch) sweepOne(sw *sweepRun, pid int) {
	fd, id, err := openRoot(pid)
	if err != nil {
		return
	}
	w.mu.Lock()
	_, known := w.roots[id]
	_, refused := w.refused[id]
	skip := w.isHost(id) || sw.tried[id] || known && !sw.lost[id] || refused && !sw.lost[id]
	full := len(w.roots) >= maxRoots
	w.mu.Unlock()
	if skip {
		unix.Close(fd)
		return
	}
	sw.tried[id] = true
	cg := w.cgroupOf(pid)
	if !known && (full || sw.perCgroup[cg] >= maxRootsPerCgroup) {
		unix.Close(fd)
		w.refuse(id, refusal{cgroup: cg, full: full})
		return
	}
	inodes, ok := w.scanTimed(fd, id, sw.rules, w.quota(id))
	if !ok {
		return
	}
	w.mu.Lock()
	r := w.roots[id]
	if r == nil {
		r = &watchedRoot{cgroups: map[uint64]bool{}}
		w.roots[id] = r
	}
	r.pid, r.stale, r.inodes = pid, 0, inodes
	// (0, a cgroup not told, is kept too: it is one allowance.)
	if !r.cgroups[cg] && len(r.cgroups) < maxRootCgroups {
		r.cgroups[cg] = true
		sw.perCgroup[cg]++
	}
	w.mu.Unlock()
	if sw.lost[id] {
		sw.found[id] = true
	}
	// Into the kernel at once: a later root's scan may hang for
	// scanDeadline, and the whole sweep take longer still.
	w.sync()
}

// refusal is why the sweep did not take a root: all roots were taken
// (full), or its cgroup's were.
type refusal struct {
	cgroup uint64
	full   bool
}

// refuse counts a root the sweep did not take, once.
func (w *inodeWatch) refuse(id rootID, why refusal) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.refused[id]; ok {
		return
	}
	if len(w.refused) >= maxRefused {
		clear(w.refused)
	}
	w.refused[id] = why
	w.asksLost.Add(1)
}

// cgroupOf is the cgroup v2 id (its directory's inode) of a process, 0
// when it cannot be told (such processes share one cgroup's allowance).
func (w *inodeWatch) cgroupOf(pid int) uint64 {
	if w.cgroupRoot == "" {
		return 0
	}
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return 0
	}
	for line := range bytes.SplitSeq(data, []byte{'\n'}) {
		if rest, ok := bytes.CutPrefix(line, []byte("0::")); ok {
			// The path is relative to the agent's cgroup namespace, and
			// may climb out of it ("/../.."): such a cgroup is not told.
			p := filepath.Join(w.cgroupRoot, string(rest))
			var st unix.Stat_t
			if !strings.HasPrefix(p+"/", filepath.Clean(w.cgroupRoot)+"/") || unix.Stat(p, &st) != nil {
				return 0
			}
			return st.Ino
		}
	}
	return 0
}

// rootInUse reports whether any process has id for its root. It reads all
// of /proc: only when a hung scan ends, which is rare.
func rootInUse(id rootID) bool {
	d, err := os.Open("/proc")
	if err != nil {
		return true // cannot tell: keep the backoff
	}
	defer d.Close()
	for {
		names, err := d.Readdirnames(sweepChunk)
		for _, name := range names {
			pid, perr := strconv.Atoi(name)
			if perr != nil {
				continue
			}
			if fd, rid, oerr := openRoot(pid); oerr == nil {
				unix.Close(fd)
				if rid == id {
					return true
				}
			}
		}
		if err != nil || len(names) == 0 {
			return false
		}
	}
}

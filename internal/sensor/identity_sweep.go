package sensor

import (
	"os"
	"strconv"

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
	// maxSweepPids bounds the /proc entries one sweep looks at.
	maxSweepPids = 1 << 16
	// maxRoots bounds the roots kept (each costs a scan per rescan): a
	// process that can chroot in a user namespace can make roots at will.
	// Roots beyond it are counted as lost scans.
	maxRoots = 512
)

// sweep looks through /proc for a process in each root of lost (whose own
// process left it) and in roots not known yet, and scans each root found
// through the first such process. It returns the lost roots it found.
func (w *inodeWatch) sweep(lost map[rootID]bool) map[rootID]bool {
	found := map[rootID]bool{}
	d, err := os.Open("/proc")
	if err != nil {
		w.log.Debug("sweep /proc for roots", "err", err)
		return found
	}
	names, err := d.Readdirnames(maxSweepPids)
	d.Close()
	if err != nil && len(names) == 0 {
		w.log.Debug("sweep /proc for roots", "err", err)
		return found
	}
	self := os.Getpid()
	w.mu.Lock()
	rules := w.rules
	w.mu.Unlock()
	tried := map[rootID]bool{}
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil || pid == self {
			continue
		}
		fd, id, err := openRoot(pid)
		if err != nil {
			continue
		}
		w.mu.Lock()
		_, known := w.roots[id]
		isOwn, full := id == w.own, len(w.roots) >= maxRoots
		w.mu.Unlock()
		take := !isOwn && !tried[id] && (lost[id] || !known && !full)
		if !take {
			unix.Close(fd)
			if !known && !isOwn && full && !tried[id] {
				tried[id] = true
				w.asksLost.Add(1)
			}
			continue
		}
		tried[id] = true
		inodes, ok := w.scanTimed(fd, id, rules, w.quota(id))
		if !ok {
			continue
		}
		w.mu.Lock()
		r := w.roots[id]
		if r == nil {
			r = &watchedRoot{cgroups: map[uint64]bool{}}
			w.roots[id] = r
		}
		r.pid, r.stale, r.inodes = pid, 0, inodes
		w.mu.Unlock()
		if lost[id] {
			found[id] = true
		}
	}
	return found
}

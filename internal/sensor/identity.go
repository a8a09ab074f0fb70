package sensor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/mamori-dev/mamori/internal/event"
)

// The kernel's second look at reads (bpf/file.bpf.c, watch_inodes): a read
// the path filter let pass is sent anyway when the file it opened is a
// read-watched one (flagged, event.File.ByInode), so no path — a link with
// a relative target, a link made before the agent started or renamed
// since, a hard link, a bind mount, a ".." climb — hides a secret.
// inodeWatch keeps the kernel's set: the identities of the files the read
// rules name, under the agent's root and under each container's root
// (reached through a process of it, /proc/PID/root; identity_scan.go),
// found as its cgroup's events arrive and by sweeps of /proc
// (identity_sweep.go).
//
// Files replaced since the last scan (passwd writes a new /etc/shadow and
// renames it over) are found at the next rescan, every inodeRescan, or
// within a second of a write or rename onto a read-watched path.

const (
	inoBitsWords   = 1024 // bpf/file.bpf.c INO_BITS_WORDS
	inodeRescan    = 5 * time.Second
	maxSeenCgroups = 65536
	// A root's scan that has not ended by scanDeadline (a FUSE daemon
	// that never answers) is left to end on its own; at most
	// maxStuckScans are, and beyond them only the host's roots are
	// scanned. A root whose scan hung is not scanned again until it
	// ended and stuckBackoff passed (a daemon answering just after the
	// deadline would cost a deadline per pass).
	scanDeadline  = 2 * time.Second
	maxStuckScans = 8
	stuckBackoff  = time.Minute
	// maxRootCgroups bounds the cgroups a root remembers (to make them
	// ask again when it goes stale).
	maxRootCgroups = 4096
)

// inoBits is the kernel's prefilter (struct ino_bits).
type inoBits struct {
	Any uint64
	W   [inoBitsWords]uint64
}

// inoBit is the prefilter bit of an inode number, as the BPF computes it.
func inoBit(ino uint64) (word, bit uint32) {
	h := uint32((ino * 0x9E3779B97F4A7C15) >> 48)
	return (h >> 6) % inoBitsWords, h & 63
}

// rootID names a root directory by its identity: containers are told apart
// by their roots, and every host cgroup shares one.
type rootID struct{ dev, ino uint64 }

type watchedRoot struct {
	pid     int
	cgroups map[uint64]bool
	// inodes are the root's secret files in the order its scan found them
	// (the rules' order); the slice is replaced whole, never changed.
	inodes []inoKey
	// stale counts periodic rescans that found no process of the root:
	// its inodes stay watched while its cgroups ask again, and it is
	// forgotten after maxStale.
	stale int
}

const maxStale = 12 // periodic rescans: a minute

// A cgroup's ask state (inodeWatch.seen): whether a process of it was
// found in a root other than the agent's, and how many asks it made.
const (
	cgInside    uint8 = 0x80
	cgAsks      uint8 = 0x7f
	maxExecAsks       = 8
)

// rootAsk is a cgroup's first event's root, opened by the reader while
// the process was still there; fd is the worker's to close.
type rootAsk struct {
	fd     int
	id     rootID
	pid    int
	cgroup uint64
}

type inodeWatch struct {
	log    *slog.Logger
	hash   *ebpf.Map // watch_inodes
	bits   *ebpf.Map // watch_ino_bits
	asks   chan rootAsk
	rescan chan struct{}

	mu    sync.Mutex
	rules []WatchRule      // read-watched ones
	seen  map[uint64]uint8 // cgroup → cgInside | asks so far
	own   rootID           // the agent's root
	host  rootID           // pid 1's root: the host's, when the agent runs in a container
	every time.Duration    // periodic rescan: inodeRescan
	// cgroupRoot is the cgroup v2 mount, where the sweep finds which
	// cgroup a process is in ("" counts every process in one).
	cgroupRoot string
	roots      map[rootID]*watchedRoot
	inKer      map[inoKey]bool
	// stuckRoots are roots whose scan passed its deadline: the zero time
	// while it hangs, then when they may be scanned again.
	stuckRoots map[rootID]time.Time
	// refused are the roots the sweep did not take (maxRoots,
	// maxRootsPerCgroup), counted once each, until a root leaves and
	// makes room for them.
	refused map[rootID]refusal

	// last is the cgroup of the reader's previous event: runs of one
	// cgroup skip the lock (cleared when a cgroup must ask again).
	last     atomic.Uint64
	running  atomic.Bool
	prefixes atomic.Pointer[[]string] // the read rules', for note

	stuck atomic.Int64 // scans past their deadline, still running

	watched, notWatched, asksLost, rootsNow atomic.Uint64
	// hostDevs are the host's system filesystems (hostSystemDevs), set
	// before the first scan; shared the world-readable files of theirs
	// that roots named as secrets (sharedSeen counts them).
	hostDevs   map[uint64]bool
	shared     map[inoKey]bool
	sharedSeen atomic.Uint64
}

func newInodeWatch(log *slog.Logger, maps map[string]*ebpf.Map) *inodeWatch {
	h, b := maps["watch_inodes"], maps["watch_ino_bits"]
	if h == nil || b == nil {
		return nil
	}
	return &inodeWatch{log: log, hash: h, bits: b, asks: make(chan rootAsk, 256), rescan: make(chan struct{}, 1),
		seen: map[uint64]uint8{}, roots: map[rootID]*watchedRoot{}, inKer: map[inoKey]bool{}, stuckRoots: map[rootID]time.Time{}, refused: map[rootID]refusal{}, every: inodeRescan,
		shared: map[inoKey]bool{}}
}

// setRules takes the watch rules; the next scan uses their read ones.
func (w *inodeWatch) setRules(rules []WatchRule) {
	read := readRules(rules)
	prefixes := make([]string, len(read))
	for i, r := range read {
		prefixes[i] = r.Prefix
	}
	w.prefixes.Store(&prefixes)
	w.mu.Lock()
	w.rules = read
	w.mu.Unlock()
	w.kick()
}

func (w *inodeWatch) kick() {
	select {
	case w.rescan <- struct{}{}:
	default:
	}
}

// readRules are the rules that watch reads: those the scan resolves.
func readRules(rules []WatchRule) []WatchRule {
	var read []WatchRule
	for _, r := range rules {
		if r.Bits&WatchRead != 0 {
			read = append(read, r)
		}
	}
	return read
}

// note runs on the reader for every event. The first event of a cgroup
// opens its process's root there and then, while the process is most
// likely alive (a short-lived one may be gone: the cgroup's next event
// tries again), and hands it to the worker. A full queue loses the ask
// (counted) and the cgroup asks again at its next event. A write, rename
// or link onto a read-watched path may have made a new secret file (passwd
// renames a fresh /etc/shadow over the old one): the roots are scanned
// again soon (at most once a second) rather than at the next tick.
func (w *inodeWatch) note(ev *event.Event) {
	if f := ev.File; f != nil && ev.Result >= 0 && (ev.Kind == event.KindRename || ev.Kind == event.KindLink ||
		ev.Kind == event.KindOpen && f.Write) && w.namesSecret(f) {
		w.kick()
	}
	cg := ev.Process.CgroupID
	if cg == 0 || ev.Process.PID == 0 {
		return
	}
	exec := ev.Kind == event.KindExec
	if !exec && w.last.Load() == cg {
		return
	}
	// A cgroup asks at its first event, and at its execs until one runs
	// in a root other than the agent's (at most maxExecAsks): a runtime's
	// helper joins a container's cgroup, and may exec there, before it
	// enters the container's root (runc init), while what it executes
	// next runs inside.
	// last is set under the lock the worker clears seen (and last) with,
	// so a cgroup told to ask again cannot be skipped by a stale last.
	w.mu.Lock()
	st, seen := w.seen[cg]
	skip := seen && (!exec || st&cgInside != 0 || st&cgAsks >= maxExecAsks)
	if skip {
		w.last.Store(cg)
	}
	own := w.own
	w.mu.Unlock()
	if skip {
		return
	}
	pid := int(ev.Process.PID)
	fd, id, err := openRoot(pid)
	if err != nil {
		return
	}
	if id != own {
		st |= cgInside
	}
	st = st&^cgAsks | (st&cgAsks + 1)
	w.mu.Lock()
	if len(w.seen) >= maxSeenCgroups {
		clear(w.seen) // they ask again; known roots cost one open
	}
	w.seen[cg] = st
	w.last.Store(cg)
	w.mu.Unlock()
	if w.recordIfFresh(id, cg) {
		unix.Close(fd) // nothing to scan
		return
	}
	select {
	case w.asks <- rootAsk{fd: fd, id: id, pid: pid, cgroup: cg}:
	default:
		unix.Close(fd)
		w.asksLost.Add(1)
		w.mu.Lock()
		delete(w.seen, cg)
		w.last.Store(0)
		w.mu.Unlock()
	}
}

// recordIfFresh adds a cgroup to a root that is scanned and whose last
// rescan could reach it, and says whether it did (a new or stale root is
// the worker's to scan, through the asking process).
func (w *inodeWatch) recordIfFresh(id rootID, cg uint64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	r, ok := w.roots[id]
	if !ok || r.stale != 0 {
		return false
	}
	if len(r.cgroups) < maxRootCgroups {
		r.cgroups[cg] = true
	}
	return true
}

// namesSecret reports whether a file event lands under a read rule.
func (w *inodeWatch) namesSecret(f *event.File) bool {
	ps := w.prefixes.Load()
	if ps == nil {
		return false
	}
	for _, p := range *ps {
		if strings.HasPrefix(f.Path, p) || f.NewPath != "" && strings.HasPrefix(f.NewPath, p) {
			return true
		}
	}
	return false
}

// run keeps the kernel's set until ctx ends. The agent's own root (the
// host's, and pid 1's when it differs and can be read) is scanned before
// started is closed, so reads on the host are judged by their file from
// the sensor's first event.
func (w *inodeWatch) run(ctx context.Context, started chan<- struct{}) {
	if !w.running.CompareAndSwap(false, true) {
		close(started) // another Run keeps the set
		return
	}
	defer w.running.Store(false)
	// The host's system filesystems, as pid 1 sees them (the agent's own
	// root when it cannot look there), before any root is scanned.
	for _, pid := range []int{1, os.Getpid()} {
		if fd, _, err := openRoot(pid); err == nil {
			devs := hostSystemDevs(fd)
			unix.Close(fd)
			if len(devs) > 0 {
				w.mu.Lock()
				w.hostDevs = devs
				w.mu.Unlock()
				break
			}
		}
	}
	for _, pid := range []int{os.Getpid(), 1} {
		if fd, id, err := openRoot(pid); err == nil {
			w.mu.Lock()
			if pid == os.Getpid() {
				w.own, w.host = id, id
			} else {
				w.host = id
			}
			w.mu.Unlock()
			w.addRoot(rootAsk{fd: fd, id: id, pid: pid})
		} else if pid != 1 {
			w.log.Warn("open own root: reads of secrets through unnamed paths go unseen on the host", "err", err)
		}
	}
	w.sync()
	close(started)
	// Containers already running: their roots are found now, not at
	// their next event (which may be the attacker's read).
	w.sweep(ctx, nil)
	w.mu.Lock()
	w.rootsNow.Store(uint64(len(w.roots)))
	w.mu.Unlock()
	w.sync()
	t := time.NewTicker(w.every)
	defer t.Stop()
	// Kicks rescan at most once a second; one that comes sooner is
	// deferred (due), not dropped, so the latest change is scanned.
	var last time.Time
	var due <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			for {
				select {
				case a := <-w.asks:
					unix.Close(a.fd)
				default:
					return
				}
			}
		case a := <-w.asks:
			if w.addRoot(a) {
				w.sync()
			}
		case <-w.rescan:
			if wait := time.Second - time.Since(last); wait > 0 {
				if due == nil {
					due = time.After(wait)
				}
				continue
			}
			w.rescanAll(ctx, false)
			last = time.Now()
		case <-due:
			due = nil
			w.rescanAll(ctx, false)
			last = time.Now()
		case <-t.C:
			w.rescanAll(ctx, true)
			last = time.Now()
		}
	}
}

// openRoot opens a process's root directory and says which it is. It runs
// on the reader: neither call asks the root's filesystem anything (O_PATH;
// statx from the cached inode), so a FUSE root whose daemon never answers
// cannot block it.
func openRoot(pid int) (int, rootID, error) {
	fd, err := unix.Open("/proc/"+strconv.Itoa(pid)+"/root", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, rootID{}, fmt.Errorf("open root of %d: %w", pid, err)
	}
	var st unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_STATX_DONT_SYNC, unix.STATX_INO, &st); err != nil {
		unix.Close(fd)
		return -1, rootID{}, fmt.Errorf("stat root of %d: %w", pid, err)
	}
	return fd, rootID{dev: unix.Mkdev(st.Dev_major, st.Dev_minor), ino: st.Ino}, nil
}

// scanTimed scans a root, taking its fd, within scanDeadline. A scan past
// it (a filesystem that does not answer) is left running and counted; ok
// is false then. While maxStuckScans hang, only the host's roots are
// scanned, so that hostile filesystems cannot stop the host's rescans. A
// root whose scan hung is not scanned again until stuckBackoff after that
// scan ended (sweeps would otherwise stall on it at every pass), unless no
// process has it any more when it ends.
func (w *inodeWatch) scanTimed(fd int, id rootID, rules []WatchRule, max int) ([]inoKey, bool) {
	w.mu.Lock()
	until, hung := w.stuckRoots[id]
	host := w.isHost(id)
	w.mu.Unlock()
	if hung && (until.IsZero() || time.Now().Before(until)) {
		unix.Close(fd)
		return nil, false
	}
	if !host && w.stuck.Load() >= maxStuckScans {
		unix.Close(fd)
		w.asksLost.Add(1)
		return nil, false
	}
	done := make(chan []inoKey, 1)
	go func() {
		defer unix.Close(fd)
		var devs map[uint64]bool
		if !host {
			w.mu.Lock()
			devs = w.hostDevs
			w.mu.Unlock()
		}
		sc := scanRootInOrder(fd, rules, max, devs)
		w.noteShared(sc.shared)
		done <- sc.order
	}()
	select {
	case m := <-done:
		return m, true
	case <-time.After(scanDeadline):
		w.stuck.Add(1)
		w.asksLost.Add(1)
		w.mu.Lock()
		now := time.Now()
		for r, t := range w.stuckRoots { // ended and past their backoff
			if !t.IsZero() && now.After(t) {
				delete(w.stuckRoots, r)
			}
		}
		w.stuckRoots[id] = time.Time{}
		w.mu.Unlock()
		w.log.Warn("a root's scan for secret files did not end in time: its filesystem does not answer", "deadline", scanDeadline)
		go func() {
			<-done
			// Still in use: back off. Gone (its processes ended, its
			// filesystem unmounted): forget it, so that a new root that
			// takes its device number (allocated lowest free) is scanned.
			inUse := rootInUse(id)
			w.mu.Lock()
			if inUse {
				w.stuckRoots[id] = time.Now().Add(stuckBackoff)
			} else {
				delete(w.stuckRoots, id)
			}
			w.mu.Unlock()
			w.stuck.Add(-1)
		}()
		return nil, false
	}
}

// noteShared counts the host's world-readable files a root named as
// secrets (not watched: see rootScan.add), each file once.
func (w *inodeWatch) noteShared(keys []inoKey) {
	if len(keys) == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, k := range keys {
		if !w.shared[k] {
			if len(w.shared) >= maxRefused {
				clear(w.shared)
			}
			w.shared[k] = true
			w.sharedSeen.Add(1)
		}
	}
}

// isHost reports whether id is the agent's root or pid 1's (w.mu held).
func (w *inodeWatch) isHost(id rootID) bool { return id == w.own || id == w.host }

// quota is a root's share of the kernel's set.
func (w *inodeWatch) quota(id rootID) int {
	w.mu.Lock()
	host := w.isHost(id)
	w.mu.Unlock()
	if host {
		return 16384
	}
	return maxInodesPerRoot
}

// addRoot records an asking cgroup's root, scanning it when new, and
// closes the ask's fd. It reports whether the set may have changed.
func (w *inodeWatch) addRoot(a rootAsk) bool {
	w.mu.Lock()
	r, known := w.roots[a.id]
	if known && r.stale == 0 {
		// Rescans keep the process they have while it lives: an asking
		// one is often short-lived.
		if a.cgroup != 0 && len(r.cgroups) < maxRootCgroups {
			r.cgroups[a.cgroup] = true
		}
		w.mu.Unlock()
		unix.Close(a.fd)
		return false
	}
	rules := w.rules
	full := !known && len(w.roots) >= maxRoots
	w.mu.Unlock()
	if full {
		unix.Close(a.fd)
		w.asksLost.Add(1)
		return false
	}
	// New, or stale (rescans lost its process, and it may have changed
	// since): scanned now through the asking process, which rescans use.
	inodes, ok := w.scanTimed(a.fd, a.id, rules, w.quota(a.id))
	if !ok {
		return false
	}
	w.mu.Lock()
	if r == nil {
		r = &watchedRoot{cgroups: map[uint64]bool{}}
		w.roots[a.id] = r
	}
	r.pid, r.stale, r.inodes = a.pid, 0, inodes
	if a.cgroup != 0 && len(r.cgroups) < maxRootCgroups {
		r.cgroups[a.cgroup] = true
	}
	w.rootsNow.Store(uint64(len(w.roots)))
	w.mu.Unlock()
	return true
}

// rescanAll scans every known root again through its process. A root
// whose process is gone (or whose pid now lives elsewhere) is looked for
// through /proc when sweeping (identity_sweep.go), which also takes the
// roots no event named yet. One still not found keeps its inodes while
// its cgroups ask again at their next event, and is forgotten after
// maxStale rescans without one.
func (w *inodeWatch) rescanAll(ctx context.Context, sweeping bool) {
	w.mu.Lock()
	ids := make([]rootID, 0, len(w.roots))
	for id := range w.roots {
		ids = append(ids, id)
	}
	rules := w.rules
	w.mu.Unlock()
	lost := map[rootID]bool{}
	for _, id := range ids {
		if ctx.Err() != nil {
			return
		}
		w.mu.Lock()
		r := w.roots[id]
		pid := 0
		if r != nil {
			pid = r.pid
		}
		w.mu.Unlock()
		if r == nil {
			continue
		}
		fd, now, err := openRoot(pid)
		var inodes []inoKey
		scanned, timedOut := false, false
		if err == nil {
			if now == id {
				inodes, scanned = w.scanTimed(fd, id, rules, w.quota(id))
				timedOut = !scanned
			} else {
				unix.Close(fd)
			}
		}
		w.mu.Lock()
		switch {
		case scanned:
			r.inodes, r.stale = inodes, 0
		case timedOut:
			// Keeps what it had.
		default:
			lost[id] = true
		}
		w.mu.Unlock()
	}
	if sweeping || len(lost) > 0 {
		for id := range w.sweep(ctx, lost) {
			delete(lost, id)
		}
	}
	w.mu.Lock()
	for id := range lost {
		r := w.roots[id]
		if r == nil {
			continue
		}
		for cg := range r.cgroups {
			delete(w.seen, cg)
		}
		w.last.Store(0)
		if !sweeping { // a kick's rescan: the periodic ones count
			continue
		}
		if r.stale++; r.stale > maxStale {
			delete(w.roots, id)
			// Room again: the roots refused for it may be taken now.
			for rid, why := range w.refused {
				if why.full || r.cgroups[why.cgroup] {
					delete(w.refused, rid)
				}
			}
		}
	}
	w.rootsNow.Store(uint64(len(w.roots)))
	w.mu.Unlock()
	w.sync()
}

// sync makes the kernel's set the union of the roots' inodes, cut to the
// set's size in this order: the host's roots' files first, then the other
// roots' in turn (each one's first file, then each one's second, ...), so
// a full set leaves out the last files of the roots with the most — never
// the host's, and not a container's /etc/shadow (its scan finds it first)
// because another root has many. Entries no longer wanted are deleted
// before new ones are put, so a full set makes room for them.
func (w *inodeWatch) sync() {
	// The roots' slices are replaced whole, never changed: the order is
	// built outside the lock, which the event reader takes too.
	w.mu.Lock()
	var host, others [][]inoKey
	for id, r := range w.roots {
		if w.isHost(id) {
			host = append(host, r.inodes)
		} else {
			others = append(others, r.inodes)
		}
	}
	w.mu.Unlock()
	want := map[inoKey]bool{}
	var order []inoKey
	take := func(k inoKey) {
		if !want[k] {
			want[k] = true
			order = append(order, k)
		}
	}
	for _, l := range host {
		for _, k := range l {
			take(k)
		}
	}
	for i := 0; ; i++ {
		more := false
		for _, l := range others {
			if i < len(l) {
				take(l[i])
				more = true
			}
		}
		if !more {
			break
		}
	}
	out := uint64(0)
	if size := int(w.hash.MaxEntries()); len(order) > size {
		out = uint64(len(order) - size)
		for _, k := range order[size:] {
			delete(want, k)
		}
		order = order[:size]
	}
	for k := range w.inKer {
		if !want[k] {
			if err := w.hash.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				continue
			}
			delete(w.inKer, k)
		}
	}
	var bits inoBits
	var in uint64
	one := uint32(1)
	for _, k := range order {
		if !w.inKer[k] {
			if err := w.hash.Put(k, one); err != nil {
				out++
				continue
			}
			w.inKer[k] = true
		}
		in++
		word, bit := inoBit(k.Ino)
		bits.W[word] |= 1 << bit
	}
	if in > 0 {
		bits.Any = 1
	}
	if err := w.bits.Put(uint32(0), &bits); err != nil {
		w.log.Warn("write inode prefilter: reads through unnamed paths go unseen", "err", err)
	}
	w.watched.Store(in)
	w.notWatched.Store(out)
}

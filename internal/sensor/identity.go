package sensor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
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
// read-watched one, so no path — a link with a relative target, a link made
// before the agent started or renamed since, a ".." climb — hides a
// secret. inodeWatch keeps the kernel's set: the inode numbers of the files
// the read rules name, under the host's root and under each container's
// root (reached through a process of it, /proc/PID/root).
//
// Files replaced since the last scan (passwd writes a new /etc/shadow and
// renames it over) are found at the next rescan, every inodeRescan.

const (
	inoBitsWords = 1024 // bpf/file.bpf.c INO_BITS_WORDS
	inodeRescan  = 5 * time.Second
	// Bounds on one root's scan: a hostile container can fill a watched
	// directory, and the kernel set holds 16,384 numbers for all roots.
	maxInodesPerRule = 512
	maxScanDepth     = 4
	maxSeenCgroups   = 65536
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
	inodes  map[uint64]bool
	// stale counts rescans that found no process of the root at its pid:
	// its inodes stay watched while its cgroups ask again, and it is
	// forgotten after maxStale.
	stale int
}

const maxStale = 12 // rescans: a minute

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
	roots map[rootID]*watchedRoot
	inKer map[uint64]bool

	// last is the cgroup of the reader's previous event: runs of one
	// cgroup skip the lock (cleared when a cgroup must ask again).
	last     atomic.Uint64
	running  atomic.Bool
	prefixes atomic.Pointer[[]string] // the read rules', for note

	watched, notWatched, asksLost, rootsNow atomic.Uint64
}

func newInodeWatch(log *slog.Logger, maps map[string]*ebpf.Map) *inodeWatch {
	h, b := maps["watch_inodes"], maps["watch_ino_bits"]
	if h == nil || b == nil {
		return nil
	}
	return &inodeWatch{log: log, hash: h, bits: b, asks: make(chan rootAsk, 256), rescan: make(chan struct{}, 1),
		seen: map[uint64]uint8{}, roots: map[rootID]*watchedRoot{}, inKer: map[uint64]bool{}}
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
	w.mu.Lock()
	st, seen := w.seen[cg]
	w.mu.Unlock()
	if seen && (!exec || st&cgInside != 0 || st&cgAsks >= maxExecAsks) {
		w.last.Store(cg)
		return
	}
	pid := int(ev.Process.PID)
	fd, id, err := openRoot(pid)
	if err != nil {
		return
	}
	if id != w.own {
		st |= cgInside
	}
	st = st&^cgAsks | (st&cgAsks + 1)
	w.mu.Lock()
	if len(w.seen) >= maxSeenCgroups {
		clear(w.seen) // they ask again; known roots cost one open
	}
	w.seen[cg] = st
	w.mu.Unlock()
	w.last.Store(cg)
	if w.freshRoot(id) {
		// Nothing to scan: record the cgroup here, without the worker.
		w.addRoot(rootAsk{fd: fd, id: id, pid: pid, cgroup: cg})
		return
	}
	select {
	case w.asks <- rootAsk{fd: fd, id: id, pid: pid, cgroup: cg}:
	default:
		unix.Close(fd)
		w.asksLost.Add(1)
		w.mu.Lock()
		delete(w.seen, cg)
		w.mu.Unlock()
		w.last.Store(0)
	}
}

// freshRoot reports whether a root is scanned and its last rescan could
// reach it (a stale one is scanned again through the asking process).
func (w *inodeWatch) freshRoot(id rootID) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	r, ok := w.roots[id]
	return ok && r.stale == 0
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
	for _, pid := range []int{os.Getpid(), 1} {
		if fd, id, err := openRoot(pid); err == nil {
			if pid == os.Getpid() {
				w.mu.Lock()
				w.own = id
				w.mu.Unlock()
			}
			w.addRoot(rootAsk{fd: fd, id: id, pid: pid})
		} else if pid != 1 {
			w.log.Warn("open own root: reads of secrets through unnamed paths go unseen on the host", "err", err)
		}
	}
	w.sync()
	close(started)
	t := time.NewTicker(inodeRescan)
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
			w.rescanAll()
			last = time.Now()
		case <-due:
			due = nil
			w.rescanAll()
			last = time.Now()
		case <-t.C:
			w.rescanAll()
			last = time.Now()
		}
	}
}

// openRoot opens a process's root directory and says which it is.
func openRoot(pid int) (int, rootID, error) {
	fd, err := unix.Open("/proc/"+strconv.Itoa(pid)+"/root", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, rootID{}, fmt.Errorf("open root of %d: %w", pid, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, rootID{}, fmt.Errorf("stat root of %d: %w", pid, err)
	}
	return fd, rootID{dev: st.Dev, ino: st.Ino}, nil
}

// addRoot records an asking cgroup's root, scanning it when new, and
// closes the ask's fd. It reports whether the set may have changed.
func (w *inodeWatch) addRoot(a rootAsk) bool {
	defer unix.Close(a.fd)
	w.mu.Lock()
	r, known := w.roots[a.id]
	if known && r.stale == 0 {
		// Rescans keep the process they have while it lives: an asking
		// one is often short-lived.
		if a.cgroup != 0 {
			r.cgroups[a.cgroup] = true
		}
		w.mu.Unlock()
		return false
	}
	rules := w.rules
	w.mu.Unlock()
	// New, or stale (rescans lost its process, and it may have changed
	// since): scanned now through the asking process, which rescans use.
	inodes := scanRoot(a.fd, rules)
	w.mu.Lock()
	if r == nil {
		r = &watchedRoot{cgroups: map[uint64]bool{}}
		w.roots[a.id] = r
	}
	r.pid, r.stale, r.inodes = a.pid, 0, inodes
	if a.cgroup != 0 {
		r.cgroups[a.cgroup] = true
	}
	w.rootsNow.Store(uint64(len(w.roots)))
	w.mu.Unlock()
	return true
}

// rescanAll scans every known root again through its process. A root
// whose process is gone (or whose pid now lives elsewhere) keeps its
// inodes while its cgroups ask again at their next event, and is
// forgotten after maxStale rescans without one.
func (w *inodeWatch) rescanAll() {
	w.mu.Lock()
	ids := make([]rootID, 0, len(w.roots))
	for id := range w.roots {
		ids = append(ids, id)
	}
	rules := w.rules
	w.mu.Unlock()
	for _, id := range ids {
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
		var inodes map[uint64]bool
		if err == nil {
			if now == id {
				inodes = scanRoot(fd, rules)
			}
			unix.Close(fd)
		}
		w.mu.Lock()
		if inodes != nil {
			r.inodes, r.stale = inodes, 0
		} else {
			for cg := range r.cgroups {
				delete(w.seen, cg)
			}
			w.last.Store(0)
			if r.stale++; r.stale > maxStale {
				delete(w.roots, id)
			}
		}
		w.mu.Unlock()
	}
	w.mu.Lock()
	w.rootsNow.Store(uint64(len(w.roots)))
	w.mu.Unlock()
	w.sync()
}

// sync makes the kernel's set the union of the roots' inodes: entries are
// added before the prefilter names them and removed after it stops.
func (w *inodeWatch) sync() {
	w.mu.Lock()
	want := map[uint64]bool{}
	for _, r := range w.roots {
		for ino := range r.inodes {
			want[ino] = true
		}
	}
	w.mu.Unlock()
	var bits inoBits
	var in, out uint64
	one := uint32(1)
	for ino := range want {
		if !w.inKer[ino] {
			if err := w.hash.Put(ino, one); err != nil {
				out++
				continue
			}
			w.inKer[ino] = true
		}
		in++
		word, bit := inoBit(ino)
		bits.W[word] |= 1 << bit
	}
	if in > 0 {
		bits.Any = 1
	}
	if err := w.bits.Put(uint32(0), &bits); err != nil {
		w.log.Warn("write inode prefilter: reads through unnamed paths go unseen", "err", err)
	}
	for ino := range w.inKer {
		if !want[ino] {
			if err := w.hash.Delete(ino); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				continue
			}
			delete(w.inKer, ino)
		}
	}
	w.watched.Store(in)
	w.notWatched.Store(out)
}

// scanRoot collects the inode numbers of the regular files the read rules
// name under a root: a rule ending in '/' names the files below that
// directory (bounded depth and count), another one names a file, or when
// none has its exact name, the files of its directory whose names start
// with its last part (/etc/ssh/ssh_host_). Every path is resolved inside
// the root (RESOLVE_IN_ROOT), so a container's links cannot point the scan
// at the host.
func scanRoot(root int, rules []WatchRule) map[uint64]bool {
	out := map[uint64]bool{}
	for _, r := range rules {
		rel := strings.TrimPrefix(r.Prefix, "/")
		n := 0
		add := func(ino uint64) bool {
			// 1 and 2 are filesystem roots' numbers on many filesystems:
			// no secret, and a match on every root.
			if ino > 2 && !out[ino] {
				out[ino] = true
				n++
			}
			return n < maxInodesPerRule
		}
		if strings.HasSuffix(r.Prefix, "/") {
			scanDir(root, strings.TrimSuffix(rel, "/"), 0, map[uint64]bool{}, add)
			continue
		}
		if st, err := statIn(root, rel, true); err == nil {
			if st.Mode&unix.S_IFMT == unix.S_IFREG {
				add(st.Ino)
			}
			continue
		}
		dir, base := path.Split(rel)
		names, err := listIn(root, strings.TrimSuffix(dir, "/"))
		if err != nil {
			continue
		}
		for _, name := range names {
			if !strings.HasPrefix(name, base) {
				continue
			}
			if st, err := statIn(root, dir+name, true); err == nil && st.Mode&unix.S_IFMT == unix.S_IFREG && !add(st.Ino) {
				break
			}
		}
	}
	return out
}

// scanDir adds the regular files below dir (the rule's directory is
// reached through links, as the kernel would: /var/run is often one). Links
// below it are not followed: a file that is a secret lives in the
// directory (a pod's token is a link to a file in a sibling directory,
// scanned in its own right), and a container linking / there would
// otherwise make its every file a secret. visited stops loops.
func scanDir(root int, dir string, depth int, visited map[uint64]bool, add func(uint64) bool) bool {
	st, err := statIn(root, dir, depth == 0)
	if err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR || visited[st.Ino] {
		return true
	}
	visited[st.Ino] = true
	names, err := listIn(root, dir)
	if err != nil {
		return true
	}
	for _, name := range names {
		p := dir + "/" + name
		st, err := statIn(root, p, false)
		if err != nil {
			continue
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			if !add(st.Ino) {
				return false
			}
		case unix.S_IFDIR:
			if depth < maxScanDepth && !scanDir(root, p, depth+1, visited, add) {
				return false
			}
		}
	}
	return true
}

// statIn stats a path inside root, following its links there (the last
// one only when follow is set). O_PATH opens nothing: a device or a FIFO
// is not touched.
func statIn(root int, rel string, follow bool) (unix.Stat_t, error) {
	var st unix.Stat_t
	if rel == "" {
		rel = "."
	}
	flags := uint64(unix.O_PATH | unix.O_CLOEXEC)
	if !follow {
		flags |= unix.O_NOFOLLOW
	}
	fd, err := unix.Openat2(root, rel, &unix.OpenHow{Flags: flags,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS})
	if err != nil {
		return st, err
	}
	defer unix.Close(fd)
	err = unix.Fstat(fd, &st)
	return st, err
}

// listIn reads a directory's names inside root (at most a few thousand:
// the scan's bounds stop well before).
func listIn(root int, rel string) ([]string, error) {
	if rel == "" {
		rel = "."
	}
	fd, err := unix.Openat2(root, rel, &unix.OpenHow{Flags: unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS})
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), rel)
	defer f.Close()
	entries, err := f.ReadDir(4096)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names, nil
}

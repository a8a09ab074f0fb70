package proc

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mamori-dev/mamori/internal/event"
)

// fileKey identifies an executable's content well enough to reuse a hash:
// a rewrite changes mtime or ctime.
type fileKey struct {
	dev          uint32
	ino          uint64
	mtime, ctime int64
}

// String names the identity ("" when unknown).
func (k fileKey) String() string {
	if k == (fileKey{}) {
		return ""
	}
	return fmt.Sprintf("%d:%d:%d:%d", k.dev, k.ino, k.mtime, k.ctime)
}

type hashJob struct {
	pid  uint32
	ppid uint32 // its root resolves the path of a process already gone
	// cgroup finds other processes of the same container, whose root
	// serves when the parent's is not the container's (a process exec'd by
	// `podman exec` is reparented to the runtime's monitor on the host).
	cgroup uint64
	uuid   string
	key    fileKey
	path   string // as the exec event gave it, for a process already gone
}

// hasher computes executable SHA-256s on its own goroutine, reading the
// image through /proc/PID/exe so that deleted files, memfds and files in
// other mount namespaces hash too. The queue is bounded; a full queue drops
// the job and counts it.
type hasher struct {
	t        *Table
	jobs     chan hashJob
	maxBytes int64
	mu       sync.Mutex
	cache    map[fileKey]string

	queued, done, dropped, failed, hits, stuck atomic.Uint64
}

// hashTimeout bounds one hash: a file on a stalled FUSE or NFS mount blocks
// open, stat and read whatever the flags, and must not stop hashing node-
// wide. The blocked goroutine is left behind (it finishes or stays
// blocked) and counted stuck until it returns; while maxStuck are, new
// jobs are dropped and counted, not started.
const (
	hashTimeout = 20 * time.Second
	maxStuck    = 8
)

const hashCacheSize = 8192

func newHasher(t *Table, queue int, maxBytes int64) *hasher {
	return &hasher{t: t, jobs: make(chan hashJob, queue), maxBytes: maxBytes, cache: map[fileKey]string{}}
}

func keyOf(x *event.Exec) fileKey {
	return fileKey{dev: x.Dev, ino: x.Inode, mtime: x.MTime.UnixNano(), ctime: x.CTime.UnixNano()}
}

func (h *hasher) cached(x *event.Exec) (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s, ok := h.cache[keyOf(x)]
	if ok {
		h.hits.Add(1)
	}
	return s, ok
}

// known returns the cached hash of the image k, without counting a hit.
func (h *hasher) known(k fileKey) (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s, ok := h.cache[k]
	return s, ok
}

func (h *hasher) enqueue(pid, ppid uint32, cgroup uint64, uuid string, x *event.Exec) {
	select {
	case h.jobs <- hashJob{pid: pid, ppid: ppid, cgroup: cgroup, uuid: uuid, key: keyOf(x), path: x.Path}:
		h.queued.Add(1)
	default:
		h.dropped.Add(1)
	}
}

// Run hashes queued executables until ctx is done.
func (t *Table) Run(ctx context.Context) {
	h := t.hash
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-h.jobs:
			if !h.runBounded(ctx, j) {
				return
			}
		}
	}
}

// runBounded runs j on a goroutine of its own for at most hashTimeout,
// reporting whether hashing may go on (false once ctx ends).
func (h *hasher) runBounded(ctx context.Context, j hashJob) bool {
	if n := h.stuck.Load(); n >= maxStuck {
		if d := h.dropped.Add(1); d&(d-1) == 0 {
			h.t.log.Error("executable hashes dropped: too many hashes blocked (a stalled FUSE or network file system?)", "stuck", n, "dropped", d)
		}
		return true
	}
	// state: 0 running, 1 finished in time, 2 left behind.
	var state atomic.Int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.run(j)
		if !state.CompareAndSwap(0, 1) {
			h.stuck.Add(^uint64(0)) // a left-behind hash came back
		}
	}()
	timer := time.NewTimer(hashTimeout)
	defer timer.Stop()
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	case <-timer.C:
	}
	if state.CompareAndSwap(0, 2) {
		n := h.stuck.Add(1)
		h.t.log.Warn("hashing an executable blocked; left behind", "pid", j.pid, "path", j.path, "after", hashTimeout, "stuck", n)
	}
	return true
}

func (h *hasher) run(j hashJob) {
	h.mu.Lock()
	sum, ok := h.cache[j.key]
	h.mu.Unlock()
	if !ok {
		var err error
		sum, err = h.hashExe(j)
		if err != nil {
			h.failed.Add(1)
			h.t.log.Debug("hash executable", "pid", j.pid, "err", err)
			return
		}
		h.mu.Lock()
		if len(h.cache) >= hashCacheSize {
			h.cache = map[fileKey]string{}
		}
		h.cache[j.key] = sum
		h.mu.Unlock()
	} else {
		h.hits.Add(1)
	}
	h.done.Add(1)
	var ev *event.Event
	h.t.mu.Lock()
	// Only while the process still runs the image hashed: it may have
	// exec'd another since, whose hash this is not.
	if e := h.t.byID[j.uuid]; e != nil && e.execKey == j.key {
		e.sha256 = sum
		if h.t.opts.Hashed != nil {
			ev = h.t.hashedEvent(e, j)
		}
	}
	h.t.mu.Unlock()
	if ev != nil {
		h.t.opts.Hashed(ev)
	}
}

// hashedEvent describes e, whose hash just became known, as its own
// events would; the caller holds t.mu.
func (t *Table) hashedEvent(e *entry, j hashJob) *event.Event {
	ev := &event.Event{Kind: event.KindExecHashed, Time: time.Now(),
		// The image hashed, by identity: a finding about an exec takes this
		// hash only if it is about that very file.
		Exec: &event.Exec{Path: j.path, Dev: j.key.dev, Inode: j.key.ino,
			MTime: time.Unix(0, j.key.mtime), CTime: time.Unix(0, j.key.ctime)},
		Process: event.Process{
			PID: e.pid, NSPID: e.nspid, PPID: e.ppid, UID: e.uid, EUID: e.euid, Comm: e.name, CgroupID: e.cgroup,
			StartNS: e.startTicks * (1e9 / ticksPerSecond), Exe: e.exe, Args: e.args, Cwd: e.cwd,
		}}
	// The container comes from the cgroup, resolved down the pipeline as
	// for kernel events.
	t.fill(&ev.Process, e)
	return ev
}

// hashExe hashes /proc/PID/exe after checking it is still the image the
// exec event described (the process may have exec'd again or exited). A
// process that already exited (a dropper that ran for a millisecond) has
// no /proc/PID/exe: the file at its path is hashed instead if it is the
// very file executed (device, inode, mtime, ctime), resolved in its
// parent's root (the same container, as a rule) and else in the host's.
func (h *hasher) hashExe(j hashJob) (string, error) {
	f, err := h.openProcExe(j)
	if err != nil && filepath.IsAbs(j.path) {
		// Gone, or exec'd another file since: the executed file may still
		// be at its path.
		g, perr := h.openExecuted(j)
		if perr != nil {
			return "", fmt.Errorf("open exe: %w; by path: %v", err, perr)
		}
		f, err = g, nil
	}
	if err != nil {
		return "", fmt.Errorf("open exe: %w", err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return "", fmt.Errorf("stat exe: %w", err)
	}
	if st.Size > h.maxBytes {
		return "", fmt.Errorf("exe too large to hash: %d bytes", st.Size)
	}
	d := sha256.New()
	if _, err := io.Copy(d, io.LimitReader(f, h.maxBytes)); err != nil {
		return "", fmt.Errorf("read exe: %w", err)
	}
	return hex.EncodeToString(d.Sum(nil)), nil
}

// openProcExe opens /proc/PID/exe if it is still the image the exec event
// described: inode, mtime and ctime (a process that exec'd another file
// since, even one with the same inode number on another file system, is
// refused). The device is not compared: stat's device for a file on a
// btrfs subvolume or an overlay is not the superblock's the kernel gave.
func (h *hasher) openProcExe(j hashJob) (*os.File, error) {
	f, err := os.Open(filepath.Join(h.t.opts.ProcRoot, strconv.FormatUint(uint64(j.pid), 10), "exe"))
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("stat exe: %w", err)
	}
	if st.Ino != j.key.ino || st.Mtim.Nano() != j.key.mtime || st.Ctim.Nano() != j.key.ctime {
		f.Close()
		return nil, fmt.Errorf("exe changed: inode %d, want %d (or rewritten)", st.Ino, j.key.ino)
	}
	return f, nil
}

// openExecuted opens the file at a gone process's exec path, in its
// parent's root, else in the root of another process of its container (the
// parent may be the runtime's monitor on the host), else the host's — if it
// is the very file executed. The file is looked at through an O_PATH
// descriptor first: a device planted at the path is never opened.
func (h *hasher) openExecuted(j hashJob) (*os.File, error) {
	rootOf := func(pid uint32) string {
		return filepath.Join(h.t.opts.ProcRoot, strconv.FormatUint(uint64(pid), 10), "root")
	}
	err := fmt.Errorf("%s is no longer the executed file", j.path)
	try := func(root string) *os.File {
		f, oerr := openImageInRoot(root, j.path, j.key)
		if oerr != nil {
			err = oerr
			return nil
		}
		return f
	}
	if j.ppid != 0 {
		if f := try(rootOf(j.ppid)); f != nil {
			return f, nil
		}
	}
	for _, pid := range h.t.peers(j.cgroup, j.pid, j.ppid, 3) {
		if f := try(rootOf(pid)); f != nil {
			return f, nil
		}
	}
	if f := try("/"); f != nil {
		return f, nil
	}
	return nil, err
}

// peers returns up to max pids of known processes in cgroup (a container's
// cgroup; none for the root cgroup), other than the given ones.
func (t *Table) peers(cgroup uint64, not1, not2 uint32, max int) []uint32 {
	if cgroup <= 1 {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []uint32
	for pid, e := range t.byPID {
		if e.cgroup == cgroup && e.exited.IsZero() && pid != not1 && pid != not2 {
			if out = append(out, pid); len(out) == max {
				break
			}
		}
	}
	return out
}

// openImageInRoot opens path as seen from root (a process's /proc/PID/root)
// for reading, if it is the regular file k describes: symlinks and ".."
// stay inside root, magic links are refused, the final component is not
// followed, and only once an O_PATH descriptor shows the very file is it
// reopened to read (a FIFO or device planted there is never opened).
func openImageInRoot(root, path string, k fileKey) (*os.File, error) {
	dir, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open root %s: %w", root, err)
	}
	defer unix.Close(dir)
	fd, err := unix.Openat2(dir, strings.TrimPrefix(path, "/"), &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return nil, fmt.Errorf("open %s in %s: %w", path, root, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("stat %s in %s: %w", path, root, err)
	}
	if !sameImage(&st, k) {
		return nil, fmt.Errorf("%s in %s is not the executed file", path, root)
	}
	rfd, err := unix.Open("/proc/self/fd/"+strconv.Itoa(fd), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("reopen %s: %w", path, err)
	}
	return os.NewFile(uintptr(rfd), path), nil
}

// sameImage reports whether st is the regular file k describes. The
// kernel gives the device as MAJOR<<20|MINOR, stat in the user encoding.
func sameImage(st *unix.Stat_t, k fileKey) bool {
	kdev := uint64(unix.Major(st.Dev))<<20 | uint64(unix.Minor(st.Dev))
	return st.Mode&unix.S_IFMT == unix.S_IFREG && st.Ino == k.ino && (kdev == uint64(k.dev) || st.Dev == uint64(k.dev)) &&
		st.Mtim.Nano() == k.mtime && st.Ctim.Nano() == k.ctime
}

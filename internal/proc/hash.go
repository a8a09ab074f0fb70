package proc

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"

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

type hashJob struct {
	pid  uint32
	uuid string
	key  fileKey
	path string // as the exec event gave it, for a process already gone
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

	queued, done, dropped, failed, hits atomic.Uint64
}

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

func (h *hasher) enqueue(pid uint32, uuid string, x *event.Exec) {
	select {
	case h.jobs <- hashJob{pid: pid, uuid: uuid, key: keyOf(x), path: x.Path}:
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
			h.run(j)
		}
	}
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
	h.t.mu.Lock()
	if e := h.t.byID[j.uuid]; e != nil {
		e.sha256 = sum
	}
	h.t.mu.Unlock()
}

// hashExe hashes /proc/PID/exe after checking it is still the image the
// exec event described (the process may have exec'd again or exited). A
// process that already exited (a dropper that ran for a millisecond) has
// no /proc/PID/exe: the file at its path is hashed instead if it is the
// very file executed (device, inode, mtime and ctime).
func (h *hasher) hashExe(j hashJob) (string, error) {
	f, err := os.Open(filepath.Join(h.t.opts.ProcRoot, strconv.FormatUint(uint64(j.pid), 10), "exe"))
	byPath := false
	if errors.Is(err, fs.ErrNotExist) && filepath.IsAbs(j.path) {
		// Non-blocking and no symlinks: a FIFO or a link planted at the
		// path must neither stall the hasher nor redirect it.
		f, err = os.OpenFile(j.path, os.O_RDONLY|unix.O_NONBLOCK|unix.O_NOFOLLOW, 0)
		byPath = true
	}
	if err != nil {
		return "", fmt.Errorf("open exe: %w", err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return "", fmt.Errorf("stat exe: %w", err)
	}
	if st.Ino != j.key.ino {
		return "", fmt.Errorf("exe changed: inode %d, want %d", st.Ino, j.key.ino)
	}
	if byPath && !sameImage(&st, j.key) {
		return "", fmt.Errorf("%s is no longer the executed file", j.path)
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

// sameImage reports whether st is the regular file k describes. The
// kernel gives the device as MAJOR<<20|MINOR, stat in the user encoding.
func sameImage(st *unix.Stat_t, k fileKey) bool {
	kdev := uint64(unix.Major(st.Dev))<<20 | uint64(unix.Minor(st.Dev))
	return st.Mode&unix.S_IFMT == unix.S_IFREG && (kdev == uint64(k.dev) || st.Dev == uint64(k.dev)) &&
		st.Mtim.Nano() == k.mtime && st.Ctim.Nano() == k.ctime
}

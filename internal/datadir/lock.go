// Package datadir guards a role's data directory: one mamori server and one
// mamori agent at a time may use a directory. Two of the same role would
// share a database, a JetStream store, a node id and an event socket — and
// the one that exits first would remove files the other still serves.
package datadir

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Lock is a held data-directory lock; it lasts until Release or the
// process's exit (the kernel drops an flock with its last descriptor).
type Lock struct {
	f *os.File
}

// ErrLocked is returned (wrapped) when another process holds the lock.
var ErrLocked = errors.New("data directory in use")

// Acquire takes DIR/ROLE.lock, creating dir when needed, and records this
// process's pid in it. It fails at once, naming the holder's pid, when
// another process holds it.
func Acquire(dir, role string) (*Lock, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	path := filepath.Join(dir, role+".lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		holder := ""
		if b, rerr := os.ReadFile(path); rerr == nil {
			if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil && pid > 0 {
				holder = fmt.Sprintf(" (pid %d)", pid)
			}
		}
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: another mamori %s is running with --data-dir %s%s; stop it or give this one another --data-dir",
				ErrLocked, role, dir, holder)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &Lock{f: f}, nil
}

// Release drops the lock. The file stays: removing it would let a third
// process lock a fresh file while a second still waits on the old one.
func (l *Lock) Release() {
	if l == nil || l.f == nil {
		return
	}
	_ = unix.Flock(int(l.f.Fd()), unix.LOCK_UN)
	l.f.Close()
	l.f = nil
}

package sensor

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"
)

// ringWaiter waits for the ring buffer in Go's netpoller instead of a
// blocking epoll_wait. A thread blocked in a syscall loses its P to sysmon
// after ~20 µs when no other P is idle (an agent pinned to one CPU has one
// P): every 5 ms poll then cost a P handoff, thread wakeups and sysmon
// polling at its fastest rate — most of the agent's CPU on a quiet node,
// and context switches are dear on virtual machines. Parked in the
// netpoller, the reader holds no thread while it waits.
type ringWaiter struct {
	f  *os.File
	rc interface {
		Read(func(uintptr) bool) error
	}
	rd *ringbuf.Reader
}

// newRingWaiter registers a duplicate of the ring buffer's fd with the Go
// netpoller; an error means the caller should keep waiting in the reader.
func newRingWaiter(m *ebpf.Map, rd *ringbuf.Reader) (*ringWaiter, error) {
	fd, err := unix.FcntlInt(uintptr(m.FD()), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("dup ring buffer fd: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("ring buffer fd: %w", err)
	}
	f := os.NewFile(uintptr(fd), "ringbuf")
	// Deadlines work only on files the netpoller took.
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		f.Close()
		return nil, fmt.Errorf("ring buffer fd not pollable: %w", err)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("ring buffer fd: %w", err)
	}
	return &ringWaiter{f: f, rc: rc, rd: rd}, nil
}

// batchBytes is what the kernel lets wait before it wakes the reader
// (WAKEUP_BYTES in bpf/include/mamori.h).
const batchBytes = 256 << 10

// wait returns once a batch is waiting (the kernel wakes the reader then),
// or after d, whatever is waiting: records are read in batches, as many as
// a few milliseconds bring, not one wakeup and drain for every few.
func (w *ringWaiter) wait(d time.Duration) error {
	full := func(uintptr) bool { return w.rd.AvailableBytes() >= batchBytes }
	if full(0) {
		return nil
	}
	if err := w.f.SetReadDeadline(time.Now().Add(d)); err != nil {
		return err
	}
	err := w.rc.Read(full)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil
	}
	return err
}

func (w *ringWaiter) close() { w.f.Close() }

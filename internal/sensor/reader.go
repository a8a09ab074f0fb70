package sensor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/mamori-dev/mamori/internal/event"
)

// Counters are the sensor's loss and volume accounting. Kernel counts come
// from per-CPU maps; user-space counts from the reader.
type Counters struct {
	// Emitted and KernelDrops are indexed by event kind.
	Emitted     map[string]uint64 `json:"emitted"`
	KernelDrops map[string]uint64 `json:"kernelDrops"`
	// DecodeErrors counts records the decoder refused.
	DecodeErrors uint64 `json:"decodeErrors"`
	// Read counts records taken off the ring buffer.
	Read uint64 `json:"read"`
	// ProgramMisses counts runs the kernel skipped because a program was
	// already running on that CPU (recursion protection): lost events too.
	ProgramMisses uint64 `json:"programMisses"`
	// LastEvent is when the last record was read (zero if none yet).
	LastEvent time.Time `json:"lastEvent,omitempty"`
	// LinksLearned counts links to secrets the kernel added to its file
	// watch as they were made; LinksNotLearned those it could not (its
	// watch full): reads through those are not seen.
	LinksLearned    uint64 `json:"linksLearned"`
	LinksNotLearned uint64 `json:"linksNotLearned"`
	// SecretInodes counts the read-watched files the kernel knows by
	// device and inode (in WatchedRoots roots: the agent's and each
	// container's), so a read through any path to them is seen;
	// SecretInodesNotWatched those its set had no room for; RootScansLost
	// the root scans lost to a full queue (the cgroup asks again at its
	// next event) or to a filesystem that did not answer in time.
	SecretInodes           uint64 `json:"secretInodes"`
	SecretInodesNotWatched uint64 `json:"secretInodesNotWatched"`
	WatchedRoots           uint64 `json:"watchedRoots"`
	RootScansLost          uint64 `json:"rootScansLost"`
	// SecretFilesShared counts world-readable files of the host's system
	// filesystems that a container's root named as secrets (a libc
	// bind-mounted as its /etc/shadow): not watched, or every read of
	// them on the host would be flagged.
	SecretFilesShared uint64 `json:"secretFilesShared,omitempty"`
}

// TotalKernelDrops sums drops over all kinds.
func (c Counters) TotalKernelDrops() uint64 {
	var n uint64
	for _, v := range c.KernelDrops {
		n += v
	}
	return n
}

// TotalEmitted sums emitted records over all kinds.
func (c Counters) TotalEmitted() uint64 {
	var n uint64
	for _, v := range c.Emitted {
		n += v
	}
	return n
}

type readStats struct {
	read, decodeErrs atomic.Uint64
	last             atomic.Int64
}

// Handler receives each decoded event. It runs on the reader goroutine:
// while it works, records wait in the ring buffer (whose overflow the
// kernel counts), so no second unbounded queue hides behind it.
type Handler func(*event.Event)

// pollInterval is the longest a record waits in the ring buffer when too
// few are waiting to wake the reader.
const pollInterval = 5 * time.Millisecond

// Run reads the ring buffer until ctx is done, decoding each record and
// passing it to h. Malformed records are counted and skipped.
func (s *Sensor) Run(ctx context.Context, h Handler) error {
	m, ok := s.maps["events"]
	if !ok {
		return errors.New("events ring buffer not loaded")
	}
	rd, err := ringbuf.NewReader(m)
	if err != nil {
		return fmt.Errorf("open ring buffer: %w", err)
	}
	defer rd.Close()
	w, err := newRingWaiter(m, rd)
	if err != nil {
		s.log.Debug("ring buffer: waiting in epoll_wait instead of the Go poller", "err", err)
	} else {
		defer w.close()
	}
	// Cancellation interrupts a blocked wait or read. With a waiter, the
	// reader is closed only by this goroutine, on return: the waiter calls
	// its AvailableBytes, which does not survive a concurrent Close.
	stop := context.AfterFunc(ctx, func() {
		if w != nil {
			w.close()
		} else {
			rd.Close()
		}
	})
	defer stop()
	if w := s.inodes; w != nil {
		// The worker ends with Run (its context is Run's own), and Run
		// waits for it: a later Run finds none left behind.
		wctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		defer wg.Wait()
		defer cancel()
		started := make(chan struct{})
		wg.Go(func() { w.run(wctx, started) })
		<-started
	}
	dec := NewDecoder()
	var rec ringbuf.Record
	for {
		// The kernel wakes the reader only once a batch is waiting
		// (bpf/include/mamori.h, wakeup_flag); the deadline bounds how long
		// a lone record waits.
		if w != nil {
			if err := w.wait(pollInterval); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("wait for ring buffer: %w", err)
			}
			rd.SetDeadline(time.Now()) // drain what is there, without blocking
		} else {
			rd.SetDeadline(time.Now().Add(pollInterval))
		}
		for {
			if err := rd.ReadInto(&rec); err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					break
				}
				if errors.Is(err, ringbuf.ErrClosed) && ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("read ring buffer: %w", err)
			}
			s.stats.read.Add(1)
			ev, err := dec.Decode(rec.RawSample)
			if err != nil {
				s.stats.decodeErrs.Add(1)
				s.log.Debug("decode record", "err", err)
				continue
			}
			s.stats.last.Store(time.Now().UnixNano())
			if s.inodes != nil {
				s.inodes.note(ev)
			}
			h(ev)
		}
	}
}

// Counters reads the kernel and reader counters.
func (s *Sensor) Counters() Counters {
	c := Counters{
		Emitted:      sumPerCPU(s.maps["emitted"]),
		KernelDrops:  sumPerCPU(s.maps["drops"]),
		DecodeErrors: s.stats.decodeErrs.Load(),
		Read:         s.stats.read.Load(),
	}
	if t := s.stats.last.Load(); t != 0 {
		c.LastEvent = time.Unix(0, t)
	}
	c.LinksLearned, c.LinksNotLearned = perCPUAt(s.maps["links_learned"], 0), perCPUAt(s.maps["links_learned"], 1)
	if w := s.inodes; w != nil {
		c.SecretInodes, c.SecretInodesNotWatched = w.watched.Load(), w.notWatched.Load()
		c.WatchedRoots, c.RootScansLost = w.rootsNow.Load(), w.asksLost.Load()
		c.SecretFilesShared = w.sharedSeen.Load()
	}
	for _, coll := range s.colls {
		for _, p := range coll.Programs {
			if st, err := p.Stats(); err == nil {
				c.ProgramMisses += st.RecursionMisses
			}
		}
	}
	return c
}

// perCPUAt sums one key of a per-CPU array of counters (0 when absent).
func perCPUAt(m *ebpf.Map, key uint32) uint64 {
	var vals []uint64
	if m == nil || m.Lookup(key, &vals) != nil {
		return 0
	}
	var sum uint64
	for _, v := range vals {
		sum += v
	}
	return sum
}

func sumPerCPU(m *ebpf.Map) map[string]uint64 {
	out := map[string]uint64{}
	if m == nil {
		return out
	}
	for k := uint32(1); k < event.MaxKernelKind; k++ {
		var vals []uint64
		if err := m.Lookup(k, &vals); err != nil {
			continue
		}
		var sum uint64
		for _, v := range vals {
			sum += v
		}
		if sum > 0 {
			out[event.Kind(k).String()] = sum
		}
	}
	return out
}

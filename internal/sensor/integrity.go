package sensor

import (
	"context"
	"fmt"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// heldHook is an attached program the sensor keeps an eye on.
type heldHook struct {
	status int // index in Sensor.status
	link   link.Link
	prog   *ebpf.Program
	spec   *ebpf.ProgramSpec
}

// Tamper is one hook found detached by someone else.
type Tamper struct {
	Program, Hook string
	At            time.Time
	Reattached    bool
	Error         string // why re-attaching failed
}

// VerifyHooks looks for attached hooks that another process detached
// (BPF_LINK_DETACH, e.g. `bpftool link detach`: an attacker with root
// blinding the sensor) and attaches them again. A tampered hook keeps
// DetachedAt in its status, so heartbeats carry it to coverage. Only cgroup
// links can be detached by others; perf-event and tracing links cannot.
func (s *Sensor) VerifyHooks() []Tamper {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Tamper
	for _, h := range s.held {
		if !detached(h.link) {
			continue
		}
		st := &s.status[h.status]
		t := Tamper{Program: st.Program, Hook: st.Hook, At: time.Now().UTC()}
		st.DetachedAt, st.Detaches = t.At, st.Detaches+1
		_ = h.link.Close()
		l, err := s.attach(h.prog, h.spec)
		if err != nil {
			st.Attached, st.Error = false, fmt.Sprintf("detached by another process at %s; re-attach: %v", t.At.Format(time.RFC3339), err)
			t.Error = err.Error()
			s.replaceLink(h.link, nil)
			h.link = nil
		} else {
			t.Reattached = true
			s.replaceLink(h.link, l)
			h.link = l
		}
		s.log.Warn("BPF hook detached by another process", "program", st.Program, "hook", st.Hook, "reattached", t.Reattached, "err", t.Error)
		out = append(out, t)
	}
	// Hooks that could not be re-attached are dropped from the watch; their
	// status says so.
	kept := s.held[:0]
	for _, h := range s.held {
		if h.link != nil {
			kept = append(kept, h)
		}
	}
	s.held = kept
	return out
}

// WatchHooks runs VerifyHooks every interval until ctx ends.
func (s *Sensor) WatchHooks(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.VerifyHooks()
		}
	}
}

// detached reports whether a cgroup link lost its cgroup: the kernel clears
// it when the link is detached through its id.
func detached(l link.Link) bool {
	info, err := l.Info()
	if err != nil || info.Type != link.CgroupType {
		return false
	}
	if c := info.Cgroup(); c != nil {
		return c.CgroupId == 0
	}
	return false
}

// replaceLink swaps old for repl (nil: removes it) in the links Close
// detaches. Caller holds s.mu.
func (s *Sensor) replaceLink(old, repl link.Link) {
	for i, l := range s.links {
		if l == old {
			if repl == nil {
				s.links = append(s.links[:i], s.links[i+1:]...)
			} else {
				s.links[i] = repl
			}
			return
		}
	}
}

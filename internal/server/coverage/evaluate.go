package coverage

import (
	"fmt"
	"strings"
	"time"
)

// Statuses.
const (
	Healthy   = "Healthy"
	Unhealthy = "Unhealthy"
)

// Issue types, the part of an issue string before the colon.
const (
	IssueExcluded       = "EXCLUDED_BY_LABEL"
	IssueExited         = "AGENT_EXITED"
	IssueNotReporting   = "AGENT_NOT_REPORTING"
	IssueNoBTF          = "KERNEL_NO_BTF"
	IssueSensorFailed   = "SENSOR_FAILED"
	IssueHookFailed     = "HOOK_ATTACH_FAILED"
	IssueEventsDropped  = "EVENTS_DROPPED"
	IssueRuntimeOffline = "RUNTIME_UNREACHABLE"
	IssueNoHeartbeat    = "NO_HEARTBEAT"
	IssueHookDetached   = "HOOK_DETACHED"
	IssueServerBehind   = "SERVER_BEHIND"
)

// Backlog is the server side's queue of agent messages (the transport's
// stream), as read once per sweep, and the server's outages.
type Backlog struct {
	Pending       uint64    // messages not yet handed to the server's handlers
	OldestPending time.Time // when the first of them was received
	Outages       []Outage
}

// Outage is a span in which the server could not take or store agent
// messages, so that a node's silence then is likely the server's doing.
type Outage struct {
	// Cause completes "no heartbeat stored since T while ...", in stable
	// words: e.g. "the server cannot store agent messages: its database is
	// unavailable (they wait in its queue)".
	Cause string
	Since time.Time
	Until time.Time // zero while it lasts
}

// backlogView is a backlog reading and when it was taken.
type backlogView struct {
	Backlog
	read time.Time
}

// serverCause says what on the server's side may explain that nothing a
// node sent before it was due to be called silent (lastHeartbeat + limit)
// is stored, or "" when nothing does. An outage that began before then
// explains it — the agent keeps what it sends in its spool, or the server
// in its queue — until the node has had a silence limit since the outage
// ended to be heard again (agents back off for up to ten seconds, then
// replay). So does a message
// received before then and not yet handled: the heartbeat may be queued
// behind it — or in the agent's spool, if the queue filled up and the
// agent is backing off (the queue then still holds what it took before).
// It depends on the queue, the outages and now alone, not on when a
// replica last looked, so every replica judges a node alike.
func (b *backlogView) serverCause(lastHeartbeat time.Time, limit time.Duration, now time.Time) string {
	if b == nil {
		return ""
	}
	due := lastHeartbeat.Add(limit)
	for _, o := range b.Outages {
		if o.Cause != "" && o.Since.Before(due) && (o.Until.IsZero() || now.Before(o.Until.Add(limit))) {
			return o.Cause
		}
	}
	if b.Pending > 0 && b.OldestPending.Before(due) {
		return "the server is behind on agent messages (queued, or held in agents' spools while its queue is full)"
	}
	return ""
}

// dropWindow is the span drop rates are judged over.
const dropWindow = time.Minute

// state is the Monitor's bookkeeping kept with each node.
type state struct {
	// Samples are drop counters by source on the agent's clock, oldest
	// first, spanning a little more than dropWindow.
	Samples []sample  `json:"samples,omitempty"`
	Started time.Time `json:"started,omitzero"`
	// Enrolled is when the node was registered before its first heartbeat.
	Enrolled time.Time `json:"enrolled,omitzero"`
	// Dropped is the loss within dropWindow up to the latest heartbeat, by source.
	Dropped map[string]uint64 `json:"dropped,omitempty"`
	// Held is the time of the heartbeat kept in the row, so a new one is
	// compared without decoding it.
	Held time.Time `json:"held,omitzero"`
	// IntervalSeconds is the held heartbeat's announced interval, so a
	// sweep knows a node's silence limit without decoding it.
	IntervalSeconds int64 `json:"intervalSeconds,omitempty"`
}

type sample struct {
	T     time.Time         `json:"t"`
	Drops map[string]uint64 `json:"d,omitempty"`
}

const maxSamples = 256

// sampleEvery thins the drop history: an agent reporting every second
// keeps a dozen samples a minute, not sixty (each heartbeat decodes them).
// The loss "in the last minute" is then judged over 60 to 65 seconds.
const sampleEvery = 5 * time.Second

// observeDrops folds a heartbeat's counters into the samples and returns
// the loss within dropWindow by source.
func (s *state) observeDrops(h *Heartbeat) {
	restarted := !h.Started.Equal(s.Started)
	if !restarted && len(s.Samples) > 0 {
		last := s.Samples[len(s.Samples)-1].Drops
		for k, v := range last {
			if h.Drops[k] < v {
				restarted = true // counters went back: a new agent process
			}
		}
	}
	if restarted {
		s.Samples, s.Started = nil, h.Started
		// Drops since a start within the window all count.
		if !h.Started.IsZero() && h.Time.Sub(h.Started) <= dropWindow {
			s.Samples = []sample{{T: h.Started}}
		}
	}
	if n := len(s.Samples); n == 0 || h.Time.Sub(s.Samples[n-1].T) >= sampleEvery {
		s.Samples = append(s.Samples, sample{T: h.Time, Drops: h.Drops})
	}
	// The reference is the latest sample at least dropWindow old, else the oldest.
	ref := 0
	for i, x := range s.Samples {
		if h.Time.Sub(x.T) >= dropWindow {
			ref = i
		}
	}
	s.Samples = s.Samples[ref:]
	if len(s.Samples) > maxSamples {
		s.Samples = append(s.Samples[:1], s.Samples[len(s.Samples)-maxSamples+1:]...)
	}
	base := s.Samples[0].Drops
	s.Dropped = nil
	for k, v := range h.Drops {
		if d := v - min(v, base[k]); d > 0 {
			if s.Dropped == nil {
				s.Dropped = map[string]uint64{}
			}
			s.Dropped[k] = d
		}
	}
}

// Policy are the thresholds of evaluation.
type Policy struct {
	// NotReportingAfter is how long without a heartbeat makes a node
	// Unhealthy; 0 means three of the agent's announced intervals.
	NotReportingAfter time.Duration
	// DropThreshold is the loss within a minute tolerated before a node is
	// Unhealthy [0: any loss].
	DropThreshold uint64
}

func (p Policy) silenceLimit(h *Heartbeat) time.Duration {
	iv := DefaultInterval
	if h != nil {
		iv = h.Interval()
	}
	return p.silenceAfter(iv)
}

// silenceAfter is the silence limit of a node announcing interval iv.
func (p Policy) silenceAfter(iv time.Duration) time.Duration {
	if p.NotReportingAfter > 0 {
		return p.NotReportingAfter
	}
	return 3 * iv
}

// evaluate returns the node's status and every issue, most important first.
// h is nil for a node that never sent a heartbeat; bl is the server's
// backlog (nil: unknown). A silent node is still Unhealthy while the server
// is behind — nothing vouches for it — but the issue names the server, not
// the agent, as the likely cause. Issue texts hold nothing that changes
// from sweep to sweep, so a node's issue changes only with its cause.
func evaluate(h *Heartbeat, st *state, lastHeartbeat, now time.Time, p Policy, bl *backlogView) (string, []string) {
	var issues []string
	add := func(typ, format string, args ...any) {
		issues = append(issues, typ+":"+fmt.Sprintf(format, args...))
	}
	if h == nil {
		add(IssueNoHeartbeat, "no heartbeat since enrollment at %s", st.Enrolled.UTC().Format(time.RFC3339))
		return Unhealthy, issues
	}
	// An agent gone comes first: it is the node's most urgent issue, and
	// the first issue is the one shown.
	if h.Exit != nil {
		add(IssueExited, "agent exited with code %d: %s", h.Exit.Code, orNone(h.Exit.Reason))
	} else if limit := p.silenceLimit(h); now.Sub(lastHeartbeat) > limit {
		if why := bl.serverCause(lastHeartbeat, limit, now); why != "" {
			add(IssueServerBehind, "no heartbeat stored since %s while %s", lastHeartbeat.UTC().Format(time.RFC3339), why)
		} else {
			add(IssueNotReporting, "agent not reporting since %s", lastHeartbeat.UTC().Format(time.RFC3339))
		}
	}
	if h.Labels[ManagedLabel] == "false" {
		add(IssueExcluded, "excluded by label %s=false", ManagedLabel)
	}
	if !h.BTF {
		add(IssueNoBTF, "kernel %s lacks BTF (/sys/kernel/btf/vmlinux)", orNone(h.Kernel))
	}
	if h.SensorError != "" {
		add(IssueSensorFailed, "sensor failed to load: %s", h.SensorError)
	}
	var failed []Hook
	for _, k := range h.Hooks {
		if !k.Attached && !k.Optional {
			failed = append(failed, k)
		}
	}
	if len(failed) > 0 {
		more := ""
		if len(failed) > 1 {
			more = fmt.Sprintf(" (and %d more)", len(failed)-1)
		}
		add(IssueHookFailed, "hook %s failed to attach: %s%s", failed[0].Hook, orNone(failed[0].Error), more)
	}
	// A hook another process detached is re-attached by the agent within
	// seconds; the node stays Unhealthy for a minute so it is seen.
	for _, k := range h.Hooks {
		if !k.DetachedAt.IsZero() && h.Time.Sub(k.DetachedAt) < dropWindow {
			add(IssueHookDetached, "hook %s was detached by another process at %s (re-attached; detachments since the agent started: %d)",
				k.Hook, k.DetachedAt.UTC().Format(time.RFC3339), k.Detaches)
			break
		}
	}
	var total uint64
	var parts []string
	for _, k := range sortedKeys(st.Dropped) {
		total += st.Dropped[k]
		parts = append(parts, fmt.Sprintf("%s %d", k, st.Dropped[k]))
	}
	if total > p.DropThreshold {
		add(IssueEventsDropped, "events dropped %d in the last minute (%s)", total, strings.Join(parts, ", "))
	}
	for _, r := range h.Runtimes {
		if !r.Reachable {
			add(IssueRuntimeOffline, "container runtime unreachable at %s: %s", orNone(r.Socket), orNone(r.Error))
			break
		}
	}
	if len(issues) > 0 {
		return Unhealthy, issues
	}
	return Healthy, nil
}

func orNone(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

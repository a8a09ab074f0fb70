package storetest

import (
	"fmt"
	"time"

	"github.com/mamori-dev/mamori/internal/event"
	"github.com/mamori-dev/mamori/internal/finding"
)

// Spec describes a test finding.
type Spec struct {
	Node, Type, Actor string
	Container         string // container id; "" for a host finding
	Image, Namespace  string
	Seen              time.Time // event time [now]
	Count             int64     // cumulative count [1]
	Args              []string
}

// Finding builds a valid finding the way an agent does (finding.New):
// same Spec identity (node, type, container, actor) gives the same id.
func Finding(s Spec) *finding.Finding {
	if s.Seen.IsZero() {
		s.Seen = time.Now().UTC()
	}
	if s.Type == "" {
		s.Type = "Execution:Runtime/NewBinaryExecuted"
	}
	args := s.Args
	if args == nil {
		args = []string{s.Actor}
	}
	ev := &event.Event{Time: s.Seen, Process: event.Process{
		PID: 4242, NSPID: 7, Comm: "proc", UUID: fmt.Sprintf("00000000-0000-4000-8000-%012d", s.Seen.UnixNano()%1e12),
		Exe: s.Actor, Args: args, Cwd: "/", User: "root", Start: s.Seen.Add(-time.Second),
		Lineage: []event.Ancestor{{PID: 1, UUID: "00000000-0000-4000-8000-000000000001", Name: "init", Exe: "/sbin/init"}}}}
	if s.Container != "" {
		ev.Container = &event.Container{ID: s.Container, Name: "c-" + s.Container, Runtime: "containerd", Image: s.Image}
		if s.Namespace != "" {
			ev.Container.Pod = &event.Pod{Name: "pod-" + s.Container, Namespace: s.Namespace, UID: "uid-" + s.Container}
		}
	}
	var ctx map[string]any
	if k, ok := finding.Lookup(s.Type); ok && len(k.Context) > 0 {
		ctx = map[string]any{}
	}
	f := finding.New(s.Type, ev, finding.Agent{NodeID: s.Node, Hostname: s.Node + ".example", Version: "test"}, s.Actor, ctx)
	if k, ok := finding.Lookup(s.Type); ok && k.Intel {
		f.Service.Evidence = &finding.Evidence{ThreatIntelligenceDetails: []finding.ThreatIntel{{
			ThreatListName: "test-list", Indicator: "guarddutyc2activityb.com"}}}
	}
	// An agent creates the finding when it sees the event.
	f.CreatedAt, f.UpdatedAt = s.Seen, s.Seen
	if s.Count > 0 {
		f.Service.Count = s.Count
	}
	return f
}

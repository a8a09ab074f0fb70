package finding

import (
	"time"

	"github.com/mamori-dev/mamori/internal/event"
)

// Samples returns one sample finding of every catalogue type, marked as
// samples (title prefixed "[SAMPLE]", additionalInfo.sample true), so
// users can wire exports and dashboards before a real attack. They pass
// Validate like real findings.
func Samples(agent Agent) []*Finding {
	now := time.Now().UTC()
	out := make([]*Finding, 0, len(Catalogue))
	for i, k := range Catalogue {
		ev := &event.Event{
			Time: now,
			Process: event.Process{PID: 4242, NSPID: 7, UID: 0, EUID: 0, Comm: "sample", UUID: "00000000-0000-4000-8000-000000000001",
				ParentUUID: "00000000-0000-4000-8000-000000000000", Exe: "/usr/bin/sample", Args: []string{"sample", "--demo"},
				Cwd: "/", User: "root", Start: now.Add(-time.Minute),
				Lineage: []event.Ancestor{{PID: 4241, UUID: "00000000-0000-4000-8000-000000000000", Name: "sh", Exe: "/bin/sh",
					Args: []string{"sh"}, Start: now.Add(-2 * time.Minute)}}},
		}
		if i%2 == 0 {
			ev.Container = &event.Container{ID: "0000000000000000000000000000000000000000000000000000000000sample",
				Name: "sample-container", Runtime: "containerd", Image: "registry.example.com/sample:1.0",
				Pod: &event.Pod{Name: "sample-pod", Namespace: "default", UID: "00000000-0000-4000-8000-0000000000aa"}}
		}
		f := New(k.Type, ev, agent, "sample", map[string]any{"sample": true})
		f.Title = "[SAMPLE] " + f.Title
		f.Service.AdditionalInfo.Sample = true
		out = append(out, f)
	}
	return out
}

package finding

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/mamori-dev/mamori/internal/event"
)

var agent = Agent{NodeID: "node-1", Version: "test"}

func TestCatalogueHasTheReference46(t *testing.T) {
	n := 0
	for _, k := range Catalogue {
		if k.Reference {
			n++
		}
		if k.Title == "" || k.Description == "" || k.Tactic == "" || k.Technique == "" {
			t.Errorf("%s lacks title, description or MITRE mapping", k.Type)
		}
	}
	if n != 46 {
		t.Fatalf("%d reference types, want 46", n)
	}
}

func TestSamplesValidate(t *testing.T) {
	ss := Samples(agent)
	if len(ss) != len(Catalogue) {
		t.Fatalf("%d samples for %d types", len(ss), len(Catalogue))
	}
	for _, f := range ss {
		if err := Validate(f); err != nil {
			t.Errorf("%s: %v", f.Type, err)
		}
		if !strings.HasPrefix(f.Title, "[SAMPLE] ") || !f.Service.AdditionalInfo.Sample {
			t.Errorf("%s is not marked as a sample", f.Type)
		}
		b, _ := json.Marshal(f)
		for _, field := range []string{`"resourceType"`, `"runtimeDetails"`, `"eventFirstSeen"`, `"agentDetails"`} {
			if !strings.Contains(string(b), field) {
				t.Errorf("%s JSON lacks %s", f.Type, field)
			}
		}
	}
}

func TestValidateRejects(t *testing.T) {
	f := Samples(agent)[0]
	f.ID, f.Severity, f.Resource.ResourceType = "x", 11, "Planet"
	err := Validate(f)
	for _, want := range []string{"id", "severity", "resourceType"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not name %s", err, want)
		}
	}
}

func TestAggregationKeepsIDAndCounts(t *testing.T) {
	ev := &event.Event{Time: time.Unix(100, 0), Process: event.Process{PID: 1, UUID: "u", Exe: "/tmp/x"},
		Container: &event.Container{ID: "c1", Runtime: "podman"}}
	a := NewAggregator(2, time.Hour)
	f1 := New("Execution:Runtime/NewBinaryExecuted", ev, agent, "", nil)
	if a.Observe(f1) == nil {
		t.Fatal("first occurrence not new")
	}
	ev2 := *ev
	ev2.Time = time.Unix(200, 0)
	f2 := New("Execution:Runtime/NewBinaryExecuted", &ev2, agent, "", nil)
	if f2.ID != f1.ID {
		t.Fatal("same activity, different id")
	}
	if a.Observe(f2) != nil {
		t.Fatal("repeat reported as new")
	}
	if got := a.Flush(time.Now(), false); len(got) != 0 {
		t.Fatal("update emitted before its interval")
	}
	up := a.Flush(time.Now(), true)
	if len(up) != 1 || up[0].Service.Count != 2 || !up[0].Service.EventLastSeen.Equal(time.Unix(200, 0)) {
		t.Fatalf("merged finding %+v", up)
	}
	// Another container is another finding; a full aggregator evicts.
	ev3 := *ev
	ev3.Container = &event.Container{ID: "c2", Runtime: "podman"}
	if New("Execution:Runtime/NewBinaryExecuted", &ev3, agent, "", nil).ID == f1.ID {
		t.Fatal("different resources share an id")
	}
	a.Observe(New("Execution:Runtime/NewBinaryExecuted", &ev3, agent, "", nil))
	a.Observe(New("Execution:Runtime/NewBinaryExecuted", &ev3, agent, "/other", nil))
	if st := a.Stats(); st.Findings != 2 || st.Evicted != 1 {
		t.Fatalf("stats %+v", st)
	}
}

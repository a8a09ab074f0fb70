package finding

import (
	"encoding/json"
	"fmt"
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

func TestCatalogueDeclaresContextAndIntel(t *testing.T) {
	intel := 0
	for _, k := range Catalogue {
		if k.Context == nil {
			t.Errorf("%s declares no context keys", k.Type)
		}
		if k.Intel {
			intel++
		}
	}
	// 5 IP types, the Tor relay, 7 !DNS types, 4 reputation types and the
	// two hash types come from threat intel.
	if intel != 19 {
		t.Errorf("%d intel types, want 19", intel)
	}
}

func TestValidateContextKeysAndEvidence(t *testing.T) {
	ev := &event.Event{Time: time.Unix(100, 0), Process: event.Process{PID: 1, UUID: "u", Exe: "/bin/x"}}
	f := New("PrivilegeEscalation:Runtime/DockerSocketAccessed", ev, agent, "", map[string]any{"socketPath": "/run/docker.sock", "result": "EPERM"})
	if err := Validate(f); err != nil {
		t.Fatalf("declared keys refused: %v", err)
	}
	f.Service.RuntimeDetails.Context["sockPath"] = "typo"
	if err := Validate(f); err == nil || !strings.Contains(err.Error(), "context.sockPath") {
		t.Errorf("undeclared context key accepted: %v", err)
	}
	g := New("Backdoor:Runtime/C&CActivity.B!DNS", ev, agent, "evil.example", map[string]any{"domain": "evil.example"})
	if err := Validate(g); err == nil || !strings.Contains(err.Error(), "evidence") {
		t.Errorf("intel finding without evidence accepted: %v", err)
	}
	c := New("Custom:Runtime/Anything", ev, agent, "", map[string]any{"whatever": 1})
	if err := Validate(c); err != nil {
		t.Errorf("custom type with its own context refused: %v", err)
	}
}

// The id depends on type, node, container and actor only: not on time,
// pid or process uuid, so repeats by new processes merge.
func TestIDStability(t *testing.T) {
	mk := func(typ, node, ctr, exe string, pid uint32, at int64) string {
		ev := &event.Event{Time: time.Unix(at, 0), Process: event.Process{PID: pid, UUID: fmt.Sprint("u", pid), Exe: exe}}
		if ctr != "" {
			ev.Container = &event.Container{ID: ctr, Runtime: "podman"}
		}
		return New(typ, ev, Agent{NodeID: node}, "", nil).ID
	}
	base := mk("Execution:Runtime/NewBinaryExecuted", "n1", "c1", "/tmp/x", 10, 1)
	if got := mk("Execution:Runtime/NewBinaryExecuted", "n1", "c1", "/tmp/x", 99, 5000); got != base {
		t.Error("pid or time changed the id")
	}
	for what, id := range map[string]string{
		"type":      mk("Execution:Runtime/SuspiciousTool", "n1", "c1", "/tmp/x", 10, 1),
		"node":      mk("Execution:Runtime/NewBinaryExecuted", "n2", "c1", "/tmp/x", 10, 1),
		"container": mk("Execution:Runtime/NewBinaryExecuted", "n1", "c2", "/tmp/x", 10, 1),
		"host":      mk("Execution:Runtime/NewBinaryExecuted", "n1", "", "/tmp/x", 10, 1),
		"actor":     mk("Execution:Runtime/NewBinaryExecuted", "n1", "c1", "/tmp/y", 10, 1),
	} {
		if id == base {
			t.Errorf("a different %s kept the id", what)
		}
	}
	// Fields are separated: ("a|b", "") and ("a", "b|") must not collide.
	if Key(&Finding{Type: "T", Resource: Resource{ContainerDetails: &ContainerDetails{ID: "x|"}}}, "y") ==
		Key(&Finding{Type: "T", Resource: Resource{ContainerDetails: &ContainerDetails{ID: "x"}}}, "|y") {
		t.Error("dedup keys collide across field boundaries")
	}
}

// Eviction forgets the least recently seen finding, not the oldest
// created, and the findings handed out are copies.
func TestAggregatorLRUAndCopies(t *testing.T) {
	a := NewAggregator(2, time.Hour)
	mk := func(actor string) *Finding {
		ev := &event.Event{Time: time.Unix(1, 0), Process: event.Process{PID: 1, UUID: "u", Exe: "/bin/x"}}
		return New("Execution:Runtime/SuspiciousTool", ev, agent, actor, nil)
	}
	first := a.Observe(mk("a"))
	a.Observe(mk("b"))
	a.Observe(mk("a")) // a is now the most recently seen
	a.Observe(mk("c")) // evicts b
	if a.Observe(mk("a")) != nil {
		t.Error("a was evicted although b was seen less recently")
	}
	if a.Observe(mk("b")) == nil {
		t.Error("b was kept beyond capacity")
	}
	first.Service.Count = 1000
	for _, f := range a.Flush(time.Now(), true) {
		if f.Service.Count >= 1000 {
			t.Error("a caller's copy changed the held finding")
		}
	}
	st := a.Stats()
	if st.Findings != 2 || st.New != 4 || st.Merged != 2 || st.Evicted != 2 {
		t.Errorf("stats %+v", st)
	}
}

// A finding raised at exec goes out before its executable is hashed;
// AddHash fills the held finding, which the next Flush hands out with its
// count unchanged, and leaves copies already handed out alone.
func TestAggregatorAddHash(t *testing.T) {
	a := NewAggregator(10, time.Hour)
	ev := &event.Event{Time: time.Unix(1, 0), Process: event.Process{PID: 7, UUID: "p7", Exe: "/tmp/dropped"}}
	sent := a.Observe(New("Execution:Runtime/NewBinaryExecuted", ev, agent, "", nil))
	other := &event.Event{Time: time.Unix(1, 0), Process: event.Process{PID: 8, UUID: "p8", Exe: "/tmp/other"}}
	a.Observe(New("Execution:Runtime/NewBinaryExecuted", other, agent, "", nil))
	a.Flush(time.Now(), true)
	// The same process and path, but another file (replaced and run again).
	replaced := &event.Event{Time: time.Unix(1, 0), Process: event.Process{PID: 9, UUID: "p9", Exe: "/tmp/x", ExeImage: "2049:100:1:1"}}
	a.Observe(New("Execution:Runtime/ReverseShell", replaced, agent, "", nil))
	if a.AddHash("p9", "/tmp/x", "2049:200:5:5", "dd44") != 0 {
		t.Error("a hash of another file at the same path was taken")
	}
	if a.AddHash("p9", "/tmp/x", "2049:100:1:1", "ee55") != 1 {
		t.Error("the hash of the very file was not taken")
	}
	a.Flush(time.Now(), true)
	if n := a.AddHash("p7", "/tmp/dropped", "", "aa11"); n != 1 {
		t.Fatalf("AddHash filled %d findings, want 1", n)
	}
	if a.AddHash("p7", "/tmp/dropped", "", "bb22") != 0 {
		t.Error("a known hash was replaced")
	}
	if a.AddHash("p8", "/tmp/another-image", "", "cc33") != 0 {
		t.Error("a hash of another image of the process was taken")
	}
	if sent.Service.RuntimeDetails.Process.ExecutableSha256 != "" {
		t.Error("the copy handed out earlier changed")
	}
	out := a.Flush(time.Now(), false) // within UpdateEvery of the last emission: still sent
	if len(out) != 1 || out[0].Service.RuntimeDetails.Process.ExecutableSha256 != "aa11" || out[0].Service.Count != 1 {
		t.Fatalf("flushed %+v, want the one finding with its hash and count 1", out)
	}
}

// The terminal line names a host as the CLI's table does (its hostname),
// and escapes what a hostile host or process could put in it.
func TestLineNamesTheHost(t *testing.T) {
	ev := &event.Event{Time: time.Unix(1, 0), Process: event.Process{PID: 3, UUID: "u3", Exe: "/bin/x\x1b[2J"}}
	l := Line(New("Execution:Runtime/SuspiciousTool", ev, Agent{NodeID: "node-1", Hostname: "web-1"}, "", nil), true)
	if !strings.Contains(l, "host web-1 ") || strings.Contains(l, "node-1") {
		t.Fatalf("line %q", l)
	}
	l = Line(New("Execution:Runtime/SuspiciousTool", ev, Agent{NodeID: "node-1", Hostname: "web-1\x1b]0;x\x07"}, "", nil), true)
	if !strings.Contains(l, "host \"web-1") || strings.ContainsAny(l, "\x1b\x07") {
		t.Fatalf("hostile names: line %q", l)
	}
}

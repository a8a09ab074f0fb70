package detect

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/cel-go/common/types"

	"github.com/mamori-dev/mamori/internal/event"
	"github.com/mamori-dev/mamori/internal/finding"
)

// EventMap must show rules what `mamori events --json` shows users: for
// an event with every field set, the two agree key for key. A field
// added to internal/event fails here until EventMap has it.
func TestEventMapMatchesJSON(t *testing.T) {
	ev := fullEvent()
	fromJSON := jsonTree(t, ev)
	fromMap := jsonTree(t, EventMap(ev))
	if !reflect.DeepEqual(fromJSON, fromMap) {
		diffTrees(t, "event", fromJSON, fromMap)
	}
}

func jsonTree(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func diffTrees(t *testing.T, at string, want, got any) {
	t.Helper()
	wm, ok1 := want.(map[string]any)
	gm, ok2 := got.(map[string]any)
	if ok1 && ok2 {
		for k, v := range wm {
			if g, ok := gm[k]; !ok {
				t.Errorf("%s.%s is in the JSON but not in EventMap", at, k)
			} else {
				diffTrees(t, at+"."+k, v, g)
			}
		}
		for k := range gm {
			if _, ok := wm[k]; !ok {
				t.Errorf("%s.%s is in EventMap but not in the JSON", at, k)
			}
		}
		return
	}
	wl, ok1 := want.([]any)
	gl, ok2 := got.([]any)
	if ok1 && ok2 && len(wl) == len(gl) {
		for i := range wl {
			diffTrees(t, fmt.Sprintf("%s[%d]", at, i), wl[i], gl[i])
		}
		return
	}
	if !reflect.DeepEqual(want, got) {
		t.Errorf("%s: JSON has %v, EventMap %v", at, want, got)
	}
}

func compile(t *testing.T, src string) *Rule {
	t.Helper()
	rs, err := ParseRules("t.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 1 {
		t.Fatalf("%d rules", len(rs))
	}
	return rs[0]
}

func rule(cond string) string {
	return fmt.Sprintf("rules:\n  - id: r\n    type: Custom:Runtime/R\n    condition: %q\n", cond)
}

// Every field of a present part is there, zero or not, so negations work.
func TestZeroFieldsAreVisible(t *testing.T) {
	r := compile(t, rule(`event.kind == "exec" && !event.exec.memfd && event.exec.ldPreload == "" && event.process.userId == 0`))
	ev := &event.Event{Kind: event.KindExec, Process: event.Process{PID: 1}, Exec: &event.Exec{Path: "/bin/true"}}
	if !r.Evaluate(ev) {
		t.Fatalf("rule did not match an exec with zero fields: %+v", r.Stats())
	}
}

func TestKindAndPartInference(t *testing.T) {
	for _, c := range []struct {
		cond  string
		kinds []string // nil: all
		needs []string
	}{
		{`event.kind == "exec" && event.process.name == "nc"`, []string{"exec"}, nil},
		{`"dns" == event.kind`, []string{"dns"}, nil},
		{`event.kind in ["open", "rename"] && event.file.path.startsWith("/etc/")`, []string{"open", "rename"}, []string{"file"}},
		{`event.kind == "connect" || event.kind == "accept"`, []string{"accept", "connect"}, nil},
		{`event.dns.name.endsWith(".example")`, nil, []string{"dns"}},
		{`event.exec.args.exists(a, a == "-e")`, nil, []string{"exec"}},
		{`has(event.container.pod) && event.container.pod.namespace == "kube-system"`, nil, []string{"container"}},
		{`event.container.name == "web" && event.net.remotePort == 4444`, nil, []string{"container", "net"}},
		{`event.net.remotePort == 4444 || event.dns.name == "x.example"`, nil, nil},
		{`!(event.kind == "exec")`, nil, nil},
		{`event.process.name == "sh" ? event.exec.memfd : event.exec.deleted`, nil, []string{"exec"}},
		{`!has(event.container)`, nil, nil},
		{`event["mount"].target == "/"`, nil, []string{"mount"}},
	} {
		r := compile(t, rule(c.cond))
		var kinds []string
		if got := r.Kinds(); len(got) != len(event.KindNames()) {
			for _, k := range got {
				kinds = append(kinds, k.String())
			}
			slices.Sort(kinds)
		}
		if !slices.Equal(kinds, c.kinds) || !slices.Equal(r.Needs(), c.needs) {
			t.Errorf("%s: kinds %v needs %v, want %v and %v", c.cond, kinds, r.Needs(), c.kinds, c.needs)
		}
	}
}

// The prefilter never skips an event the condition would match: each
// condition is evaluated directly on every event and compared with what
// the engine (kinds, parts, index) delivers.
func TestPrefilterIsSound(t *testing.T) {
	conds := []string{
		`event.kind == "exec" && event.process.name == "nc"`,
		`event.dns.name.endsWith(".example")`,
		`event.net.remotePort == 4444 || event.dns.name == "x.example"`,
		`!(event.exec.memfd)`,
		`!has(event.container)`,
		`has(event.container) || has(event.exec)`,
		`event.process.name == "sh" ? event.exec.memfd : true`,
		`[event.process.name].exists(n, n == "sh") || event.file.write`,
		`event.process.args.exists(a, a == "x" || event.exec.memfd)`,
		`event.process.args.all(a, event.exec.memfd)`,
		`event.kind in ["open", "exec"] && (has(event.file) || has(event.exec))`,
		`event.container.name == "web" || event.kind == "dns"`,
		`{"k": event.process.name}["k"] == "sh"`,
		`event.kind != "exec" && event.process.name == "sh"`,
		`size(event.process.lineage) == 0 || event.process.lineage[0].name == "bash"`,
		`(event.mount.target == "/" || event.kind == "exit") && event.result == 0`,
		`event.process.name == "sh" || event.process.name == "nc"`,
		`event.process.name in ["sh", "sh"] && event.kind == "exec"`,
		`!(event.process.name == "sh")`,
		`(event.process.name == "sh") == false`,
		`event.process.name == "sh" ? true : event.process.name == "cat"`,
		`event.file.path == "/x" || event.dns.name == "x.example"`,
		`event.file.path.startsWith("/") && !event.file.write`,
		`event.dns.name.endsWith(".example") || event.process.name.startsWith("mou")`,
		`event.process.name.endsWith("h") ? event.kind == "exec" : event.process.name.startsWith("c")`,
		`event.process.args.exists(a, a == "x")`,
		`event.process.args.exists(a, a == "y" || a.endsWith("x"))`,
		`"x" in event.process.args || event.kind == "dns"`,
		`event.process.args.all(a, a == "x")`,
		`event.process.args.exists_one(a, a == "x")`,
		`event.exec.args.exists(a, a.startsWith("-")) && event.process.name == "nc"`,
		`!event.process.args.exists(a, a == "x")`,
		`event.process.name == "sh" && event.process.executablePath == ""`,
		`event.process.name == "cat" || event.kind == "mount"`,
	}
	evs := []*event.Event{
		{Kind: event.KindExec, Process: event.Process{PID: 1, Comm: "nc", Args: []string{"x"}}, Exec: &event.Exec{Memfd: true}},
		{Kind: event.KindExec, Process: event.Process{PID: 1, Comm: "sh"}, Exec: &event.Exec{},
			Container: &event.Container{ID: "c", Name: "web"}},
		{Kind: event.KindDNS, Process: event.Process{PID: 1, Comm: "sh"}, DNS: &event.DNS{Name: "x.example"}},
		{Kind: event.KindConnect, Process: event.Process{PID: 1, Comm: "sh", Args: []string{"x"}}, Net: &event.Net{RemotePort: 4444}},
		{Kind: event.KindOpen, Process: event.Process{PID: 1, Comm: "sh"}, File: &event.File{Path: "/x", Write: true}},
		{Kind: event.KindOpen, Process: event.Process{PID: 1, Comm: "cat"}, File: &event.File{Path: "/x"},
			Container: &event.Container{ID: "c", Name: "web"}},
		{Kind: event.KindMount, Process: event.Process{PID: 1, Comm: "mount"}, Mount: &event.Mount{Target: "/"}},
		{Kind: event.KindExit, Process: event.Process{PID: 1, Comm: "sh", Lineage: []event.Ancestor{{Name: "bash"}}}, Exit: &event.Exit{}},
		{Kind: event.KindFork, Process: event.Process{PID: 1, Comm: "sh"}, Fork: &event.Fork{}},
	}
	for _, cond := range conds {
		r := compile(t, rule(cond))
		e := NewEngine(finding.Agent{NodeID: "n"}, nil, r)
		for i, ev := range evs {
			out, _, err := r.prg.Eval(&ruleInput{ev: ev})
			want := err == nil && out.Value() == true
			got := false
			e.Process(ev, func(*finding.Finding) { got = true })
			if got != want {
				t.Errorf("%s on event %d (%s): engine %v, direct evaluation %v", cond, i, ev.Kind, got, want)
			}
		}
	}
}

func TestValueIndex(t *testing.T) {
	for cond, want := range map[string]string{
		`event.process.name in ["nc", "ncat", "nc"] && event.kind == "exec"`:          "process.name exact [nc ncat]",
		`event.process.name == "nc" && event.process.executablePath == "/bin/nc"`:     "process.executablePath exact [/bin/nc]",
		`event.file.path == "/a" || event.file.path == "/b"`:                          "file.path exact [/a /b]",
		`event.file.path == "/a" || event.dns.name == "x"`:                            "-",
		`!(event.process.name == "nc")`:                                               "-",
		`!event.process.name.startsWith("nc")`:                                        "-",
		`event.process.name.startsWith("nc")`:                                         "process.name prefix [nc]",
		`"x.example" == event.dns.name`:                                               "dns.name exact [x.example]",
		`event.dns.name.endsWith(".a.example") || event.dns.name == "a.example"`:      "dns.name suffix [.a.example a.example]",
		`event.file.path.startsWith("/etc/") || event.file.path.endsWith(".so")`:      "-",
		`event.file.path.startsWith("/etc/") && event.file.path.endsWith("/passwd")`:  "file.path prefix [/etc/]",
		`event.file.path.startsWith("/etc/") && event.file.path == "/etc/shadow"`:     "file.path exact [/etc/shadow]",
		`event.container.image == "busybox" ? event.kind == "exec" : false`:           "-",
		`event.container.image == "a" ? true : event.container.image.startsWith("b")`: "container.image prefix [a b]",
		`(event.process.name == "sh") == false`:                                       "-",
		`event.exec.args.exists(a, a == "-e" || a.startsWith("--exec"))`:              "exec.args prefix [-e --exec]",
		`"-e" in event.process.args`:                                                  "process.args exact [-e]",
		`event.exec.args.all(a, a == "-e")`:                                           "-",
		`event.exec.args.exists_one(a, a == "-e")`:                                    "-",
		`event.exec.args.exists(a, a != "-e")`:                                        "-",
		`event.exec.args.exists(a, a == "-e" && event.process.name == "nc")`:          "exec.args exact [-e]",
		`event.process.lineage.exists(l, l.name == "sh")`:                             "-",
	} {
		f, mode, v := compile(t, rule(cond)).Index()
		got := "-"
		if f != "" {
			got = fmt.Sprintf("%s %s %v", f, mode, v)
		}
		if got != want {
			t.Errorf("%s: index %q, want %q", cond, got, want)
		}
	}
	if _, err := ParseRules("t.yaml", []byte(rule(`event.process.name == "a" && event.process.name == "b"`))); err == nil ||
		!strings.Contains(err.Error(), "can never be true") {
		t.Errorf("contradiction accepted: %v", err)
	}
}

// A rule reached through two of its values runs once.
func TestIndexedRuleRunsOncePerEvent(t *testing.T) {
	r := compile(t, rule(`event.file.path.startsWith("/etc/") || event.file.path.startsWith("/etc/ssh/")`))
	e := NewEngine(finding.Agent{NodeID: "n"}, nil, r)
	n := 0
	e.Process(&event.Event{Kind: event.KindOpen, Process: event.Process{PID: 1}, File: &event.File{Path: "/etc/ssh/sshd_config"}},
		func(*finding.Finding) { n++ })
	if n != 1 || r.Stats().Evaluations != 1 {
		t.Errorf("%d findings, %d evaluations", n, r.Stats().Evaluations)
	}
}

func TestRulesRefusedAtLoad(t *testing.T) {
	for _, c := range []struct{ src, want string }{
		{rule(`event.exec.arg.size() > 0`), `t.yaml:4: rule "r": condition: event.exec has no field "arg" (it has: args,`},
		{rule(`event.proces.name == "x"`), `event has no field "proces"`},
		{rule(`event.process.lineage[0].nme == "x"`), `event.process.lineage[] has no field "nme"`},
		{rule(`event.kind == "teleport"`), `unknown event kind "teleport"`},
		{"rules:\n  - id: r\n    type: Custom:Runtime/R\n    kinds: [connect]\n    condition: event.kind == \"exec\"\n",
			`t.yaml:5: rule "r": condition can never be true`},
		{"rules:\n  - id: r\n    type: Custom:Runtime/R\n    conditon: \"true\"\n", `t.yaml:4: rule "r": unknown key "conditon"`},
		{"rules:\n  - id: r\n    type: Custom:Runtime/Bad Name\n    condition: \"true\"\n", `t.yaml:3: rule "r": type`},
		{"rules:\n  - id: r\n    type: Custom:Runtime/R\n    condition: |\n      event.kind == \"exec\" &&\n        event.exec.path == 1 +\n", `t.yaml:7: rule "r": condition, column`},
		{"rules:\n  - id: r\n    type: Custom:Runtime/R\n    title: \"{{.process.name\"\n    condition: \"true\"\n", `t.yaml:4: rule "r": title template`},
		{"rule:\n  - id: r\n", `t.yaml:1: unknown key "rule"`},
		{"rules:\n  - just a string\n", `t.yaml:2: a rule must be a mapping`},
		{rule(`size(event.process.args)`), `want bool`},
		{rule(`event.exec.args.exists(a, event.exec.args.exists(b, event.exec.args.exists(c, a == b && b == c)))`),
			`worst-case cost`},
		// Two loops nested over argv: a process can have 4,096 (empty)
		// arguments, 16 million pairs.
		{rule(`event.exec.args.exists(a, event.exec.args.exists(b, a == b + "x"))`), `worst-case cost`},
	} {
		_, err := ParseRules("t.yaml", []byte(c.src))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q:\n got %v\nwant %s", c.src, err, c.want)
		}
	}
	// A comprehension variable called event is not the event.
	compile(t, rule(`event.process.lineage.exists(event, event.anything == "x")`))
	// A loop over args inside one over the lineage is fine.
	compile(t, rule(`event.process.lineage.exists(l, event.exec.args.exists(a, a == l.name))`))
	// Labels take any key.
	compile(t, rule(`event.container.labels.whatever == "x"`))
}

func TestTemplatesOnTheHostAndEscaping(t *testing.T) {
	r := compile(t, `rules:
  - id: t
    type: Custom:Runtime/T
    title: "{{.process.name}} in [{{.container.name}}]"
    description: "args {{.process.args}}"
    dedupKey: "{{.process.name}}"
    condition: event.kind == "exec"
`)
	var hits []Hit
	ev := &event.Event{Kind: event.KindExec, Process: event.Process{PID: 1, Comm: "evil\x1b[2J\n", Args: []string{"a\u202eb"}},
		Exec: &event.Exec{}}
	r.Detect(ev, func(h Hit) { hits = append(hits, h) })
	if len(hits) != 1 {
		t.Fatal("no hit")
	}
	h := hits[0]
	if h.Title != `evil\x1b[2J\n in []` || h.Description != `args [a\u202eb]` || h.KeyActor != `evil\x1b[2J\n` {
		t.Errorf("title %q description %q key %q", h.Title, h.Description, h.KeyActor)
	}
}

func TestRuleErrorsAreCounted(t *testing.T) {
	r := compile(t, rule(`event.container.pod.name == "x"`))
	ev := &event.Event{Kind: event.KindOpen, Process: event.Process{PID: 1}, File: &event.File{},
		Container: &event.Container{ID: "c"}}
	if r.Evaluate(ev) {
		t.Fatal("matched without a pod")
	}
	if st := r.Stats(); st.Evaluations != 1 || st.Errors != 1 || !strings.Contains(st.LastError, "pod") {
		t.Errorf("stats %+v", st)
	}
	// On the host the container part is missing: not even evaluated.
	ev.Container = nil
	r.Evaluate(ev)
	if st := r.Stats(); st.Evaluations != 1 {
		t.Errorf("evaluated without the part it needs: %+v", st)
	}
}

func TestRuleIDsUniqueAcrossFiles(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"a.yaml", "b.yml"} {
		writeFile(t, dir, f, rule(`event.kind == "exec"`))
	}
	ds, err := LoadRulesDir(dir)
	if len(ds) != 1 || err == nil || !strings.Contains(err.Error(), "b.yml:2: rule \"r\": id already used at ") {
		t.Errorf("%d rules, err %v", len(ds), err)
	}
}

// A detector that panics is contained; the others still run.
func TestPanickingDetectorIsContained(t *testing.T) {
	boom := newFn("boom", Both, []event.Kind{event.KindExec}, []string{"Custom:Runtime/Boom"},
		func(ev *event.Event, hit func(Hit)) { _ = ev.Exec.Args[5] })
	ok := newFn("ok", Both, []event.Kind{event.KindExec}, []string{"Custom:Runtime/Ok"},
		func(ev *event.Event, hit func(Hit)) { hit(Hit{Type: "Custom:Runtime/Ok"}) })
	e := NewEngine(finding.Agent{NodeID: "n"}, slog.New(slog.DiscardHandler), boom, ok)
	n := 0
	for i := 0; i < 3; i++ {
		e.Process(&event.Event{Kind: event.KindExec, Time: time.Now(), Process: event.Process{PID: 1}, Exec: &event.Exec{}},
			func(*finding.Finding) { n++ })
	}
	if st := e.Stats(); n != 3 || st.Panics != 3 || st.Detectors[0].Panics != 3 || st.Detectors[1].Hits != 3 {
		t.Errorf("findings %d, stats %+v", n, st)
	}
}

func writeFile(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// The lazy `event` rules evaluate against is the same map as EventMap,
// part by part and as a whole.
func TestLazyEventIsEventMap(t *testing.T) {
	for _, ev := range []*event.Event{fullEvent(), {Kind: event.KindOpen, Process: event.Process{PID: 3}, File: &event.File{Path: "/x"}}} {
		m := EventMap(ev)
		l := newLazyEvent(ev)
		for k, v := range m {
			got, ok := l.Find(types.String(k))
			if !ok || got.Equal(types.DefaultTypeAdapter.NativeToValue(v)) != types.True {
				t.Errorf("%s: lazy %v, map %v", k, got, v)
			}
		}
		for _, k := range partNames {
			if _, inMap := m[k]; !inMap {
				if _, ok := l.Find(types.String(k)); ok {
					t.Errorf("absent part %s found", k)
				}
			}
		}
		r := compile(t, rule(fmt.Sprintf(`size(event) == %d && event.all(k, k != "") && "process" in event && !("nope" in event)`, len(m))))
		out, _, err := r.prg.Eval(&ruleInput{ev: ev})
		if err != nil || out != types.True {
			t.Errorf("whole-map operations: %v %v", out, err)
		}
	}
}

// Rules reload without a restart: the watcher hands the new set to the
// engine, which takes it at the next event.
func TestWatchRulesReloads(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "r.yaml", rule(`event.process.name == "old"`))
	ds, err := LoadRulesDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	e := NewEngine(finding.Agent{NodeID: "n"}, nil, ds...)
	stop := make(chan struct{})
	defer close(stop)
	go WatchRules(stop, dir, 10*time.Millisecond, e, nil)
	go func() { // stats are read from other goroutines (metrics)
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
				e.Stats()
			}
		}
	}()
	fires := func(name string) bool {
		hit := false
		e.Process(&event.Event{Kind: event.KindExec, Process: event.Process{PID: 1, Comm: name}, Exec: &event.Exec{}},
			func(*finding.Finding) { hit = true })
		return hit
	}
	if !fires("old") || fires("new") {
		t.Fatal("initial rules wrong")
	}
	time.Sleep(20 * time.Millisecond) // a distinct mtime
	writeFile(t, dir, "r.yaml", rule(`event.process.name == "new"`)+"  - id: broken\n    type: Nope\n    condition: \"true\"\n")
	deadline := time.Now().Add(3 * time.Second)
	for !fires("new") {
		if time.Now().After(deadline) {
			t.Fatal("new rules not picked up")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if fires("old") || len(e.Rules()) != 1 {
		t.Errorf("old rule still active or broken rule loaded: %d rules", len(e.Rules()))
	}
}

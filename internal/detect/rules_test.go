package detect

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/mamori-dev/mamori/internal/event"
	"github.com/mamori-dev/mamori/internal/finding"
)

const goodRules = `rules:
  - id: netcat-listener
    type: Custom:Runtime/NetcatListener
    severity: High
    title: "netcat in {{.container.name}}"
    description: "{{.process.executablePath}} listens on {{.net.localPort}}"
    kinds: [listen]
    condition: event.process.name in ["nc", "ncat"]
  - id: curl-to-metadata
    type: Discovery:Runtime/SuspiciousCommand
    kinds: [exec]
    condition: event.exec.args.exists(a, a.contains("169.254.169.254"))
`

func TestRulesCompileAndFire(t *testing.T) {
	rs, err := ParseRules("r.yaml", []byte(goodRules))
	if err != nil || len(rs) != 2 {
		t.Fatalf("rules %d, err %v", len(rs), err)
	}
	var ds []Detector
	for _, r := range rs {
		ds = append(ds, r)
	}
	e := NewEngine(finding.Agent{NodeID: "n"}, nil, ds...)
	ev := &event.Event{Kind: event.KindListen, Process: event.Process{PID: 3, UUID: "u", Comm: "nc", Exe: "/usr/bin/nc"},
		Container: &event.Container{ID: "abc", Name: "web", Runtime: "podman"}, Net: &event.Net{Family: "inet", LocalPort: 4444}}
	var got []*finding.Finding
	e.Process(ev, func(f *finding.Finding) { got = append(got, f) })
	if len(got) != 1 {
		t.Fatalf("%d findings", len(got))
	}
	f := got[0]
	if f.Type != "Custom:Runtime/NetcatListener" || f.Severity != finding.High || f.Title != "netcat in web" ||
		f.Description != "/usr/bin/nc listens on 4444" || f.Service.Detector.Rule != "netcat-listener" {
		t.Fatalf("finding %+v / %+v", f, f.Service.Detector)
	}
	if err := finding.Validate(f); err != nil {
		t.Fatal(err)
	}
	// The finding says what the event was about, not only which rule.
	ctx := f.Service.RuntimeDetails.Context
	matched, _ := ctx["event"].(map[string]any)
	if net, _ := matched["net"].(map[string]any); ctx["ruleId"] != "netcat-listener" || matched["kind"] != "listen" || net == nil || net["localPort"] == nil {
		t.Fatalf("context %v", ctx)
	}
	// The same process connecting is another kind: the rule is not even run.
	ev.Kind = event.KindConnect
	got = nil
	e.Process(ev, func(f *finding.Finding) { got = append(got, f) })
	if len(got) != 0 {
		t.Fatal("rule ran on a kind it did not ask for")
	}
}

func TestMalformedRulesNameFileLineAndReason(t *testing.T) {
	src := `rules:
  - id: ok
    type: Custom:Runtime/Ok
    kinds: [exec]
    condition: event.kind == "exec"
  - id: bad-cel
    type: Custom:Runtime/Bad
    condition: event.kind ==
  - id: bad-type
    type: Nonsense
    condition: "true"
  - id: bad-kind
    type: Custom:Runtime/X
    kinds: [teleport]
    condition: "true"
  - id: bad-severity
    type: Custom:Runtime/X
    severity: extreme
    condition: "true"
  - id: ok
    type: Custom:Runtime/Dup
    condition: "true"
`
	rs, err := ParseRules("rules.yaml", []byte(src))
	if len(rs) != 1 || rs[0].ID() != "ok" {
		t.Fatalf("the good rule did not survive: %d rules", len(rs))
	}
	if err == nil {
		t.Fatal("no error for malformed rules")
	}
	for _, want := range []string{`rules.yaml:8: rule "bad-cel": condition`, `rules.yaml:10: rule "bad-type": type "Nonsense"`,
		`rules.yaml:14: rule "bad-kind": kinds`, `rules.yaml:18: rule "bad-severity": severity`,
		`rules.yaml:20: rule "ok": id already used at line 2`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if _, err := ParseRules("x.yaml", []byte("rules: [unclosed")); err == nil || !strings.Contains(err.Error(), "x.yaml") {
		t.Errorf("YAML syntax error not reported with the file: %v", err)
	}
}

// FuzzParseRules feeds the loader arbitrary files (seeds under
// testdata/fuzz): it must not panic, and for every rule that compiles the
// prefilter must agree with evaluating the condition directly.
func FuzzParseRules(f *testing.F) {
	f.Add(goodRules)
	f.Add("rules:\n  - id: a\n    type: Custom:Runtime/A\n    condition: event.x.y[0] > 3\n")
	evs := []*event.Event{
		fullEvent(),
		{Kind: event.KindExec, Process: event.Process{PID: 1, Comm: "sh"}, Exec: &event.Exec{Args: []string{"sh", "-e"}}},
		{Kind: event.KindDNS, Process: event.Process{PID: 1}, DNS: &event.DNS{Name: "x"}, Container: &event.Container{ID: "c"}},
		{Kind: event.KindOpen, Process: event.Process{PID: 1}, File: &event.File{Path: "/etc/x", Write: true}},
	}
	f.Fuzz(func(t *testing.T, src string) {
		rs, _ := ParseRules("f.yaml", []byte(src))
		for _, r := range rs {
			for _, ev := range evs {
				// kinds: is part of a rule's meaning; the rest is prefilter.
				listed := len(r.spec.Kinds) == 0
				for _, k := range r.spec.Kinds {
					kind, _ := event.ParseKind(k)
					listed = listed || kind == ev.Kind
				}
				out, _, err := r.prg.Eval(&ruleInput{ev: ev})
				direct := listed && err == nil && out.Value() == true
				if got := r.Evaluate(ev); got != direct {
					t.Fatalf("rule %q on %s: prefiltered %v, direct %v", r.spec.Condition, ev.Kind, got, direct)
				}
			}
		}
	})
}

// A hash rule that lists exec also runs on the late hash of an exec
// (exec_hashed): the only event that names a short-lived binary's hash.
// Told otherwise by its condition, or reading no hash, it does not.
func TestHashRuleSeesLateHashes(t *testing.T) {
	const sum = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	kindsOf := func(r *Rule) []string {
		var out []string
		for _, k := range r.Kinds() {
			out = append(out, k.String())
		}
		slices.Sort(out)
		return out
	}
	src := func(kinds, cond string) string {
		return fmt.Sprintf("rules:\n  - id: r\n    type: Custom:Runtime/BadHash\n    kinds: [%s]\n    condition: %q\n", kinds, cond)
	}
	for _, c := range []struct{ kinds, cond, want string }{
		{"exec", `event.process.executableSha256 == "` + sum + `"`, "exec exec_hashed"},
		{"exec, open", `event.process.executableSha256 in ["` + sum + `"]`, "exec exec_hashed open"},
		{"exec", `event.kind == "exec" && event.process.executableSha256 == "` + sum + `"`, "exec"},
		{"exec", `event.process.name == "dropper"`, "exec"},
		{"open", `event.process.executableSha256 == "` + sum + `"`, "open"},
	} {
		r := compile(t, src(c.kinds, c.cond))
		if got := strings.Join(kindsOf(r), " "); got != c.want {
			t.Errorf("kinds [%s], %s: runs on %q, want %q", c.kinds, c.cond, got, c.want)
		}
	}
	// And it fires on the late event.
	r := compile(t, src("exec", `event.process.executableSha256 == "`+sum+`"`))
	e := NewEngine(finding.Agent{NodeID: "n"}, nil, r)
	var got []*finding.Finding
	e.Process(&event.Event{Kind: event.KindExecHashed, Process: event.Process{PID: 9, UUID: "u9", Comm: "dropper",
		Exe: "/tmp/dropper", ExeSHA256: sum}}, func(f *finding.Finding) { got = append(got, f) })
	if len(got) != 1 || got[0].Type != "Custom:Runtime/BadHash" {
		t.Fatalf("findings on the late hash: %+v", got)
	}
}

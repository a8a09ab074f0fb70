package detect

import (
	"strings"
	"testing"

	"github.com/mamori-dev/mamori/internal/event"
)

// Rule templates run on the dispatch goroutine for every match: loops,
// sub-templates and functions whose output size the template picks are
// refused at load, with the key named.
func TestRuleTemplatesThatCouldRunLongAreRefused(t *testing.T) {
	exp := `{{define "t0"}}x{{end}}{{define "t1"}}{{template "t0"}}{{template "t0"}}{{end}}{{template "t1"}}`
	for _, c := range []struct{ key, tpl, want string }{
		{"title", `{{range 300000000}}{{end}}x`, "range is not allowed"},
		{"description", `{{range .process.args}}{{range $.process.args}}{{.}}{{end}}{{end}}`, "range is not allowed"},
		{"title", exp, "define and block are not allowed"},
		{"dedupKey", `{{block "b" .}}x{{end}}`, "define and block are not allowed"},
		{"title", `{{printf "%999999999d" 1}}`, `function "printf" is not allowed`},
		{"title", `{{if true}}{{printf "%s" .process.name}}{{end}}`, `function "printf" is not allowed`},
		{"title", `{{with .process}}{{call .name}}{{end}}`, `function "call" is not allowed`},
	} {
		src := "rules:\n  - id: r\n    type: Custom:Runtime/R\n    condition: \"true\"\n    " + c.key + ": '" + c.tpl + "'\n"
		_, err := ParseRules("t.yaml", []byte(src))
		if err == nil || !strings.Contains(err.Error(), c.key+" template: "+c.want) {
			t.Errorf("%s %q: got %v, want %q", c.key, c.tpl, err, c.want)
		}
	}
	// What rules use stays allowed.
	r := compile(t, `rules:
  - id: ok
    type: Custom:Runtime/Ok
    title: '{{if eq .process.name "nc"}}netcat{{else}}{{.process.name}}{{end}} in {{with .container}}{{.name}}{{end}} {{index .process.args 0}} {{len .process.args}}'
    condition: event.kind == "exec"
`)
	var hits []Hit
	r.Detect(&event.Event{Kind: event.KindExec, Process: event.Process{Comm: "nc", Args: []string{"nc", "-l"}}, Exec: &event.Exec{}},
		func(h Hit) { hits = append(hits, h) })
	if len(hits) != 1 || hits[0].Title != "netcat in  nc 2" {
		t.Fatalf("hits %+v", hits)
	}
}

// A template renders at most what a finding keeps, however large the
// values it prints.
func TestRuleTemplateOutputIsCapped(t *testing.T) {
	r := compile(t, `rules:
  - id: big
    type: Custom:Runtime/Big
    title: '{{.process.args}}{{.process.args}}{{.process.args}}{{.process.args}}{{.process.args}}'
    condition: event.kind == "exec"
`)
	args := make([]string, 2000)
	for i := range args {
		args[i] = strings.Repeat("a", 100)
	}
	var hits []Hit
	r.Detect(&event.Event{Kind: event.KindExec, Process: event.Process{Comm: "x", Args: args}, Exec: &event.Exec{}},
		func(h Hit) { hits = append(hits, h) })
	if len(hits) != 1 || len(hits[0].Title) > maxRendered+len("…") || !strings.HasPrefix(hits[0].Title, "[aaaa") {
		t.Fatalf("title of %d bytes: %.40q", len(hits[0].Title), hits[0].Title)
	}
}

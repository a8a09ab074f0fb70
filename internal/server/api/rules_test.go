package api

import (
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mamori-dev/mamori/internal/server/store"
)

func TestSuppressionRulesCRUD(t *testing.T) {
	e := newEnv(t)
	fs := makeFindings(50, 2)
	e.put(fs...)
	typ := fs[0].Type
	want := 0
	for _, f := range fs {
		if f.Type == typ {
			want++
		}
	}
	req := RuleRequest{Name: "known scanner", Action: store.ActionArchive,
		Criteria: []store.Criterion{{Field: "type", Op: store.OpEq, Value: typ}}}
	var created RuleResponse
	e.must(http.StatusCreated, "POST", "/suppression-rules?applyExisting=true", ScopeWrite, req, &created)
	if created.ID == "" || created.Archived != want || created.Name != req.Name {
		t.Fatalf("created %+v, want %d archived", created, want)
	}
	p := e.list(url.Values{"suppressedBy": {created.ID}, "limit": {"100"}})
	if p.Total != want {
		t.Fatalf("%d findings suppressed by the rule, want %d", p.Total, want)
	}
	var got store.Rule
	e.must(http.StatusOK, "GET", "/suppression-rules/"+created.ID, ScopeRead, nil, &got)
	if got.Name != req.Name || len(got.Criteria) != 1 {
		t.Fatalf("got %+v", got)
	}
	filter := RuleRequest{Name: "prod high", Action: store.ActionNoop, Rank: 1,
		Criteria: []store.Criterion{{Field: "severity", Op: store.OpGt, Value: 7}}}
	e.must(http.StatusCreated, "POST", "/suppression-rules", ScopeWrite, filter, nil)
	var list struct{ Rules []store.Rule }
	e.must(http.StatusOK, "GET", "/suppression-rules", ScopeRead, nil, &list)
	if len(list.Rules) != 2 {
		t.Fatalf("%d rules", len(list.Rules))
	}
	req.Name, req.Description = "known scanner (renamed)", "the nightly scan"
	var upd RuleResponse
	e.must(http.StatusOK, "PUT", "/suppression-rules/"+created.ID, ScopeWrite, req, &upd)
	if upd.Name != req.Name || upd.ID != created.ID || !upd.UpdatedAt.After(created.CreatedAt.Add(-time.Second)) {
		t.Fatalf("updated %+v", upd)
	}
	for _, bad := range []any{
		RuleRequest{Name: "x", Action: "DELETE", Criteria: req.Criteria},
		RuleRequest{Name: "x", Action: store.ActionArchive, Criteria: []store.Criterion{{Field: "type", Op: "like", Value: "x"}}},
		`{"name":"x","action":"NOOP","criteria":[],"color":"red"}`,
		// A typo in the field would archive every new finding.
		RuleRequest{Name: "x", Action: store.ActionArchive, Criteria: []store.Criterion{{Field: "resource.containerDetails.imagee", Op: store.OpNeq, Value: "trusted/app"}}},
		RuleRequest{Name: "x", Action: store.ActionArchive, Criteria: []store.Criterion{{Field: "service.count", Op: store.OpGt, Value: "abc"}}},
	} {
		if code, b := e.do("POST", "/suppression-rules", e.tokens[ScopeWrite], bad); code != http.StatusBadRequest {
			t.Errorf("rule %v: %d %s", bad, code, b)
		}
	}
	e.must(http.StatusNoContent, "DELETE", "/suppression-rules/"+created.ID, ScopeWrite, nil, nil)
	e.must(http.StatusNotFound, "GET", "/suppression-rules/"+created.ID, ScopeRead, nil, nil)
	e.must(http.StatusNotFound, "PUT", "/suppression-rules/"+created.ID, ScopeWrite, req, nil)
}

func TestDistribution(t *testing.T) {
	e := newEnv(t)
	rules := filepath.Join(e.dir, "rules")
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(rules, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var empty Distribution
	e.must(http.StatusOK, "GET", "/distribution/rules", ScopeAgent, nil, &empty)
	if len(empty.Files) != 0 || empty.Version == "" {
		t.Fatalf("empty %+v", empty)
	}
	write("a.yaml", "- id: a\n")
	write("b.yml", "- id: b\n")
	write("notes.txt", "not a rule")
	write(".hidden.yaml", "- id: h\n")
	var d Distribution
	e.must(http.StatusOK, "GET", "/distribution/rules", ScopeAgent, nil, &d)
	if len(d.Files) != 2 || d.Files[0].Name != "a.yaml" || d.Files[0].Content != "- id: a\n" || d.Version == empty.Version {
		t.Fatalf("rules %+v", d)
	}
	// Unchanged: 304 on the agent's ETag.
	req, _ := http.NewRequest("GET", e.srv.URL+Prefix+"/distribution/rules", nil)
	req.Header.Set("Authorization", "Bearer "+e.tokens[ScopeAgent])
	req.Header.Set("If-None-Match", `"`+d.Version+`"`)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotModified {
		t.Fatalf("If-None-Match on the current version: %d", resp.StatusCode)
	}
	// A change makes a new version (same size, so only content and time differ).
	time.Sleep(10 * time.Millisecond)
	write("a.yaml", "- id: c\n")
	var d2 Distribution
	e.must(http.StatusOK, "GET", "/distribution/rules", ScopeAgent, nil, &d2)
	if d2.Version == d.Version || d2.Files[0].Content != "- id: c\n" {
		t.Fatalf("change not seen: %+v", d2)
	}
	// A ConfigMap volume's layout: names linking into ..data. Links to
	// regular files are distributed; a link to anything else is not.
	if err := os.Mkdir(filepath.Join(rules, "..data"), 0o700); err != nil {
		t.Fatal(err)
	}
	write("..data/cm.yaml", "- id: cm\n")
	for name, target := range map[string]string{"cm.yaml": "..data/cm.yaml", "dev.yaml": "/dev/zero", "gone.yaml": "nowhere.yaml"} {
		if err := os.Symlink(target, filepath.Join(rules, name)); err != nil {
			t.Fatal(err)
		}
	}
	var d3 Distribution
	e.must(http.StatusOK, "GET", "/distribution/rules", ScopeAgent, nil, &d3)
	if len(d3.Files) != 3 || d3.Files[1].Name != "b.yml" || d3.Files[2].Name != "cm.yaml" || d3.Files[2].Content != "- id: cm\n" {
		t.Fatalf("rules with links %+v", d3.Files)
	}
	// Intel takes every file; binary content travels as base64.
	if err := os.WriteFile(filepath.Join(e.dir, "intel", "hashes.bin"), []byte{0xff, 0xfe, 0x00}, 0o600); err != nil {
		t.Fatal(err)
	}
	var intel Distribution
	e.must(http.StatusOK, "GET", "/distribution/intel", ScopeRead, nil, &intel)
	if len(intel.Files) != 1 || intel.Files[0].Encoding != "base64" || intel.Files[0].Content != "//4A" {
		t.Fatalf("intel %+v", intel)
	}
	e.must(http.StatusNotFound, "GET", "/distribution/secrets", ScopeAgent, nil, nil)
	// An agent token reaches nothing else.
	e.must(http.StatusForbidden, "GET", "/findings", ScopeAgent, nil, nil)
}

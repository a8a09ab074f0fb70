package api

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mamori-dev/mamori/internal/finding"
	"github.com/mamori-dev/mamori/internal/server/store"
)

type page struct {
	Findings []*store.Record `json:"findings"`
	Total    int             `json:"total"`
	Next     string          `json:"next"`
}

func (e *env) list(q url.Values) page {
	e.t.Helper()
	var p page
	e.must(http.StatusOK, "GET", "/findings?"+q.Encode(), ScopeRead, nil, &p)
	return p
}

func TestListFilterSortPage(t *testing.T) {
	e := newEnv(t)
	fs := makeFindings(230, 3)
	e.put(fs...)

	// Walk every page by cursor: each finding once, in severity order.
	var seen []*store.Record
	q := url.Values{"sort": {"severity"}, "order": {"asc"}, "limit": {"40"}}
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("paging does not end")
		}
		p := e.list(q)
		if p.Total != len(fs) {
			t.Fatalf("total %d, want %d", p.Total, len(fs))
		}
		seen = append(seen, p.Findings...)
		if p.Next == "" {
			break
		}
		q.Set("cursor", p.Next)
	}
	if len(seen) != len(fs) {
		t.Fatalf("paged through %d findings, want %d", len(seen), len(fs))
	}
	ids := map[string]bool{}
	for i, r := range seen {
		if ids[r.ID] {
			t.Fatalf("finding %s on two pages", r.ID)
		}
		ids[r.ID] = true
		if i > 0 && r.Severity < seen[i-1].Severity {
			t.Fatalf("not sorted by severity at %d: %v after %v", i, r.Severity, seen[i-1].Severity)
		}
	}

	// Filters, checked against the same predicate applied in Go.
	count := func(pred func(f *finding.Finding) bool) int {
		n := 0
		for _, f := range fs {
			if pred(f) {
				n++
			}
		}
		return n
	}
	cases := []struct {
		q    url.Values
		pred func(f *finding.Finding) bool
	}{
		{url.Values{"severity": {"High"}}, func(f *finding.Finding) bool { return f.SeverityLabel == "High" }},
		{url.Values{"severityLabel": {"medium"}}, func(f *finding.Finding) bool { return f.SeverityLabel == "Medium" }},
		{url.Values{"severity": {"Low"}}, func(f *finding.Finding) bool { return f.SeverityLabel == "Low" }},
		{url.Values{"type": {"Execution:Runtime/ReverseShell"}}, func(f *finding.Finding) bool { return f.Type == "Execution:Runtime/ReverseShell" }},
		{url.Values{"type": {"Execution:*"}}, func(f *finding.Finding) bool { return len(f.Type) > 10 && f.Type[:10] == "Execution:" }},
		{url.Values{"node": {"node-1"}}, func(f *finding.Finding) bool { return f.Resource.InstanceDetails.NodeID == "node-1" }},
		{url.Values{"sample": {"true"}}, func(f *finding.Finding) bool { return f.Service.AdditionalInfo.Sample }},
		{url.Values{"minSeverity": {"8"}}, func(f *finding.Finding) bool { return f.Severity >= 8 }},
		{url.Values{"image": {"registry.example"}}, func(f *finding.Finding) bool {
			return f.Resource.ContainerDetails != nil && f.Resource.ContainerDetails.Image == "registry.example.com/sample:1.0"
		}},
		{url.Values{"filter": {"service.count:gt:4", "resource.resourceType:eq:Instance"}}, func(f *finding.Finding) bool {
			return f.Service.Count > 4 && f.Resource.ResourceType == "Instance"
		}},
		{url.Values{"tactic": {"Execution"}, "namespace": {"default"}}, func(f *finding.Finding) bool {
			return f.Service.Detector.Tactic == "Execution" && f.Resource.KubernetesDetails != nil
		}},
	}
	for _, c := range cases {
		want := count(c.pred)
		if want == 0 {
			t.Fatalf("filter %v selects nothing: a useless case", c.q)
		}
		c.q.Set("limit", "1000")
		p := e.list(c.q)
		if p.Total != want || len(p.Findings) != want {
			t.Errorf("filter %v: total %d, %d findings, want %d", c.q, p.Total, len(p.Findings), want)
		}
		for _, r := range p.Findings {
			if !c.pred(r.Finding) {
				t.Errorf("filter %v returned %s (%s)", c.q, r.ID, r.Type)
			}
		}
	}

	// Offset paging matches cursor paging.
	a := e.list(url.Values{"sort": {"eventLastSeen"}, "limit": {"10"}, "offset": {"20"}})
	b := e.list(url.Values{"sort": {"eventLastSeen"}, "limit": {"30"}})
	for i := range a.Findings {
		if a.Findings[i].ID != b.Findings[20+i].ID {
			t.Fatalf("offset page differs at %d", i)
		}
	}
	if p := e.list(url.Values{"total": {"false"}, "limit": {"1"}}); p.Total != -1 || len(p.Findings) != 1 {
		t.Errorf("total=false: %d, %d findings", p.Total, len(p.Findings))
	}

	for _, bad := range []string{"limit=0", "limit=5000", "sort=title", "order=up", "severity=Huge", "archived=maybe",
		"filter=type", "filter=type:like:x", "bogus=1", "offset=-1", "minSeverity=11",
		"filter=bogus:neq:1", "filter=service.count:gt:abc", "filter=resource.containerDetails:eq:x"} {
		if code, b := e.do("GET", "/findings?"+bad, e.tokens[ScopeRead], nil); code != http.StatusBadRequest {
			t.Errorf("%s: %d %s", bad, code, b)
		}
	}
}

func TestGetArchiveUnarchive(t *testing.T) {
	e := newEnv(t)
	fs := makeFindings(20, 1)
	e.put(fs...)
	var rec store.Record
	e.must(http.StatusOK, "GET", "/findings/"+fs[3].ID, ScopeRead, nil, &rec)
	if rec.ID != fs[3].ID || rec.Type != fs[3].Type || rec.Cluster != "c1" || rec.Revision < 1 {
		t.Fatalf("got %+v", rec)
	}
	e.must(http.StatusNotFound, "GET", "/findings/ffffffffffffffffffffffffffffffff", ScopeRead, nil, nil)

	var ch ArchiveResponse
	e.must(http.StatusOK, "POST", "/findings/archive", ScopeWrite, ArchiveRequest{IDs: []string{fs[0].ID, fs[1].ID, fs[1].ID}}, &ch)
	if ch.Changed != 2 {
		t.Fatalf("archived %d", ch.Changed)
	}
	if p := e.list(url.Values{"archived": {"true"}}); p.Total != 2 {
		t.Fatalf("archived list %d", p.Total)
	}
	e.must(http.StatusOK, "POST", "/findings/unarchive", ScopeWrite, ArchiveRequest{IDs: []string{fs[0].ID}}, &ch)
	if ch.Changed != 1 {
		t.Fatalf("unarchived %d", ch.Changed)
	}
	// By criteria: everything of one type.
	e.must(http.StatusOK, "POST", "/findings/archive", ScopeWrite,
		ArchiveRequest{Criteria: []store.Criterion{{Field: "type", Op: store.OpEq, Value: fs[5].Type}}}, &ch)
	if ch.Changed < 1 {
		t.Fatalf("archive by criteria changed %d", ch.Changed)
	}
	var got store.Record
	e.must(http.StatusOK, "GET", "/findings/"+fs[5].ID, ScopeRead, nil, &got)
	if !got.Service.Archived {
		t.Fatal("archive by criteria did not archive")
	}
	for _, bad := range []any{ArchiveRequest{}, `{"ids":["x"],"criteria":[{"field":"type","op":"eq","value":"x"}]}`,
		`{"ids":"x"}`, `{"criteria":[{"field":"type","op":"like","value":"x"}]}`} {
		if code, b := e.do("POST", "/findings/archive", e.tokens[ScopeWrite], bad); code != http.StatusBadRequest {
			t.Errorf("archive %v: %d %s", bad, code, b)
		}
	}
	if code, _ := e.do("POST", "/findings/unarchive", e.tokens[ScopeWrite], `{"criteria":[{"field":"type","op":"eq","value":"x"}]}`); code != http.StatusBadRequest {
		t.Errorf("unarchive by criteria accepted: %d", code)
	}
}

func TestSampleFindings(t *testing.T) {
	e := newEnv(t)
	var out SamplesResponse
	e.must(http.StatusCreated, "POST", "/sample-findings", ScopeWrite, nil, &out)
	if out.Created != len(finding.Catalogue) {
		t.Fatalf("created %d samples, catalogue has %d types", out.Created, len(finding.Catalogue))
	}
	p := e.list(url.Values{"sample": {"true"}, "limit": {"1000"}})
	if p.Total != len(finding.Catalogue) {
		t.Fatalf("stored samples %d", p.Total)
	}
	types := map[string]bool{}
	for _, r := range p.Findings {
		types[r.Type] = true
		if r.Title[:9] != "[SAMPLE] " {
			t.Errorf("sample title %q", r.Title)
		}
	}
	if len(types) != len(finding.Catalogue) {
		t.Fatalf("%d distinct types", len(types))
	}
	e.must(http.StatusCreated, "POST", "/sample-findings", ScopeWrite, SamplesRequest{Types: []string{"Execution:Runtime/ReverseShell"}}, &out)
	if out.Created != 1 {
		t.Fatalf("one type: %d", out.Created)
	}
	e.must(http.StatusBadRequest, "POST", "/sample-findings", ScopeWrite, SamplesRequest{Types: []string{"Nope"}}, nil)
	var st store.Stats
	e.must(http.StatusOK, "GET", "/findings/statistics", ScopeRead, nil, &st)
	if st.Findings != len(finding.Catalogue) {
		t.Fatalf("stats %+v", st)
	}
	var kinds struct{ Types []finding.Kind }
	e.must(http.StatusOK, "GET", "/finding-types", ScopeRead, nil, &kinds)
	if len(kinds.Types) != len(finding.Catalogue) {
		t.Fatalf("%d types", len(kinds.Types))
	}
}

// TestSubmitHook checks samples go through the server's ingest path when
// one is given.
func TestSubmitHook(t *testing.T) {
	e := newEnv(t)
	var got []*finding.Finding
	e.api.opt.Submit = func(ctx context.Context, fs []*finding.Finding) error { got = fs; return nil }
	e.must(http.StatusCreated, "POST", "/sample-findings", ScopeWrite, nil, nil)
	if len(got) != len(finding.Catalogue) {
		t.Fatalf("submit saw %d", len(got))
	}
	if p := e.list(url.Values{}); p.Total != 0 {
		t.Fatal("samples bypassed Submit")
	}
	e.api.opt.Submit = func(ctx context.Context, fs []*finding.Finding) error { return fmt.Errorf("disk full") }
	if code, b := e.do("POST", "/sample-findings", e.tokens[ScopeWrite], nil); code != http.StatusInternalServerError || strings.Contains(string(b), "disk full") {
		t.Fatalf("failing submit: %d %s", code, b)
	}
}

// BenchmarkFirstPage measures the first page of the findings list at
// 10,000 stored findings, the console's and the CLI's default request,
// over real HTTP and SQLite (target: under 300 ms).
func BenchmarkFirstPage(b *testing.B) {
	e := newEnv(b)
	e.put(makeFindings(10000, 20)...)
	for _, c := range []struct{ name, q string }{
		{"default", "limit=50"},
		{"filtered-sorted", "limit=50&severity=High&archived=false&sort=severity&order=desc"},
		{"no-total", "limit=50&total=false"},
	} {
		b.Run(c.name, func(b *testing.B) {
			var worst time.Duration
			for b.Loop() {
				start := time.Now()
				code, body := e.do("GET", "/findings?"+c.q, e.tokens[ScopeRead], nil)
				if code != http.StatusOK {
					b.Fatalf("%d %s", code, body)
				}
				worst = max(worst, time.Since(start))
			}
			b.ReportMetric(float64(worst.Microseconds())/1000, "worst-ms")
		})
	}
}

// TestFirstPageAt10k is the functional half of the benchmark: at 10,000
// findings the first page is right and the walk by cursor ends.
func TestFirstPageAt10k(t *testing.T) {
	if testing.Short() {
		t.Skip("stores 10,000 findings")
	}
	e := newEnv(t)
	fs := makeFindings(10000, 20)
	e.put(fs...)
	p := e.list(url.Values{"limit": {"50"}, "sort": {"createdAt"}})
	if p.Total != 10000 || len(p.Findings) != 50 || p.Next == "" {
		t.Fatalf("total %d, %d findings, next %q", p.Total, len(p.Findings), p.Next)
	}
	// Newest first: the last made finding leads.
	if p.Findings[0].ID != fs[len(fs)-1].ID {
		t.Errorf("first %s, want %s", p.Findings[0].ID, fs[len(fs)-1].ID)
	}
	n, q := 0, url.Values{"limit": {"1000"}, "sort": {"createdAt"}, "total": {"false"}}
	for {
		p := e.list(q)
		n += len(p.Findings)
		if p.Next == "" {
			break
		}
		q.Set("cursor", p.Next)
	}
	if n != 10000 {
		t.Fatalf("walked %d", n)
	}
}

// TestParseFilterTypesByField: a value takes its field's type, so an id
// of digits is compared as text and a count as a number.
func TestParseFilterTypesByField(t *testing.T) {
	for in, want := range map[string]any{
		"resource.containerDetails.id:eq:123456":          "123456",
		"title:eq:\"quoted\"":                             "quoted",
		"service.count:gt:10":                             10.0,
		"service.archived:eq:true":                        true,
		"service.runtimeDetails.context.port:eq:4444":     4444.0,
		"service.runtimeDetails.context.port:eq:\"4444\"": "4444",
	} {
		c, err := ParseFilter(in)
		if err != nil || c.Value != want {
			t.Errorf("ParseFilter(%q) = %#v, %v; want value %#v", in, c.Value, err, want)
		}
	}
}

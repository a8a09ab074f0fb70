package store_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/mamori-dev/mamori/internal/finding"
	"github.com/mamori-dev/mamori/internal/server/store"
	"github.com/mamori-dev/mamori/internal/server/store/storetest"
)

// Values chosen to trip SQL translation: LIKE and regex metacharacters,
// glob characters, quotes, newlines, non-ASCII, case.
var awkward = []string{"app:1", "App:1", "debug/tools:1", "a%b_c\\d", "x*y?z", "it's \"quoted\"", "line\nbreak",
	"イメージ:2", "[a-z]+.(c)", "$.v ? (@ == 1)", "", "zzz", "Ünïcode"}

// populate stores n varied findings and returns them as stored.
func populate(t *testing.T, st store.Store, n int, rng *rand.Rand) []*store.Record {
	t.Helper()
	ctx := context.Background()
	types := []string{"Execution:Runtime/NewBinaryExecuted", "Execution:Runtime/ReverseShell",
		"Discovery:Runtime/SuspiciousCommand", "Backdoor:Runtime/C&CActivity.B"}
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	var us []store.Upsert
	for i := range n {
		spec := storetest.Spec{Node: fmt.Sprintf("node-%d", i%4), Type: types[rng.IntN(len(types))],
			Actor: fmt.Sprintf("/usr/bin/tool%d", i), Seen: base.Add(time.Duration(rng.IntN(100000)) * time.Second),
			Args: []string{awkward[rng.IntN(len(awkward))], fmt.Sprint(i)}}
		if rng.IntN(4) > 0 {
			spec.Container = fmt.Sprintf("ctr%03d", i%50)
			spec.Image = awkward[rng.IntN(len(awkward))]
			if rng.IntN(2) == 0 {
				spec.Namespace = []string{"default", "kube-system", "", "team-a"}[rng.IntN(4)]
			}
		}
		f := storetest.Finding(spec)
		// Sub-microsecond parts and varied severities and counts.
		f.CreatedAt = f.CreatedAt.Add(time.Duration(rng.IntN(1000)))
		f.Service.EventLastSeen = f.Service.EventFirstSeen.Add(time.Duration(rng.IntN(5000)) * time.Millisecond)
		f.Severity = []float64{2, 5, 5.5, 8}[rng.IntN(4)]
		f.SeverityLabel = finding.SeverityLabel(f.Severity)
		f.Service.Count = int64(1 + rng.IntN(100))
		ctxv := map[string]any{"k1": awkward[rng.IntN(len(awkward))], "num": rng.IntN(10),
			"flag": rng.IntN(2) == 0, "arr": []any{rng.IntN(3), awkward[rng.IntN(len(awkward))]},
			"nested": []any{map[string]any{"x": rng.IntN(3)}, map[string]any{"x": "s"}}}
		if rng.IntN(5) == 0 {
			delete(ctxv, "k1")
		}
		f.Service.RuntimeDetails.Context = ctxv
		cluster := []string{"", "prod", "dev", "Prod"}[rng.IntN(4)]
		us = append(us, store.Upsert{Finding: f, Cluster: cluster, Reporter: spec.Node, MsgKey: fmt.Sprintf("m%d", i)})
	}
	for i := 0; i < len(us); i += 100 {
		if _, err := st.UpsertFindings(ctx, us[i:min(i+100, len(us))]); err != nil {
			t.Fatal(err)
		}
	}
	var ids []string
	for i := range us {
		if rng.IntN(3) == 0 {
			ids = append(ids, us[i].Finding.ID)
		}
	}
	if _, err := st.SetArchived(ctx, ids, true); err != nil {
		t.Fatal(err)
	}
	if _, err := st.ArchiveMatching(ctx, []store.Criterion{{Field: "severity", Op: store.OpEq, Value: 5.5},
		{Field: "service.archived", Op: store.OpEq, Value: false}}, "rule-1"); err != nil {
		t.Fatal(err)
	}
	page, err := st.ListFindings(ctx, store.Query{Limit: store.MaxPageSize})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Findings) != n {
		t.Fatalf("stored %d findings, listed %d", n, len(page.Findings))
	}
	return page.Findings
}

var criteriaFields = []string{"type", "severity", "service.count", "resource.containerDetails.image",
	"resource.kubernetesDetails.kubernetesWorkloadDetails.namespace", "cluster", "service.archived", "createdAt",
	"service.eventLastSeen", "service.runtimeDetails.process.args", "service.runtimeDetails.process.lineage.name",
	"service.runtimeDetails.context.k1", "service.runtimeDetails.context.arr", "service.runtimeDetails.context.nested.x",
	"service.runtimeDetails.context.num", "service.runtimeDetails.context.flag", "title", "resource.containerDetails.name",
	"suppressedBy", "service.runtimeDetails.context.missing", "service.runtimeDetails.process.pid", "resource.instanceDetails.nodeId",
	"service.evidence.threatIntelligenceDetails.threatListName", "resource.resourceType", "id"}

// randomCriterion draws a criterion whose value often occurs in docs.
func randomCriterion(rng *rand.Rand, docs []map[string]any) store.Criterion {
	field := criteriaFields[rng.IntN(len(criteriaFields))]
	ops := []store.Op{store.OpEq, store.OpNeq, store.OpGt, store.OpLt, store.OpMatches}
	op := ops[rng.IntN(len(ops))]
	var pool []any
	for _, d := range docs {
		pool = append(pool, lookupAll(d, field)...)
	}
	var v any
	switch {
	case len(pool) > 0 && rng.IntN(4) > 0:
		v = pool[rng.IntN(len(pool))]
	default:
		v = []any{"zzz", 5.0, 3.0, true, "", "a", "2026-03-01T13:00:00Z", "prod"}[rng.IntN(8)]
	}
	if _, isMap := v.(map[string]any); isMap {
		v = "x"
	}
	if op == store.OpMatches {
		s, ok := v.(string)
		if !ok {
			s = fmt.Sprint(v)
		}
		r := []rune(s)
		switch rng.IntN(4) {
		case 0:
			if len(r) > 2 {
				s = string(r[:len(r)/2]) + "*"
			}
		case 1:
			if len(r) > 1 {
				r[rng.IntN(len(r))] = '?'
				s = string(r)
			}
		case 2:
			s = "*" + string(r[len(r)/2:])
		}
		v = s
	}
	if op == store.OpGt || op == store.OpLt {
		if _, ok := v.(bool); ok {
			v = 1.0
		}
	}
	if field == "createdAt" || field == "service.eventLastSeen" {
		if _, ok := v.(string); !ok && op != store.OpMatches {
			v = "2026-03-01T20:00:00Z"
		}
		if s, ok := v.(string); ok && op != store.OpMatches {
			if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
				v = "2026-03-01T20:00:00Z"
			}
		}
	}
	return typed(store.Criterion{Field: field, Op: op, Value: v})
}

// typed makes c's value and op fit its field's kind: Normalize refuses a
// criterion that could never hold (a word against a number).
func typed(c store.Criterion) store.Criterion {
	kind, err := store.FieldKindOf(c.Field)
	if err != nil || kind == store.FieldAny {
		return c
	}
	if c.Op == store.OpMatches && kind != store.FieldString && kind != store.FieldTime {
		c.Op = store.OpEq
	}
	switch kind {
	case store.FieldNumber:
		if _, ok := c.Value.(float64); !ok {
			c.Value = 5.0
		}
	case store.FieldBool:
		if _, ok := c.Value.(bool); !ok {
			c.Value = true
		}
		if c.Op == store.OpGt || c.Op == store.OpLt {
			c.Op = store.OpNeq
		}
	case store.FieldString, store.FieldTime:
		if _, ok := c.Value.(string); !ok {
			c.Value = fmt.Sprint(c.Value)
		}
	}
	return c
}

// lookupAll is a test-side path walk (object steps through arrays).
func lookupAll(v any, field string) []any {
	cur := []any{v}
	for _, seg := range strings.Split(field, ".") {
		var next []any
		for _, x := range cur {
			switch t := x.(type) {
			case map[string]any:
				if y, ok := t[seg]; ok {
					next = append(next, y)
				}
			case []any:
				for _, e := range t {
					if m, ok := e.(map[string]any); ok {
						if y, ok := m[seg]; ok {
							next = append(next, y)
						}
					}
				}
			}
		}
		cur = next
	}
	var out []any
	for _, x := range cur {
		if a, ok := x.([]any); ok {
			out = append(out, a...)
		} else {
			out = append(out, x)
		}
	}
	return out
}

// TestCriteriaSQLAgreesWithGo checks that listing with a criterion returns
// exactly the findings Criterion.Match accepts, on both engines: the
// suppression path (Go) and the list path (SQL) must never disagree.
func TestCriteriaSQLAgreesWithGo(t *testing.T) {
	forEngine(t, func(t *testing.T, engine string) {
		st := storetest.Open(t, engine, store.Options{})
		rng := rand.New(rand.NewPCG(7, 11))
		recs := populate(t, st, 80, rng)
		docs := make([]map[string]any, len(recs))
		for i, r := range recs {
			d, err := store.Doc(r)
			if err != nil {
				t.Fatal(err)
			}
			docs[i] = d
		}
		ctx := context.Background()
		nonEmpty := 0
		for i := range 400 {
			cs := []store.Criterion{randomCriterion(rng, docs)}
			if i%4 == 0 {
				cs = append(cs, randomCriterion(rng, docs))
			}
			norm, err := store.NormalizeAll(cs)
			if err != nil {
				t.Fatalf("criterion %+v: %v", cs, err)
			}
			var want []string
			for j, d := range docs {
				if store.MatchAll(norm, d) {
					want = append(want, recs[j].ID)
				}
			}
			page, err := st.ListFindings(ctx, store.Query{Criteria: cs, Limit: store.MaxPageSize})
			if err != nil {
				t.Fatalf("list %+v: %v", cs, err)
			}
			var got []string
			for _, r := range page.Findings {
				got = append(got, r.ID)
			}
			slices.Sort(want)
			slices.Sort(got)
			if !slices.Equal(got, want) {
				t.Errorf("criteria %#v: SQL matched %d, Go %d", cs, len(got), len(want))
			}
			if page.Total != len(want) {
				t.Errorf("criteria %#v: total %d, want %d", cs, page.Total, len(want))
			}
			if len(want) > 0 && len(want) < len(docs) {
				nonEmpty++
			}
		}
		if nonEmpty < 100 {
			t.Errorf("only %d of 400 criteria selected a proper subset: the generator is too weak", nonEmpty)
		}
	})
}

func TestListPaging(t *testing.T) {
	forEngine(t, func(t *testing.T, engine string) {
		st := storetest.Open(t, engine, store.Options{})
		rng := rand.New(rand.NewPCG(3, 5))
		recs := populate(t, st, 230, rng)
		ctx := context.Background()
		for _, sortField := range store.SortFields {
			for _, asc := range []bool{false, true} {
				crit := []store.Criterion{{Field: "service.archived", Op: store.OpEq, Value: false}}
				want := expectedOrder(recs, sortField, asc, func(r *store.Record) bool { return !r.Service.Archived })
				var got []string
				q := store.Query{Criteria: crit, Sort: sortField, Asc: asc, Limit: 17}
				for pages := 0; ; pages++ {
					if pages > 100 {
						t.Fatal("paging does not end")
					}
					p, err := st.ListFindings(ctx, q)
					if err != nil {
						t.Fatal(err)
					}
					if p.Total != len(want) {
						t.Fatalf("total %d want %d", p.Total, len(want))
					}
					for _, r := range p.Findings {
						got = append(got, r.ID)
					}
					if p.Next == "" {
						break
					}
					q.Cursor = p.Next
				}
				if !slices.Equal(got, want) {
					t.Errorf("sort %s asc=%v: keyset pages differ from the expected order (%d vs %d rows)", sortField, asc, len(got), len(want))
				}
				// Offset paging agrees.
				p, err := st.ListFindings(ctx, store.Query{Criteria: crit, Sort: sortField, Asc: asc, Limit: 10, Offset: 20})
				if err != nil {
					t.Fatal(err)
				}
				var off []string
				for _, r := range p.Findings {
					off = append(off, r.ID)
				}
				if !slices.Equal(off, want[20:min(30, len(want))]) {
					t.Errorf("sort %s asc=%v: offset page differs", sortField, asc)
				}
			}
		}
		// A cursor is bound to its query.
		p, _ := st.ListFindings(ctx, store.Query{Limit: 5})
		if _, err := st.ListFindings(ctx, store.Query{Limit: 5, Sort: "severity", Cursor: p.Next}); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("cursor of another query: %v", err)
		}
		for _, bad := range []string{"!!", "e30", strings.Repeat("A", 5000)} {
			if _, err := st.ListFindings(ctx, store.Query{Cursor: bad}); !errors.Is(err, store.ErrInvalid) {
				t.Errorf("cursor %q: %v", bad[:min(len(bad), 10)], err)
			}
		}
		if _, err := st.ListFindings(ctx, store.Query{Sort: "doc"}); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("sort by doc: %v", err)
		}
	})
}

// expectedOrder sorts recs the way ListFindings documents: by the sort
// field (bytewise for text), ties by id, descending unless asc.
func expectedOrder(recs []*store.Record, field string, asc bool, keep func(*store.Record) bool) []string {
	var rs []*store.Record
	for _, r := range recs {
		if keep(r) {
			rs = append(rs, r)
		}
	}
	key := func(r *store.Record) any {
		switch field {
		case "updatedAt":
			return r.UpdatedAt.UnixMicro()
		case "createdAt":
			return r.CreatedAt.UnixMicro()
		case "severity":
			return r.Severity
		case "count":
			return r.Service.Count
		case "eventFirstSeen":
			return r.Service.EventFirstSeen.UnixMicro()
		case "eventLastSeen":
			return r.Service.EventLastSeen.UnixMicro()
		}
		return r.Type
	}
	cmp := func(a, b any) int {
		switch x := a.(type) {
		case int64:
			return int(max(min(x-b.(int64), 1), -1))
		case float64:
			switch y := b.(float64); {
			case x < y:
				return -1
			case x > y:
				return 1
			}
			return 0
		}
		return strings.Compare(a.(string), b.(string))
	}
	sort.SliceStable(rs, func(i, j int) bool {
		c := cmp(key(rs[i]), key(rs[j]))
		if c == 0 {
			c = strings.Compare(rs[i].ID, rs[j].ID)
		}
		if asc {
			return c < 0
		}
		return c > 0
	})
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.ID
	}
	return out
}

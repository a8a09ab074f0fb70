package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/mamori-dev/mamori/internal/finding"
	"github.com/mamori-dev/mamori/internal/server/store"
	"github.com/mamori-dev/mamori/internal/server/store/storetest"
)

// benchFindings makes n distinct findings spread over nodes and containers.
func benchFindings(n int) []*finding.Finding {
	base := time.Now().UTC().Add(-time.Hour)
	out := make([]*finding.Finding, n)
	for i := range out {
		out[i] = storetest.Finding(storetest.Spec{Node: fmt.Sprintf("node-%d", i%50), Actor: fmt.Sprintf("/usr/bin/t%d", i),
			Container: fmt.Sprintf("ctr-%d", i%200), Image: fmt.Sprintf("registry.example/app-%d:1", i%20),
			Namespace: []string{"default", "prod", "kube-system"}[i%3], Seen: base.Add(time.Duration(i) * time.Millisecond)})
		out[i].Severity = []float64{2, 5, 8}[i%3]
		out[i].SeverityLabel = finding.SeverityLabel(out[i].Severity)
	}
	return out
}

// BenchmarkUpsert measures finding upserts per second: each op applies one
// message (a new finding the first time round, a count update after), in
// transactions of the given batch size, as the ingester groups them.
func BenchmarkUpsert(b *testing.B) {
	for _, engine := range storetest.Engines {
		for _, batch := range []int{1, 64} {
			b.Run(fmt.Sprintf("%s/batch=%d", engine, batch), func(b *testing.B) {
				st := storetest.Open(b, engine, store.Options{})
				ctx := context.Background()
				fs := benchFindings(10000)
				seq := 0
				next := func() store.Upsert {
					f := *fs[seq%len(fs)]
					f.Service.Count = int64(1 + seq/len(fs))
					seq++
					return store.Upsert{Finding: &f, MsgKey: fmt.Sprintf("m-%d", seq), Reporter: "node", Epoch: "e"}
				}
				us := make([]store.Upsert, batch)
				b.ResetTimer()
				start := time.Now()
				n := 0
				for b.Loop() {
					for i := range us {
						us[i] = next()
					}
					if _, err := st.UpsertFindings(ctx, us); err != nil {
						b.Fatal(err)
					}
					n += batch
				}
				b.ReportMetric(float64(n)/time.Since(start).Seconds(), "findings/s")
			})
		}
	}
}

// BenchmarkListFirstPage measures the first page (50 rows, with the total)
// at 10,000 stored findings, after the retention job has run once: the default view, an indexed filter with
// another sort, and a filter on a field without a column (evaluated on the
// document).
func BenchmarkListFirstPage(b *testing.B) {
	queries := []struct {
		name string
		q    store.Query
	}{
		{"default", store.Query{}},
		{"unarchived-by-severity", store.Query{Sort: "severity", Criteria: []store.Criterion{
			{Field: "service.archived", Op: store.OpEq, Value: false}}}},
		{"namespace-and-type", store.Query{Criteria: []store.Criterion{
			{Field: "resource.kubernetesDetails.kubernetesWorkloadDetails.namespace", Op: store.OpEq, Value: "prod"},
			{Field: "type", Op: store.OpMatches, Value: "Execution:*"}}}},
		{"document-field", store.Query{Criteria: []store.Criterion{
			{Field: "service.runtimeDetails.process.executablePath", Op: store.OpMatches, Value: "/usr/bin/t99*"}}}},
	}
	for _, engine := range storetest.Engines {
		b.Run(engine, func(b *testing.B) {
			st := storetest.Open(b, engine, store.Options{})
			ctx := context.Background()
			fs := benchFindings(10000)
			for i := 0; i < len(fs); i += 500 {
				us := make([]store.Upsert, 0, 500)
				for _, f := range fs[i:min(i+500, len(fs))] {
					us = append(us, store.Upsert{Finding: f})
				}
				if _, err := st.UpsertFindings(ctx, us); err != nil {
					b.Fatal(err)
				}
			}
			// The hourly retention job also refreshes planner statistics.
			if _, err := st.Purge(ctx, store.PurgeOptions{}); err != nil {
				b.Fatal(err)
			}
			for _, q := range queries {
				b.Run(q.name, func(b *testing.B) {
					for b.Loop() {
						p, err := st.ListFindings(ctx, q.q)
						if err != nil {
							b.Fatal(err)
						}
						if len(p.Findings) == 0 {
							b.Fatal("empty page")
						}
					}
				})
			}
		})
	}
}

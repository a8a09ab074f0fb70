package ingest_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mamori-dev/mamori/internal/server/ingest"
	"github.com/mamori-dev/mamori/internal/server/store"
	"github.com/mamori-dev/mamori/internal/server/store/storetest"
	"github.com/mamori-dev/mamori/internal/transport"
)

// BenchmarkIngest measures findings applied per second through the
// Ingester (decode, validate, suppression check, batched upsert) with 64
// concurrent handlers, as a transport consumer with Concurrency 64 would
// run them. Half the messages are new findings, half count updates.
func BenchmarkIngest(b *testing.B) {
	for _, engine := range storetest.Engines {
		b.Run(engine, func(b *testing.B) {
			st := storetest.Open(b, engine, store.Options{MaxConns: 8})
			if _, err := st.CreateRule(context.Background(), store.Rule{Name: "bench", Action: store.ActionArchive,
				Criteria: []store.Criterion{{Field: "resource.containerDetails.image", Op: store.OpEq, Value: "never"}}}); err != nil {
				b.Fatal(err)
			}
			in, err := ingest.New(ingest.Config{Store: st})
			if err != nil {
				b.Fatal(err)
			}
			defer in.Close()
			const distinct = 5000
			msgs := make([]ingest.Input, 0, 2*distinct)
			for i := range distinct {
				f := storetest.Finding(storetest.Spec{Node: fmt.Sprintf("node-%d", i%100), Actor: fmt.Sprintf("/bin/t%d", i),
					Container: fmt.Sprintf("c%d", i%300), Image: "app:1"})
				msgs = append(msgs, input(b, f.Resource.InstanceDetails.NodeID, transport.KindFinding, f))
				g := *f
				g.Service.Count = 2
				g.Service.EventLastSeen = g.Service.EventLastSeen.Add(time.Second)
				msgs = append(msgs, input(b, f.Resource.InstanceDetails.NodeID, transport.KindFinding, &g))
			}
			var next atomic.Int64
			b.SetParallelism(32) // 64 goroutines on 2 cores
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := next.Add(1) - 1
					m := msgs[int(i)%len(msgs)]
					if int(i) >= len(msgs) { // later rounds: fresh message ids, same state
						m.Key = fmt.Sprintf("%s-%d", m.Key, i)
					}
					if err := in.Apply(context.Background(), m); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(next.Load())/time.Since(start).Seconds(), "findings/s")
		})
	}
}

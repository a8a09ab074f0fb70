package store_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/mamori-dev/mamori/internal/finding"
	"github.com/mamori-dev/mamori/internal/server/store"
	"github.com/mamori-dev/mamori/internal/server/store/storetest"
)

// TestTwoWritersOneDatabase runs two independent Store instances (as two
// server replicas would) on one database. Messages carry overlapping
// findings from several agents and epochs; many are delivered to both
// replicas (an ack lost, a redelivery). Every finding must exist once with
// exactly the count the agents reported.
func TestTwoWritersOneDatabase(t *testing.T) {
	forEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		dsn := storetest.DSN(t, engine)
		var replicas []store.Store
		for range 2 {
			st, err := store.Open(ctx, dsn, store.Options{MaxConns: 8})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			replicas = append(replicas, st)
		}
		rng := rand.New(rand.NewPCG(1, 2))
		base := time.Now().UTC().Add(-time.Hour)
		type msg struct{ u store.Upsert }
		var msgs []msg
		want := map[string]int64{}
		for fi := range 40 {
			spec := storetest.Spec{Node: "node-1", Actor: fmt.Sprintf("/bin/t%d", fi), Seen: base}
			for _, reporter := range []string{"agent-a", "agent-b"} {
				for ep := range 2 {
					spec.Seen = base.Add(time.Duration(ep) * time.Minute)
					f := storetest.Finding(spec)
					epoch := fmt.Sprintf("%s-%d", reporter, ep)
					n := int64(1 + rng.IntN(4))
					for step := int64(1); step <= n; step++ {
						c := *f
						c.Service.Count = step * 3
						c.Service.EventLastSeen = f.Service.EventLastSeen.Add(time.Duration(step) * time.Second)
						msgs = append(msgs, msg{store.Upsert{Finding: &c, MsgKey: fmt.Sprintf("%s:%d:%d:%d", reporter, fi, ep, step),
							Reporter: reporter, Epoch: epoch}})
					}
					want[f.ID] += n * 3
				}
			}
		}
		rng.Shuffle(len(msgs), func(i, j int) { msgs[i], msgs[j] = msgs[j], msgs[i] })
		// Each replica takes the messages from its own queue in small
		// batches; a third of them go to both replicas.
		queues := [2][]store.Upsert{}
		for i, m := range msgs {
			queues[i%2] = append(queues[i%2], m.u)
			if rng.IntN(3) == 0 {
				queues[(i+1)%2] = append(queues[(i+1)%2], m.u)
			}
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		outcomes := map[store.Outcome]int{}
		for r := range 2 {
			for w := range 3 { // three concurrent handlers per replica
				wg.Go(func() {
					q := queues[r]
					for i := w * 4; i < len(q); i += 12 {
						batch := q[i:min(i+4, len(q))]
						res, err := replicas[r].UpsertFindings(ctx, batch)
						if err != nil {
							t.Errorf("replica %d: %v", r, err)
							return
						}
						mu.Lock()
						for _, x := range res {
							outcomes[x.Outcome]++
						}
						mu.Unlock()
					}
				})
			}
		}
		wg.Wait()
		page, err := replicas[0].ListFindings(ctx, store.Query{Limit: store.MaxPageSize})
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Findings) != len(want) {
			t.Fatalf("%d findings stored, want %d", len(page.Findings), len(want))
		}
		for _, r := range page.Findings {
			if r.Service.Count != want[r.ID] {
				t.Errorf("finding %s: count %d, want %d", r.ID, r.Service.Count, want[r.ID])
			}
			if err := finding.Validate(r.Finding); err != nil {
				t.Errorf("finding %s invalid: %v", r.ID, err)
			}
		}
		if outcomes[store.OutcomeDuplicate] == 0 || outcomes[store.OutcomeCreated] != len(want) {
			t.Errorf("outcomes %v: want %d created and some duplicates", outcomes, len(want))
		}
		t.Logf("%d messages (%d deliveries): %v", len(msgs), len(queues[0])+len(queues[1]), outcomes)
	})
}

// TestBatchMixesCountAndFullUpdates: within one batch a finding's count
// updates (written together at the batch's end on PostgreSQL) and an update
// that changes its identity columns (written at once) leave the latest
// state, whichever comes last.
func TestBatchMixesCountAndFullUpdates(t *testing.T) {
	forEngine(t, func(t *testing.T, engine string) {
		st := storetest.Open(t, engine, store.Options{})
		ctx := context.Background()
		base := time.Now().UTC().Add(-time.Minute).Truncate(time.Millisecond)
		up := func(actor, image string, count int64, key string) store.Upsert {
			f := storetest.Finding(storetest.Spec{Node: "n1", Actor: actor, Container: "c1", Image: image,
				Seen: base.Add(time.Duration(count) * time.Second), Count: count})
			return store.Upsert{Finding: f, MsgKey: key, Reporter: "n1", Epoch: "e1"}
		}
		check := func(actor string, count int64, image string) {
			t.Helper()
			id := up(actor, image, 1, "").Finding.ID
			r, err := st.GetFinding(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			f := r.Finding
			if f.Service.Count != count || f.Resource.ContainerDetails == nil || f.Resource.ContainerDetails.Image != image {
				t.Errorf("%s: count %d image %+v, want %d %q", actor, f.Service.Count, f.Resource.ContainerDetails, count, image)
			}
		}
		// Count updates around an image change; then a batch ending with one.
		batch := []store.Upsert{up("/bin/a", "img:1", 1, "a1"), up("/bin/a", "img:1", 2, "a2"), up("/bin/a", "img:2", 3, "a3"),
			up("/bin/a", "img:2", 5, "a5"), up("/bin/b", "img:1", 1, "b1"), up("/bin/b", "img:1", 2, "b2"), up("/bin/b", "img:3", 3, "b3")}
		res, err := st.UpsertFindings(ctx, batch)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range res {
			if r.Err != nil {
				t.Fatalf("upsert %d: %v", i, r.Err)
			}
		}
		check("/bin/a", 5, "img:2")
		check("/bin/b", 3, "img:3")
		// The next batch: count updates only, of both.
		if _, err := st.UpsertFindings(ctx, []store.Upsert{up("/bin/a", "img:2", 8, "a8"), up("/bin/b", "img:3", 4, "b4"),
			up("/bin/b", "img:3", 6, "b6")}); err != nil {
			t.Fatal(err)
		}
		check("/bin/a", 8, "img:2")
		check("/bin/b", 6, "img:3")
	})
}

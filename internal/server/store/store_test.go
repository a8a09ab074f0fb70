package store_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mamori-dev/mamori/internal/finding"
	"github.com/mamori-dev/mamori/internal/server/store"
	"github.com/mamori-dev/mamori/internal/server/store/storetest"
)

func TestMain(m *testing.M) { storetest.Main(m) }

// forEngine runs f once per engine as a subtest.
func forEngine(t *testing.T, f func(t *testing.T, engine string)) {
	for _, e := range storetest.Engines {
		t.Run(e, func(t *testing.T) { f(t, e) })
	}
}

func upsert(t *testing.T, st store.Store, us ...store.Upsert) []store.Result {
	t.Helper()
	res, err := st.UpsertFindings(context.Background(), us)
	if err != nil {
		t.Fatalf("upsert: %v", err)
	}
	return res
}

// cumulative returns a copy of f as the agent's aggregator would send it
// later in the same epoch: count n, last seen at.
func cumulative(f *finding.Finding, n int64, at time.Time) *finding.Finding {
	c := *f
	c.Service.Count = n
	c.Service.EventLastSeen = at
	c.UpdatedAt = at
	return &c
}

func epochOf(f *finding.Finding) string { return f.CreatedAt.Format(time.RFC3339Nano) }

func TestUpsertMergesAcrossAgents(t *testing.T) {
	forEngine(t, func(t *testing.T, engine string) {
		st := storetest.Open(t, engine, store.Options{})
		ctx := context.Background()
		t0 := time.Now().UTC().Add(-time.Hour).Truncate(time.Millisecond)
		spec := storetest.Spec{Node: "node-1", Actor: "/tmp/evil", Container: "c1", Seen: t0}
		a := storetest.Finding(spec)
		spec.Seen = t0.Add(-10 * time.Minute) // agent b saw it earlier
		b := storetest.Finding(spec)
		if a.ID != b.ID {
			t.Fatalf("same activity, different ids: %s %s", a.ID, b.ID)
		}

		r := upsert(t, st, store.Upsert{Finding: a, MsgKey: "a:1", Reporter: "agent-a", Epoch: epochOf(a), Cluster: "prod"})
		if r[0].Outcome != store.OutcomeCreated || r[0].Delta != 1 {
			t.Fatalf("first upsert: %+v", r[0])
		}
		// Agent a's aggregator later reports 5 in total, agent b 3.
		r = upsert(t, st,
			store.Upsert{Finding: cumulative(a, 5, t0.Add(time.Minute)), MsgKey: "a:2", Reporter: "agent-a", Epoch: epochOf(a)},
			store.Upsert{Finding: cumulative(b, 3, t0.Add(2*time.Minute)), MsgKey: "b:1", Reporter: "agent-b", Epoch: epochOf(b)})
		if r[0].Delta != 4 || r[1].Delta != 3 {
			t.Fatalf("deltas %d, %d; want 4, 3", r[0].Delta, r[1].Delta)
		}
		got, err := st.GetFinding(ctx, a.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Service.Count != 8 {
			t.Errorf("count %d, want 5+3", got.Service.Count)
		}
		if !got.Service.EventFirstSeen.Equal(t0.Add(-10*time.Minute)) || !got.Service.EventLastSeen.Equal(t0.Add(2*time.Minute)) {
			t.Errorf("first/last seen %v / %v", got.Service.EventFirstSeen, got.Service.EventLastSeen)
		}
		if got.Cluster != "prod" || got.Revision != 3 {
			t.Errorf("cluster %q revision %d", got.Cluster, got.Revision)
		}
		if err := finding.Validate(got.Finding); err != nil {
			t.Errorf("stored finding no longer valid: %v", err)
		}
		if got.UpdatedAt.Before(got.CreatedAt) {
			t.Errorf("updatedAt %v before createdAt %v", got.UpdatedAt, got.CreatedAt)
		}
	})
}

func TestReplayNeverDoubleCounts(t *testing.T) {
	forEngine(t, func(t *testing.T, engine string) {
		st := storetest.Open(t, engine, store.Options{})
		ctx := context.Background()
		t0 := time.Now().UTC().Add(-time.Hour)
		f := storetest.Finding(storetest.Spec{Node: "n1", Actor: "/bin/x", Seen: t0})
		ep := epochOf(f)
		u := func(n int64, key string) store.Upsert {
			return store.Upsert{Finding: cumulative(f, n, t0.Add(time.Duration(n)*time.Second)), MsgKey: key, Reporter: "n1", Epoch: ep}
		}
		upsert(t, st, u(1, "m1"))
		upsert(t, st, u(4, "m2"))
		// The same message again (redelivery, spool replay): a no-op.
		if r := upsert(t, st, u(4, "m2")); r[0].Outcome != store.OutcomeDuplicate {
			t.Errorf("replayed message: %v, want duplicate", r[0].Outcome)
		}
		// The same state under a new message id: nothing to add.
		if r := upsert(t, st, u(4, "m2-again")); r[0].Outcome != store.OutcomeUnchanged || r[0].Delta != 0 {
			t.Errorf("re-sent state: %v delta %d, want unchanged 0", r[0].Outcome, r[0].Delta)
		}
		// An older cumulative arriving late never subtracts.
		if r := upsert(t, st, u(2, "m-late")); r[0].Delta != 0 {
			t.Errorf("late message added %d", r[0].Delta)
		}
		// A batch carrying one message twice applies it once.
		upsert(t, st, u(6, "m3"), u(6, "m3"))
		// The agent restarted: a new epoch counts from 1 again.
		g := storetest.Finding(storetest.Spec{Node: "n1", Actor: "/bin/x", Seen: t0.Add(time.Hour)})
		upsert(t, st, store.Upsert{Finding: cumulative(g, 2, t0.Add(time.Hour)), MsgKey: "m4", Reporter: "n1", Epoch: epochOf(g)})
		got, err := st.GetFinding(ctx, f.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Service.Count != 8 {
			t.Errorf("count %d, want 6 + 2", got.Service.Count)
		}
	})
}

func TestFindingOfAnotherNodeRefused(t *testing.T) {
	forEngine(t, func(t *testing.T, engine string) {
		st := storetest.Open(t, engine, store.Options{})
		f := storetest.Finding(storetest.Spec{Node: "victim", Actor: "/bin/x"})
		upsert(t, st, store.Upsert{Finding: f, MsgKey: "v1", Reporter: "victim"})
		forged := storetest.Finding(storetest.Spec{Node: "attacker", Actor: "/bin/x"})
		forged.ID = f.ID
		forged.Service.Count = 1000
		r := upsert(t, st, store.Upsert{Finding: forged, MsgKey: "a1", Reporter: "attacker"})
		if r[0].Outcome != store.OutcomeRejected || !errors.Is(r[0].Err, store.ErrNodeMismatch) {
			t.Fatalf("forged update: %+v", r[0])
		}
		got, _ := st.GetFinding(context.Background(), f.ID)
		if got.Service.Count != 1 || nodeID(got.Finding) != "victim" {
			t.Errorf("victim's finding changed: count %d node %s", got.Service.Count, nodeID(got.Finding))
		}
	})
}

func nodeID(f *finding.Finding) string { return f.Resource.InstanceDetails.NodeID }

func TestHostileStringsStored(t *testing.T) {
	forEngine(t, func(t *testing.T, engine string) {
		st := storetest.Open(t, engine, store.Options{})
		f := storetest.Finding(storetest.Spec{Node: "n1", Actor: "/tmp/a\x00b", Container: "c\x00", Image: "img\xff\x00",
			Args: []string{"sh", "-c", "echo '; DROP TABLE findings; --\x00"}})
		f.Service.RuntimeDetails.Context = map[string]any{"k\x00": "v\x00", "n": []any{"\x00"}}
		r := upsert(t, st, store.Upsert{Finding: f, MsgKey: "k\x00\xff", Reporter: "n\x00", Epoch: "e\xfe", Cluster: "c\x00"})
		if r[0].Outcome != store.OutcomeCreated {
			t.Fatalf("outcome %v err %v", r[0].Outcome, r[0].Err)
		}
		got, err := st.GetFinding(context.Background(), f.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Resource.ContainerDetails.ID != "c\uFFFD" {
			t.Errorf("container id %q", got.Resource.ContainerDetails.ID)
		}
		if s, _ := st.Stats(context.Background()); s.Findings != 1 {
			t.Errorf("stats %+v", s)
		}
	})
}

func TestArchiveUnarchive(t *testing.T) {
	forEngine(t, func(t *testing.T, engine string) {
		st := storetest.Open(t, engine, store.Options{})
		ctx := context.Background()
		var ids []string
		for i := range 3 {
			f := storetest.Finding(storetest.Spec{Node: "n1", Actor: fmt.Sprintf("/bin/%d", i)})
			upsert(t, st, store.Upsert{Finding: f})
			ids = append(ids, f.ID)
		}
		n, err := st.SetArchived(ctx, []string{ids[0], ids[1], ids[1], "missing"}, true)
		if err != nil || n != 2 {
			t.Fatalf("archive: %d %v", n, err)
		}
		if n, _ := st.SetArchived(ctx, ids[:1], true); n != 0 {
			t.Errorf("archiving an archived finding changed %d", n)
		}
		got, _ := st.GetFinding(ctx, ids[0])
		if !got.Service.Archived {
			t.Error("not archived")
		}
		page, err := st.ListFindings(ctx, store.Query{Criteria: []store.Criterion{{Field: "service.archived", Op: store.OpEq, Value: false}}})
		if err != nil || page.Total != 1 || page.Findings[0].ID != ids[2] {
			t.Fatalf("unarchived list: %+v %v", page, err)
		}
		if n, _ := st.SetArchived(ctx, ids[:1], false); n != 1 {
			t.Errorf("unarchive changed %d", n)
		}
		got, _ = st.GetFinding(ctx, ids[0])
		if got.Service.Archived {
			t.Error("still archived")
		}
	})
}

func TestSuppression(t *testing.T) {
	forEngine(t, func(t *testing.T, engine string) {
		st := storetest.Open(t, engine, store.Options{})
		ctx := context.Background()
		rule, err := st.CreateRule(ctx, store.Rule{Name: "ignore debug image", Action: store.ActionArchive,
			Criteria: []store.Criterion{{Field: "resource.containerDetails.image", Op: store.OpMatches, Value: "debug/*"}}})
		if err != nil {
			t.Fatal(err)
		}
		suppress := func(r *store.Record) string {
			doc, err := store.Doc(r)
			if err != nil {
				t.Fatal(err)
			}
			if store.MatchAll(rule.Criteria, doc) {
				return rule.ID
			}
			return ""
		}
		quiet := storetest.Finding(storetest.Spec{Node: "n1", Actor: "/bin/sh", Container: "c1", Image: "debug/tools:1"})
		loud := storetest.Finding(storetest.Spec{Node: "n1", Actor: "/bin/sh", Container: "c2", Image: "app:1"})
		upsert(t, st, store.Upsert{Finding: quiet, Suppress: suppress}, store.Upsert{Finding: loud, Suppress: suppress})
		q, _ := st.GetFinding(ctx, quiet.ID)
		l, _ := st.GetFinding(ctx, loud.ID)
		if !q.Service.Archived || q.SuppressedBy != rule.ID {
			t.Errorf("suppressed finding: archived %v by %q", q.Service.Archived, q.SuppressedBy)
		}
		if l.Service.Archived || l.SuppressedBy != "" {
			t.Errorf("other finding: archived %v by %q", l.Service.Archived, l.SuppressedBy)
		}
		page, _ := st.ListFindings(ctx, store.Query{Criteria: []store.Criterion{{Field: "suppressedBy", Op: store.OpEq, Value: rule.ID}}})
		if page.Total != 1 || page.Findings[0].ID != quiet.ID {
			t.Errorf("list by suppressedBy: %d", page.Total)
		}
		// The user unarchives: the flag goes; the next matching update
		// suppresses it again.
		st.SetArchived(ctx, []string{quiet.ID}, false)
		if q, _ = st.GetFinding(ctx, quiet.ID); q.SuppressedBy != "" || q.Service.Archived {
			t.Errorf("after unarchive: %q %v", q.SuppressedBy, q.Service.Archived)
		}
		upsert(t, st, store.Upsert{Finding: cumulative(quiet, 2, time.Now().UTC()), Suppress: suppress})
		if q, _ = st.GetFinding(ctx, quiet.ID); q.SuppressedBy != rule.ID || !q.Service.Archived {
			t.Errorf("after update: %q %v", q.SuppressedBy, q.Service.Archived)
		}
		// ArchiveMatching applies a rule to stored findings.
		n, err := st.ArchiveMatching(ctx, []store.Criterion{{Field: "resource.containerDetails.image", Op: store.OpEq, Value: "app:1"}}, "r2")
		if err != nil || n != 1 {
			t.Fatalf("archive matching: %d %v", n, err)
		}
		if _, err := st.ArchiveMatching(ctx, nil, "r3"); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("archive matching with no criteria: %v", err)
		}
		s, _ := st.Stats(ctx)
		if s.Findings != 2 || s.Archived != 2 || s.Suppressed != 2 || s.Rules != 1 {
			t.Errorf("stats %+v", s)
		}
	})
}

func TestRetentionPurge(t *testing.T) {
	forEngine(t, func(t *testing.T, engine string) {
		var mu sync.Mutex
		now := time.Now().UTC().Add(-100 * 24 * time.Hour)
		clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
		st := storetest.Open(t, engine, store.WithClock(store.Options{}, clock))
		ctx := context.Background()
		old := storetest.Finding(storetest.Spec{Node: "n1", Actor: "/bin/old", Seen: now})
		upsert(t, st, store.Upsert{Finding: old, MsgKey: "old-msg", Reporter: "n1", Epoch: "e"})
		if err := st.DeleteNode(ctx, "gone"); !errors.Is(err, store.ErrNotFound) { // its removal is recorded
			t.Fatal(err)
		}
		mu.Lock()
		now = now.Add(95 * 24 * time.Hour)
		mu.Unlock()
		fresh := storetest.Finding(storetest.Spec{Node: "n1", Actor: "/bin/new", Seen: now})
		upsert(t, st, store.Upsert{Finding: fresh, MsgKey: "new-msg", Reporter: "n1", Epoch: "e"})

		res, err := st.Purge(ctx, store.PurgeOptions{Now: now})
		if err != nil {
			t.Fatal(err)
		}
		if res.Findings != 1 || res.Messages != 1 || res.Removals != 1 {
			t.Errorf("purged %+v, want 1 finding, 1 message, 1 node removal", res)
		}
		if _, err := st.GetFinding(ctx, old.ID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("old finding: %v", err)
		}
		if _, err := st.GetFinding(ctx, fresh.ID); err != nil {
			t.Errorf("fresh finding: %v", err)
		}
		// The purged finding's contributions went with it: the same
		// activity again starts from its own count.
		again := cumulative(old, 3, now)
		r := upsert(t, st, store.Upsert{Finding: again, MsgKey: "old-msg-2", Reporter: "n1", Epoch: "e"})
		if r[0].Outcome != store.OutcomeCreated || r[0].Record.Service.Count != 3 {
			t.Errorf("re-created: %v count %d", r[0].Outcome, r[0].Record.Service.Count)
		}
		// The purged message id is forgotten; the fresh one still dedups.
		if r := upsert(t, st, store.Upsert{Finding: fresh, MsgKey: "new-msg", Reporter: "n1", Epoch: "e"}); r[0].Outcome != store.OutcomeDuplicate {
			t.Errorf("fresh message: %v", r[0].Outcome)
		}
	})
}

// TestUpdateKeepsColumnsTrue checks both update statements: a further
// occurrence (the narrow one) and a newer occurrence whose severity
// differs (the full one) leave every filterable column equal to the
// document, so the indexed queries find what the document says.
func TestUpdateKeepsColumnsTrue(t *testing.T) {
	forEngine(t, func(t *testing.T, engine string) {
		st := storetest.Open(t, engine, store.Options{})
		ctx := context.Background()
		t0 := time.Now().UTC().Add(-time.Hour).Truncate(time.Millisecond)
		f := storetest.Finding(storetest.Spec{Node: "node-1", Actor: "/tmp/x", Container: "c1", Seen: t0})
		upsert(t, st, store.Upsert{Finding: f, MsgKey: "m:1", Reporter: "r", Epoch: epochOf(f)})
		count := func(c store.Criterion) int {
			t.Helper()
			page, err := st.ListFindings(ctx, store.Query{Criteria: []store.Criterion{c}, Limit: store.MaxPageSize})
			if err != nil {
				t.Fatal(err)
			}
			return len(page.Findings)
		}
		// A further occurrence: count and last seen move.
		upsert(t, st, store.Upsert{Finding: cumulative(f, 7, t0.Add(time.Minute)), MsgKey: "m:2", Reporter: "r", Epoch: epochOf(f)})
		if n := count(store.Criterion{Field: "service.count", Op: store.OpEq, Value: 7}); n != 1 {
			t.Errorf("count column not updated: %d match count 7", n)
		}
		if n := count(store.Criterion{Field: "service.eventLastSeen", Op: store.OpGt, Value: t0.Add(30 * time.Second).Format(time.RFC3339Nano)}); n != 1 {
			t.Errorf("last-seen column not updated: %d match", n)
		}
		// A newer occurrence with another severity takes the full update.
		g := cumulative(f, 8, t0.Add(2*time.Minute))
		g.Severity = f.Severity + 1
		upsert(t, st, store.Upsert{Finding: g, MsgKey: "m:3", Reporter: "r", Epoch: epochOf(f)})
		if n := count(store.Criterion{Field: "severity", Op: store.OpEq, Value: g.Severity}); n != 1 {
			t.Errorf("severity column not updated: %d match %v", n, g.Severity)
		}
		if n := count(store.Criterion{Field: "severity", Op: store.OpEq, Value: f.Severity}); n != 0 {
			t.Errorf("old severity still matches %d", n)
		}
	})
}

// TestOneBatchManyCopies: one batch holding a finding's creation, a
// redelivered copy and later counts from two reporters merges them as
// separate batches would; replaying the batch changes nothing.
func TestOneBatchManyCopies(t *testing.T) {
	forEngine(t, func(t *testing.T, engine string) {
		st := storetest.Open(t, engine, store.Options{})
		t0 := time.Now().UTC().Add(-time.Hour).Truncate(time.Millisecond)
		f := storetest.Finding(storetest.Spec{Node: "node-1", Actor: "/tmp/x", Container: "c1", Seen: t0})
		ep := epochOf(f)
		batch := []store.Upsert{
			{Finding: f, MsgKey: "a:1", Reporter: "a", Epoch: ep},
			{Finding: f, MsgKey: "a:1", Reporter: "a", Epoch: ep},
			{Finding: cumulative(f, 3, t0.Add(time.Minute)), MsgKey: "b:1", Reporter: "b", Epoch: ep},
			{Finding: cumulative(f, 4, t0.Add(2*time.Minute)), MsgKey: "a:2", Reporter: "a", Epoch: ep},
		}
		res := upsert(t, st, batch...)
		want := []struct {
			outcome store.Outcome
			delta   int64
		}{{store.OutcomeCreated, 1}, {store.OutcomeDuplicate, 0}, {store.OutcomeUpdated, 3}, {store.OutcomeUpdated, 3}}
		for i, w := range want {
			if res[i].Outcome != w.outcome || res[i].Delta != w.delta {
				t.Errorf("upsert %d: %s delta %d, want %s delta %d", i, res[i].Outcome, res[i].Delta, w.outcome, w.delta)
			}
		}
		got, err := st.GetFinding(context.Background(), f.ID)
		if err != nil || got.Service.Count != 7 || !got.Service.EventLastSeen.Equal(t0.Add(2*time.Minute)) {
			t.Fatalf("stored %+v %v, want count 7", got, err)
		}
		for i, r := range upsert(t, st, batch...) {
			if r.Outcome != store.OutcomeDuplicate {
				t.Errorf("replayed upsert %d: %s", i, r.Outcome)
			}
		}
		// New messages with counts already seen add nothing.
		again := []store.Upsert{{Finding: cumulative(f, 4, t0.Add(2*time.Minute)), MsgKey: "a:3", Reporter: "a", Epoch: ep},
			{Finding: cumulative(f, 3, t0.Add(time.Minute)), MsgKey: "b:2", Reporter: "b", Epoch: ep}}
		for i, r := range upsert(t, st, again...) {
			if r.Outcome != store.OutcomeUnchanged {
				t.Errorf("resent count %d: %s", i, r.Outcome)
			}
		}
		if got, _ := st.GetFinding(context.Background(), f.ID); got == nil || got.Service.Count != 7 {
			t.Errorf("count after resends: %+v", got)
		}
	})
}

// TestConcurrentBatchesOnNewFinding races batches that each carry several
// reporters' copies of a finding no row exists for yet: the batch that
// loses the insert must still count each reporter once.
func TestConcurrentBatchesOnNewFinding(t *testing.T) {
	forEngine(t, func(t *testing.T, engine string) {
		st := storetest.Open(t, engine, store.Options{})
		t0 := time.Now().UTC().Add(-time.Hour).Truncate(time.Millisecond)
		const rounds, batches = 30, 4
		for r := range rounds {
			f := storetest.Finding(storetest.Spec{Node: "node-1", Actor: fmt.Sprintf("/tmp/race-%d", r), Container: "c1", Seen: t0})
			ep := epochOf(f)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for g := range batches {
				wg.Go(func() {
					<-start
					_, err := st.UpsertFindings(context.Background(), []store.Upsert{
						{Finding: cumulative(f, 2, t0), MsgKey: fmt.Sprintf("a:%d:%d", r, g), Reporter: "a", Epoch: ep},
						{Finding: cumulative(f, 5, t0), MsgKey: fmt.Sprintf("b:%d:%d", r, g), Reporter: "b", Epoch: ep},
					})
					if err != nil {
						t.Errorf("round %d batch %d: %v", r, g, err)
					}
				})
			}
			close(start)
			wg.Wait()
			got, err := st.GetFinding(context.Background(), f.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.Service.Count != 7 {
				t.Fatalf("round %d: count %d, want 7 (2 from reporter a, 5 from b)", r, got.Service.Count)
			}
		}
	})
}

func TestAgentTokens(t *testing.T) {
	forEngine(t, func(t *testing.T, engine string) {
		st := storetest.Open(t, engine, store.Options{})
		ctx := context.Background()
		at := time.Now().UTC().Truncate(time.Second)
		if err := st.PutAgentToken(ctx, store.AgentToken{NodeID: "n1", TokenID: "aaaaaaaaaaaa", SecretHash: "h1", CreatedAt: at}); err != nil {
			t.Fatal(err)
		}
		got, err := st.AgentToken(ctx, "aaaaaaaaaaaa")
		if err != nil || got.NodeID != "n1" || got.SecretHash != "h1" || !got.CreatedAt.Equal(at) {
			t.Fatalf("get: %+v %v", got, err)
		}
		// A node's new token replaces its old one.
		if err := st.PutAgentToken(ctx, store.AgentToken{NodeID: "n1", TokenID: "bbbbbbbbbbbb", SecretHash: "h2", CreatedAt: at}); err != nil {
			t.Fatal(err)
		}
		if _, err := st.AgentToken(ctx, "aaaaaaaaaaaa"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("replaced token: %v", err)
		}
		if err := st.PutAgentToken(ctx, store.AgentToken{NodeID: "n2", TokenID: "cccccccccccc", SecretHash: "h3", CreatedAt: at}); err != nil {
			t.Fatal(err)
		}
		if err := st.PutAgentToken(ctx, store.AgentToken{NodeID: "n3"}); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("token without id and hash: %v", err)
		}
		list, err := st.ListAgentTokens(ctx)
		if err != nil || len(list) != 2 || list[0].TokenID != "bbbbbbbbbbbb" || list[1].NodeID != "n2" {
			t.Fatalf("list: %+v %v", list, err)
		}
		if err := st.DeleteAgentToken(ctx, "", "cccccccccccc"); err != nil {
			t.Fatal(err)
		}
		if err := st.DeleteAgentToken(ctx, "n1", ""); err != nil {
			t.Fatal(err)
		}
		for _, del := range [][2]string{{"n1", ""}, {"", "cccccccccccc"}} {
			if err := st.DeleteAgentToken(ctx, del[0], del[1]); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("delete %v again: %v", del, err)
			}
		}
		if err := st.DeleteAgentToken(ctx, "", ""); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("delete without a key: %v", err)
		}
	})
}

// TestLateHashFillsTheStoredOccurrence: the agent sends a finding raised at
// exec before its executable is hashed, then the same occurrence again with
// the hash; the stored finding takes the hash and keeps its count.
func TestLateHashFillsTheStoredOccurrence(t *testing.T) {
	forEngine(t, func(t *testing.T, engine string) {
		st := storetest.Open(t, engine, store.Options{})
		t0 := time.Now().UTC().Add(-time.Hour).Truncate(time.Millisecond)
		f := storetest.Finding(storetest.Spec{Node: "n1", Actor: "/tmp/dropped", Seen: t0})
		f.Service.RuntimeDetails.Process.ExecutableSha256 = ""
		upsert(t, st, store.Upsert{Finding: cumulative(f, 1, t0), MsgKey: "m1", Reporter: "n1", Epoch: epochOf(f)})
		with := func(uuid, exe, sum string) *finding.Finding {
			c := cumulative(f, 1, t0)
			p := *f.Service.RuntimeDetails.Process
			p.UUID, p.ExecutablePath, p.ExecutableSha256 = uuid, exe, sum
			c.Service.RuntimeDetails.Process = &p
			return c
		}
		own := f.Service.RuntimeDetails.Process
		// Another process's hash, or the same process's hash of another
		// image, never lands on this occurrence.
		upsert(t, st, store.Upsert{Finding: with("someone-else", own.ExecutablePath, strings.Repeat("cd", 32)), MsgKey: "m2", Reporter: "n1", Epoch: epochOf(f)})
		upsert(t, st, store.Upsert{Finding: with(own.UUID, "/tmp/next-image", strings.Repeat("ef", 32)), MsgKey: "m3", Reporter: "n1", Epoch: epochOf(f)})
		got, err := st.GetFinding(context.Background(), f.ID)
		if err != nil {
			t.Fatal(err)
		}
		if h := got.Service.RuntimeDetails.Process.ExecutableSha256; h != "" {
			t.Fatalf("a hash of another process or image landed: %q", h)
		}
		want := strings.Repeat("ab", 32)
		if r := upsert(t, st, store.Upsert{Finding: with(own.UUID, own.ExecutablePath, want), MsgKey: "m4", Reporter: "n1", Epoch: epochOf(f)}); r[0].Outcome != store.OutcomeUpdated {
			t.Errorf("the hashed copy: %v, want updated", r[0].Outcome)
		}
		if got, err = st.GetFinding(context.Background(), f.ID); err != nil {
			t.Fatal(err)
		}
		if h := got.Service.RuntimeDetails.Process.ExecutableSha256; h != want || got.Service.Count != 1 {
			t.Errorf("stored hash %q count %d, want %q and 1", h, got.Service.Count, want)
		}
	})
}

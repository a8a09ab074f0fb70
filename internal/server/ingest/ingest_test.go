package ingest_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mamori-dev/mamori/internal/finding"
	"github.com/mamori-dev/mamori/internal/server/coverage"
	"github.com/mamori-dev/mamori/internal/server/ingest"
	"github.com/mamori-dev/mamori/internal/server/store"
	"github.com/mamori-dev/mamori/internal/server/store/storetest"
	"github.com/mamori-dev/mamori/internal/transport"
)

func newIngester(t *testing.T, st store.Store, cfg ingest.Config) *ingest.Ingester {
	t.Helper()
	cfg.Store = st
	in, err := ingest.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(in.Close)
	return in
}

// applyAll applies msgs with n concurrent handlers, as a consumer does.
func applyAll(t *testing.T, in *ingest.Ingester, msgs []ingest.Input, n int) {
	t.Helper()
	var wg sync.WaitGroup
	ch := make(chan ingest.Input)
	for range n {
		wg.Go(func() {
			for m := range ch {
				if err := in.Apply(context.Background(), m); err != nil {
					t.Errorf("apply: %v", err)
				}
			}
		})
	}
	for _, m := range msgs {
		ch <- m
	}
	close(ch)
	wg.Wait()
}

func checkCounts(t *testing.T, st store.Store, want map[string]int64) {
	t.Helper()
	page, err := st.ListFindings(context.Background(), store.Query{Limit: store.MaxPageSize})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Findings) != len(want) {
		t.Errorf("%d findings stored, want %d", len(page.Findings), len(want))
	}
	for _, r := range page.Findings {
		if r.Service.Count != want[r.ID] {
			t.Errorf("finding %s: count %d, want %d", r.ID, r.Service.Count, want[r.ID])
		}
	}
}

func TestIngestMergesAndReplaysOnce(t *testing.T) {
	for _, engine := range storetest.Engines {
		t.Run(engine, func(t *testing.T) {
			st := storetest.Open(t, engine, store.Options{})
			var mu sync.Mutex
			changes := map[bool]int{}
			m := ingest.NewMetrics(nil)
			in := newIngester(t, st, ingest.Config{Metrics: m, OnChange: func(c ingest.Change) {
				mu.Lock()
				changes[c.New]++
				mu.Unlock()
			}})
			s := agentStream(t, 1, 3, 10, 2, 4)
			applyAll(t, in, s.Msgs, 16)
			// Every message again (a redelivery storm after a lost ack).
			applyAll(t, in, s.Msgs, 16)
			checkCounts(t, st, s.Want)
			if changes[true] != len(s.Want) {
				t.Errorf("%d new-finding changes, want %d", changes[true], len(s.Want))
			}
			if d := testutil.ToFloat64(m.Messages.WithLabelValues("finding", "duplicate")); d != float64(len(s.Msgs)) {
				t.Errorf("%v duplicates counted, want %d", d, len(s.Msgs))
			}
		})
	}
}

func TestIngestSuppression(t *testing.T) {
	st := storetest.Open(t, store.EngineSQLite, store.Options{})
	ctx := context.Background()
	in := newIngester(t, st, ingest.Config{})
	if err := in.Apply(ctx, input(t, "n1", transport.KindFinding, validFinding("n1"))); err != nil {
		t.Fatal(err)
	}
	rule, err := st.CreateRule(ctx, store.Rule{Name: "netcat in app is expected", Action: store.ActionArchive,
		Criteria: []store.Criterion{{Field: "service.runtimeDetails.process.executablePath", Op: store.OpEq, Value: "/usr/bin/nc"},
			{Field: "resource.containerDetails.image", Op: store.OpMatches, Value: "app:*"}}})
	if err != nil {
		t.Fatal(err)
	}
	in.InvalidateRules()
	f2 := storetest.Finding(storetest.Spec{Node: "n1", Actor: "/usr/bin/nc", Container: "c2", Image: "app:2"})
	other := storetest.Finding(storetest.Spec{Node: "n1", Actor: "/usr/bin/nc", Container: "c3", Image: "db:1"})
	for _, f := range []*finding.Finding{f2, other} {
		if err := in.Apply(ctx, input(t, "n1", transport.KindFinding, f)); err != nil {
			t.Fatal(err)
		}
	}
	got, _ := st.GetFinding(ctx, f2.ID)
	if !got.Service.Archived || got.SuppressedBy != rule.ID {
		t.Errorf("matching finding: archived %v suppressedBy %q", got.Service.Archived, got.SuppressedBy)
	}
	got, _ = st.GetFinding(ctx, other.ID)
	if got.Service.Archived || got.SuppressedBy != "" {
		t.Errorf("other finding suppressed")
	}
	// Rules apply to new findings and updates, not retroactively: the first
	// finding stays until it is seen again.
	first := validFinding("n1")
	if got, _ := st.GetFinding(ctx, first.ID); got.Service.Archived {
		t.Error("rule applied retroactively")
	}
	again := *first
	again.Service.Count = 2
	again.Service.EventLastSeen = time.Now().UTC()
	if err := in.Apply(ctx, input(t, "n1", transport.KindFinding, &again)); err != nil {
		t.Fatal(err)
	}
	if got, _ := st.GetFinding(ctx, first.ID); got.SuppressedBy != rule.ID {
		t.Error("update of a matching finding not suppressed")
	}
}

// TestHostileInput sends every kind of bad message: each is refused with a
// permanent, counted, reasoned error, and the ingester keeps working.
func TestHostileInput(t *testing.T) {
	st := storetest.Open(t, store.EngineSQLite, store.Options{})
	cov, err := coverage.New(coverage.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	m := ingest.NewMetrics(nil)
	in := newIngester(t, st, ingest.Config{Coverage: cov, Metrics: m, MaxFindingBytes: 64 << 10})
	ctx := context.Background()
	good := validFinding("n1")
	mut := func(edit func(f *finding.Finding)) []byte {
		c := *validFinding("n1")
		edit(&c)
		return mustJSON(t, &c)
	}
	victim := validFinding("victim")
	if err := in.Apply(ctx, input(t, "victim", transport.KindFinding, victim)); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, node, kind, reason string
		payload                  []byte
	}{
		{"oversized", "n1", "finding", "oversized", []byte(`{"id":"` + strings.Repeat("a", 70<<10) + `"}`)},
		{"not json", "n1", "finding", "malformed", []byte(`{"id": nope`)},
		{"array", "n1", "finding", "malformed", []byte(`[1,2,3]`)},
		{"trailing", "n1", "finding", "malformed", append(mustJSON(t, good), []byte(` {"id":"x"}`)...)},
		{"wrong types", "n1", "finding", "malformed", []byte(`{"severity":"high"}`)},
		{"empty object", "n1", "finding", "invalid", []byte(`{}`)},
		{"bad id", "n1", "finding", "invalid", mut(func(f *finding.Finding) { f.ID = "../../etc/passwd" })},
		{"bad severity", "n1", "finding", "invalid", mut(func(f *finding.Finding) { f.Severity = 1e9 })},
		{"unknown type", "n1", "finding", "invalid", mut(func(f *finding.Finding) { f.Type = "Made:Up/Thing" })},
		{"negative count", "n1", "finding", "invalid", mut(func(f *finding.Finding) { f.Service.Count = -5 })},
		{"huge count", "n1", "finding", "invalid", mut(func(f *finding.Finding) { f.Service.Count = 1 << 50 })},
		{"future", "n1", "finding", "future", mut(func(f *finding.Finding) {
			f.Service.EventLastSeen = time.Now().Add(time.Hour)
		})},
		{"speaks for another node", "n1", "finding", "node_mismatch", mustJSON(t, validFinding("n2"))},
		{"agent id of another node", "n1", "finding", "node_mismatch", mut(func(f *finding.Finding) {
			f.Service.AdditionalInfo.AgentDetails.AgentID = "n2"
		})},
		{"overwrite another node's finding", "n1", "finding", "id_conflict", mut(func(f *finding.Finding) { f.ID = victim.ID })},
		{"unknown kind", "n1", "telemetry", "unknown_kind", []byte(`{}`)},
		{"heartbeat garbage", "n1", "heartbeat", "malformed", []byte(`{"nodeId":1}`)},
		{"heartbeat wrong type", "n1", "heartbeat", "malformed", []byte(`{"nodeId":"n1","time":"2026-01-01T00:00:00Z","hooks":"all"}`)},
		{"heartbeat without time", "n1", "heartbeat", "malformed", []byte(`{"nodeId":"n1","btf":true}`)},
		{"heartbeat of another node", "n1", "heartbeat", "node_mismatch", []byte(`{"nodeId":"n2","time":"2026-01-01T00:00:00Z","btf":true}`)},
		{"heartbeat from the future", "n1", "heartbeat", "future", []byte(`{"nodeId":"n1","time":"2999-01-01T00:00:00Z","btf":true}`)},
		{"heartbeat oversized", "n1", "heartbeat", "oversized", []byte(`{"nodeId":"` + strings.Repeat("x", coverage.MaxHeartbeatBytes) + `"}`)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := testutil.ToFloat64(m.Rejected.WithLabelValues(kindLabel(tc.kind), tc.reason))
			err := in.Apply(ctx, ingest.Input{Key: "k-" + tc.name, NodeID: tc.node, Kind: tc.kind, SentAt: time.Now(), Payload: tc.payload})
			var re *ingest.RejectError
			if !errors.As(err, &re) || re.Reason != tc.reason {
				t.Fatalf("error %v, want reason %s", err, tc.reason)
			}
			if !strings.Contains(err.Error(), tc.reason) {
				t.Errorf("error does not say why: %v", err)
			}
			// Permanent: the transport terminates instead of retrying.
			if !isPermanent(err) {
				t.Errorf("rejection is not permanent: %T", err)
			}
			if after := testutil.ToFloat64(m.Rejected.WithLabelValues(kindLabel(tc.kind), tc.reason)); after != before+1 {
				t.Errorf("rejection not counted (%v → %v)", before, after)
			}
		})
	}
	// Still working; the victim's finding untouched.
	if err := in.Apply(ctx, input(t, "n1", transport.KindFinding, good)); err != nil {
		t.Fatalf("after hostile input: %v", err)
	}
	if got, _ := st.GetFinding(ctx, victim.ID); got.Service.Count != 1 || got.Resource.InstanceDetails.NodeID != "victim" {
		t.Errorf("victim's finding changed: %+v", got.Service)
	}
	if s, _ := st.Stats(ctx); s.Findings != 2 {
		t.Errorf("%d findings stored, want 2", s.Findings)
	}
}

func kindLabel(k string) string {
	switch k {
	case "finding", "heartbeat", "event":
		return k
	}
	return "unknown"
}

// isPermanent reports whether err is what transport.Permanent makes (the
// consumer then terminates the message instead of retrying it).
func isPermanent(err error) bool {
	return fmtType(err) == fmtType(transport.Permanent(errors.New("x")))
}

func TestHeartbeatsReachCoverage(t *testing.T) {
	st := storetest.Open(t, store.EngineSQLite, store.Options{})
	cov, _ := coverage.New(coverage.Config{Store: st})
	in := newIngester(t, st, ingest.Config{Coverage: cov})
	ctx := context.Background()
	hb := coverage.Heartbeat{NodeID: "n1", Cluster: "prod", AgentVersion: "1", BTF: true, Time: time.Now().UTC(),
		Hooks: []coverage.Hook{{Hook: "tracepoint/syscalls/sys_enter_mount", Error: "EPERM"}}}
	if err := in.Apply(ctx, input(t, "n1", transport.KindHeartbeat, hb)); err != nil {
		t.Fatal(err)
	}
	n, err := cov.Node(ctx, "n1")
	if err != nil || n.Issue != "HOOK_ATTACH_FAILED:hook tracepoint/syscalls/sys_enter_mount failed to attach: EPERM" {
		t.Fatalf("node %+v %v", n, err)
	}
	// Findings of that node now carry its cluster.
	if err := in.Apply(ctx, input(t, "n1", transport.KindFinding, validFinding("n1"))); err != nil {
		t.Fatal(err)
	}
	p, _ := st.ListFindings(ctx, store.Query{Criteria: []store.Criterion{{Field: "cluster", Op: store.OpEq, Value: "prod"}}})
	if p.Total != 1 {
		t.Errorf("findings in cluster prod: %d", p.Total)
	}
	// Events are acknowledged and counted, not stored.
	if err := in.Apply(ctx, input(t, "n1", transport.KindEvent, map[string]any{"kind": "exec"})); err != nil {
		t.Errorf("event: %v", err)
	}
}

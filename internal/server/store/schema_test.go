package store_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mamori-dev/mamori/internal/server/store"
	"github.com/mamori-dev/mamori/internal/server/store/storetest"
)

// TestMigrations opens a database at schema 1, stores data, then lets a
// current build upgrade it; reopening is a no-op and a database from a
// newer build is refused.
func TestMigrations(t *testing.T) {
	forEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		dsn := storetest.DSN(t, engine)
		old, err := store.Open(ctx, dsn, store.WithTargetVersion(store.Options{}, 1))
		if err != nil {
			t.Fatal(err)
		}
		if v, _ := old.SchemaVersion(ctx); v != 1 {
			t.Fatalf("version %d, want 1", v)
		}
		f := storetest.Finding(storetest.Spec{Node: "n1", Actor: "/bin/x"})
		if _, err := old.UpsertFindings(ctx, []store.Upsert{{Finding: f, MsgKey: "m1"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := old.ListNodes(ctx); err == nil {
			t.Error("schema 1 has no nodes table, yet listing nodes worked")
		}
		old.Close()

		for range 2 {
			st, err := store.Open(ctx, dsn, store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if v, _ := st.SchemaVersion(ctx); v != store.LatestSchema() {
				t.Errorf("version %d, want %d", v, store.LatestSchema())
			}
			if got, err := st.GetFinding(ctx, f.ID); err != nil || got.Service.Count != 1 {
				t.Errorf("finding after upgrade: %v", err)
			}
			if _, err := st.ListNodes(ctx); err != nil {
				t.Errorf("nodes after upgrade: %v", err)
			}
			st.Close()
		}

		// A newer build migrated this database: refuse, do not guess.
		db := rawDB(t, engine, dsn)
		if _, err := db.Exec(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (99, 'future', 0)`); err != nil {
			t.Fatal(err)
		}
		db.Close()
		if _, err := store.Open(ctx, dsn, store.Options{}); !errors.Is(err, store.ErrSchemaNewer) {
			t.Errorf("opening a newer schema: %v", err)
		}
	})
}

func rawDB(t *testing.T, engine, dsn string) *sql.DB {
	t.Helper()
	driver, src := "pgx", dsn
	if engine == store.EngineSQLite {
		driver, src = "sqlite", strings.TrimPrefix(dsn, "sqlite:")
	}
	db, err := sql.Open(driver, src)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// TestMigrationsConcurrent starts several PostgreSQL replicas on one empty
// database at once: exactly one migrates, all open.
func TestMigrationsConcurrent(t *testing.T) {
	dsn := storetest.PostgresDSN(t)
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			st, err := store.Open(context.Background(), dsn, store.Options{})
			if err == nil {
				st.Close()
			}
			errs <- err
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

func TestRules(t *testing.T) {
	forEngine(t, func(t *testing.T, engine string) {
		st := storetest.Open(t, engine, store.Options{})
		ctx := context.Background()
		bad := []store.Rule{
			{Name: "", Action: store.ActionArchive, Criteria: []store.Criterion{{Field: "type", Op: "eq", Value: "x"}}},
			{Name: "no criteria", Action: store.ActionArchive},
			{Name: "bad action", Action: "DELETE", Criteria: []store.Criterion{{Field: "type", Op: "eq", Value: "x"}}},
			{Name: "bad op", Criteria: []store.Criterion{{Field: "type", Op: "like", Value: "x"}}},
			{Name: "bad field", Criteria: []store.Criterion{{Field: "doc'); DROP TABLE rules; --", Op: "eq", Value: "x"}}},
			{Name: "bad time", Criteria: []store.Criterion{{Field: "createdAt", Op: "gt", Value: "yesterday"}}},
			{Name: "bool order", Criteria: []store.Criterion{{Field: "service.archived", Op: "gt", Value: true}}},
			{Name: "object value", Criteria: []store.Criterion{{Field: "type", Op: "eq", Value: map[string]any{}}}},
		}
		for _, r := range bad {
			if _, err := st.CreateRule(ctx, r); !errors.Is(err, store.ErrInvalid) {
				t.Errorf("rule %q: %v, want ErrInvalid", r.Name, err)
			}
		}
		a, err := st.CreateRule(ctx, store.Rule{Name: "b", Rank: 2, Action: store.ActionArchive,
			Criteria: []store.Criterion{{Field: "severity", Op: "lt", Value: 4}, {Field: "createdAt", Op: "gt", Value: "2026-01-01T00:00:00+09:00"}}})
		if err != nil {
			t.Fatal(err)
		}
		b, err := st.CreateRule(ctx, store.Rule{Name: "a", Rank: 1, Criteria: []store.Criterion{{Field: "type", Op: "matches", Value: "Discovery:*"}}})
		if err != nil {
			t.Fatal(err)
		}
		if b.Action != store.ActionNoop {
			t.Errorf("default action %q", b.Action)
		}
		rules, err := st.ListRules(ctx)
		if err != nil || len(rules) != 2 || rules[0].ID != b.ID || rules[1].ID != a.ID {
			t.Fatalf("list by rank: %+v %v", rules, err)
		}
		if rules[1].Criteria[0].Value != 4.0 || rules[1].Criteria[1].Value != "2025-12-31T15:00:00Z" {
			t.Errorf("stored criteria not normalized: %#v", rules[1].Criteria)
		}
		a.Name, a.Rank = "renamed", 0
		time.Sleep(2 * time.Millisecond)
		u, err := st.UpdateRule(ctx, *a)
		if err != nil || !u.UpdatedAt.After(u.CreatedAt) {
			t.Fatalf("update: %+v %v", u, err)
		}
		if got, _ := st.GetRule(ctx, a.ID); got.Name != "renamed" || !got.CreatedAt.Equal(a.CreatedAt) {
			t.Errorf("after update: %+v", got)
		}
		if _, err := st.UpdateRule(ctx, store.Rule{ID: "nope", Name: "x", Criteria: a.Criteria}); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("update missing: %v", err)
		}
		if err := st.DeleteRule(ctx, a.ID); err != nil {
			t.Fatal(err)
		}
		if err := st.DeleteRule(ctx, a.ID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("delete twice: %v", err)
		}
		if _, err := st.GetRule(ctx, a.ID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("get deleted: %v", err)
		}
	})
}

func TestNodesAndEvents(t *testing.T) {
	forEngine(t, func(t *testing.T, engine string) {
		st := storetest.Open(t, engine, store.Options{})
		ctx := context.Background()
		now := time.Now().UTC().Truncate(time.Microsecond)
		set := func(status, issue string) (*store.Node, *store.CoverageEvent) {
			n, ev, err := st.UpdateNode(ctx, "n1", func(old *store.Node) (*store.Node, *store.CoverageEvent, error) {
				n := &store.Node{Cluster: "prod", Hostname: "h1", ResourceType: "Instance", Status: status, Issue: issue,
					StatusSince: now, FirstSeen: now, LastHeartbeat: now, Heartbeat: []byte(`{"nodeId":"n1"}`)}
				if old != nil {
					n.FirstSeen = old.FirstSeen
					if old.Status == status && old.Issue == issue {
						return n, nil, nil
					}
					return n, &store.CoverageEvent{Cluster: "prod", From: old.Status, To: status, Issue: issue, Previous: old.Issue}, nil
				}
				return n, &store.CoverageEvent{Cluster: "prod", To: status, Issue: issue}, nil
			})
			if err != nil {
				t.Fatal(err)
			}
			return n, ev
		}
		if _, ev := set("Healthy", ""); ev == nil || ev.Seq == 0 || ev.From != "" {
			t.Fatalf("first event %+v", ev)
		}
		if _, ev := set("Healthy", ""); ev != nil {
			t.Errorf("no change logged %+v", ev)
		}
		_, ev := set("Unhealthy", "AGENT_NOT_REPORTING:agent not reporting since x")
		if ev == nil || ev.From != "Healthy" {
			t.Fatalf("transition %+v", ev)
		}
		evs, err := st.CoverageEvents(ctx, 0, 0)
		if err != nil || len(evs) != 2 || evs[1].Seq != ev.Seq || evs[1].Issue == "" {
			t.Fatalf("events %+v %v", evs, err)
		}
		if evs, _ := st.CoverageEvents(ctx, evs[0].Seq, 10); len(evs) != 1 {
			t.Errorf("events after first: %d", len(evs))
		}
		n, err := st.GetNode(ctx, "n1")
		if err != nil || n.Status != "Unhealthy" || !n.FirstSeen.Equal(now) || string(n.Heartbeat) == "" {
			t.Fatalf("node %+v %v", n, err)
		}
		// fn failing rolls back; returning nil writes nothing.
		boom := errors.New("boom")
		if _, _, err := st.UpdateNode(ctx, "n1", func(*store.Node) (*store.Node, *store.CoverageEvent, error) { return nil, nil, boom }); !errors.Is(err, boom) {
			t.Errorf("fn error: %v", err)
		}
		if _, _, err := st.UpdateNode(ctx, "n2", func(*store.Node) (*store.Node, *store.CoverageEvent, error) { return nil, nil, nil }); err != nil {
			t.Error(err)
		}
		if nodes, _ := st.ListNodes(ctx); len(nodes) != 1 {
			t.Errorf("nodes %d", len(nodes))
		}
		if err := st.DeleteNode(ctx, "n1"); err != nil {
			t.Error(err)
		}
		if _, err := st.GetNode(ctx, "n1"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("deleted node: %v", err)
		}
	})
}

// TestUpdateNodesBatch: several heartbeats of one node in one batch each
// see the one before, the row is written once with the last, and a node
// whose later update carries no hook list keeps the list an earlier one
// stored.
func TestUpdateNodesBatch(t *testing.T) {
	forEngine(t, func(t *testing.T, engine string) {
		st := storetest.Open(t, engine, store.Options{})
		ctx := context.Background()
		now := time.Now().UTC().Truncate(time.Microsecond)
		beat := func(id string, n int, digest string) store.NodeUpdate {
			return store.NodeUpdate{NodeID: id, Fn: func(old *store.Node) (*store.Node, *store.CoverageEvent, error) {
				prev := 0
				if old != nil {
					prev = int(old.LastHeartbeat.Sub(now) / time.Second)
				}
				if old != nil && prev != n-1 {
					return nil, nil, fmt.Errorf("%s beat %d saw beat %d", id, n, prev)
				}
				next := &store.Node{Cluster: "c", Hostname: id, ResourceType: "Instance", Status: "Healthy",
					StatusSince: now, FirstSeen: now, LastHeartbeat: now.Add(time.Duration(n) * time.Second),
					Heartbeat: fmt.Appendf(nil, `{"n":%d}`, n), State: []byte(`{}`)}
				if digest != "" {
					next.HooksDigest, next.Hooks = digest, []byte(`[{"program":"`+digest+`"}]`)
				}
				var ev *store.CoverageEvent
				if old == nil {
					ev = &store.CoverageEvent{Cluster: "c", To: "Healthy"}
				}
				return next, ev, nil
			}}
		}
		res, err := st.UpdateNodes(ctx, []store.NodeUpdate{beat("a", 0, "d1"), beat("b", 0, ""), beat("a", 1, ""), beat("a", 2, "")})
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range res {
			if r.Err != nil {
				t.Errorf("update %d: %v", i, r.Err)
			}
		}
		if res[0].Event == nil || res[1].Event == nil || res[2].Event != nil {
			t.Errorf("events: %+v %+v %+v", res[0].Event, res[1].Event, res[2].Event)
		}
		if res[3].Node.HooksDigest != "d1" {
			t.Errorf("result of the last beat has hooks %q, want the batch's first", res[3].Node.HooksDigest)
		}
		a, err := st.GetNode(ctx, "a")
		if err != nil {
			t.Fatal(err)
		}
		if string(a.Heartbeat) != `{"n":2}` || a.HooksDigest != "d1" || string(a.Hooks) != `[{"program":"d1"}]` {
			t.Errorf("stored a: heartbeat %s, hooks %q %s", a.Heartbeat, a.HooksDigest, a.Hooks)
		}
		// The next batch reads what this one committed.
		if res, err := st.UpdateNodes(ctx, []store.NodeUpdate{beat("a", 3, "d2")}); err != nil || res[0].Err != nil {
			t.Fatalf("second batch: %v %+v", err, res)
		}
		if a, _ := st.GetNode(ctx, "a"); a == nil || a.HooksDigest != "d2" || string(a.Heartbeat) != `{"n":3}` {
			t.Errorf("after the second batch: %+v", a)
		}

		// Updates read rows without the hook list; it loads on demand,
		// inside the update and from its result afterwards.
		var inside string
		res, err = st.UpdateNodes(ctx, []store.NodeUpdate{{NodeID: "a", Fn: func(old *store.Node) (*store.Node, *store.CoverageEvent, error) {
			if len(old.Hooks) != 0 || old.HooksDigest != "d2" {
				return nil, nil, fmt.Errorf("row read with hooks %q under %q", old.Hooks, old.HooksDigest)
			}
			if err := old.LoadHooks(ctx); err != nil {
				return nil, nil, err
			}
			inside = string(old.Hooks)
			next := *old
			next.Hooks, next.HooksDigest = nil, "" // keeps the stored list
			next.Heartbeat = []byte(`{"n":4}`)
			return &next, nil, nil
		}}})
		if err != nil || res[0].Err != nil {
			t.Fatalf("third batch: %v %+v", err, res)
		}
		if inside != `[{"program":"d2"}]` {
			t.Errorf("hooks loaded inside the update: %q", inside)
		}
		after := res[0].Node
		if err := after.LoadHooks(ctx); err != nil || string(after.Hooks) != `[{"program":"d2"}]` || after.HooksDigest != "d2" {
			t.Errorf("hooks of the result: %q %q %v", after.Hooks, after.HooksDigest, err)
		}
	})
}

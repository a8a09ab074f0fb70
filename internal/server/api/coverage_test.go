package api

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mamori-dev/mamori/internal/server/coverage"
)

// TestCoverage feeds real heartbeats to a coverage Monitor over the
// store and reads them back through the API: statuses, issues, filters,
// statistics, the transition log, and a node that went silent.
func TestCoverage(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	mon, err := coverage.New(coverage.Config{Store: e.st, Policy: coverage.Policy{NotReportingAfter: time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	e.api.opt.Coverage = mon
	now := time.Now().UTC()
	hb := func(node, cluster, platform string, edit func(h *coverage.Heartbeat), received time.Time) {
		h := &coverage.Heartbeat{NodeID: node, Hostname: node + ".local", Cluster: cluster, Platform: platform,
			AgentVersion: "test", Kernel: "6.18.0", BTF: true, Time: received, Started: received.Add(-time.Hour), IntervalSeconds: 10,
			Hooks:    []coverage.Hook{{Program: "exec", Family: "process", Hook: "tp_btf/sched_process_exec", Attached: true}},
			Runtimes: []coverage.Runtime{{Name: "containerd", Socket: "/run/containerd/containerd.sock", Reachable: true}}}
		if edit != nil {
			edit(h)
		}
		if _, err := mon.Observe(ctx, h, received); err != nil {
			t.Fatal(err)
		}
	}
	hb("n1", "prod", "kubernetes", nil, now)
	hb("n2", "prod", "kubernetes", func(h *coverage.Heartbeat) {
		h.Hooks = append(h.Hooks, coverage.Hook{Program: "mount", Family: "mount", Hook: "tracepoint/syscalls/sys_enter_mount", Error: "no such tracepoint"})
	}, now)
	hb("n3", "prod", "host", func(h *coverage.Heartbeat) { h.BTF = false }, now)
	hb("n4", "dev", "ecs", nil, now)
	hb("n5", "dev", "ecs", nil, now.Add(-10*time.Minute)) // silent since

	var all struct{ Nodes []coverage.NodeStatus }
	e.must(http.StatusOK, "GET", "/coverage", ScopeRead, nil, &all)
	if len(all.Nodes) != 5 {
		t.Fatalf("%d nodes", len(all.Nodes))
	}
	byID := map[string]coverage.NodeStatus{}
	for _, n := range all.Nodes {
		byID[n.NodeID] = n
	}
	for id, want := range map[string]string{"n1": "", "n2": coverage.IssueHookFailed, "n3": coverage.IssueNoBTF,
		"n4": "", "n5": coverage.IssueNotReporting} {
		n := byID[id]
		if want == "" {
			if n.Status != coverage.Healthy || n.Issue != "" {
				t.Errorf("%s: %s %q, want Healthy", id, n.Status, n.Issue)
			}
			continue
		}
		if n.Status != coverage.Unhealthy || !strings.HasPrefix(n.Issue, want+":") {
			t.Errorf("%s: %s %q, want Unhealthy %s", id, n.Status, n.Issue, want)
		}
	}
	var bad struct{ Nodes []coverage.NodeStatus }
	e.must(http.StatusOK, "GET", "/coverage?status=Unhealthy&cluster=prod", ScopeRead, nil, &bad)
	if len(bad.Nodes) != 2 {
		t.Fatalf("unhealthy prod: %+v", bad.Nodes)
	}
	var st CoverageStatistics
	e.must(http.StatusOK, "GET", "/coverage/statistics", ScopeRead, nil, &st)
	o := st.Overall
	if o.Total != 5 || o.Healthy != 2 || o.Unhealthy != 3 || o.Issues[coverage.IssueNotReporting] != 1 || o.HealthyPercent != 40 {
		t.Fatalf("overall %+v", o)
	}
	if len(st.Groups) != 3 || st.Groups[0].Cluster != "dev" || st.Groups[0].Unhealthy != 1 || len(st.ClusterRollups) != 2 {
		t.Fatalf("groups %+v rollups %+v", st.Groups, st.ClusterRollups)
	}
	var one coverage.NodeStatus
	e.must(http.StatusOK, "GET", "/coverage/n2", ScopeRead, nil, &one)
	if one.Status != coverage.Unhealthy || len(one.Hooks) != 2 {
		t.Fatalf("n2 %+v", one)
	}
	e.must(http.StatusNotFound, "GET", "/coverage/nope", ScopeRead, nil, nil)
	var evs struct{ Events []struct{ Seq int64 } }
	e.must(http.StatusOK, "GET", "/coverage/events?limit=2", ScopeRead, nil, &evs)
	if len(evs.Events) != 2 || evs.Events[0].Seq >= evs.Events[1].Seq {
		t.Fatalf("events %+v", evs.Events)
	}
	e.must(http.StatusBadRequest, "GET", "/coverage?status=Sick", ScopeRead, nil, nil)
	e.must(http.StatusBadRequest, "GET", "/coverage?zone=a", ScopeRead, nil, nil)
	e.must(http.StatusBadRequest, "GET", "/coverage/events?limit=0", ScopeRead, nil, nil)
}

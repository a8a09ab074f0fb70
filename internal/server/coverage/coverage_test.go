package coverage_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mamori-dev/mamori/internal/server/coverage"
	"github.com/mamori-dev/mamori/internal/server/store"
	"github.com/mamori-dev/mamori/internal/server/store/storetest"
)

func TestMain(m *testing.M) { storetest.Main(m) }

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// healthy is a heartbeat of a node with nothing wrong.
func healthy(node string, at time.Time) *coverage.Heartbeat {
	return &coverage.Heartbeat{NodeID: node, Hostname: node + ".local", Cluster: "prod", Platform: "kubernetes",
		AgentVersion: "0.1.0", Kernel: "6.18.0", BTF: true, Time: at, Started: at.Add(-time.Hour), IntervalSeconds: 10,
		Hooks: []coverage.Hook{
			{Program: "exec", Family: "process", Hook: "tp_btf/sched_process_exec", Attached: true},
			{Program: "lsm_open", Family: "file", Hook: "lsm/file_open", Optional: true, Error: "EPERM"},
		},
		Drops:    map[string]uint64{"kernel": 5, "queue": 0},
		Runtimes: []coverage.Runtime{{Name: "containerd", Socket: "/run/containerd/containerd.sock", Reachable: true}},
		Labels:   map[string]string{"kubernetes.io/os": "linux"}, LastEvent: at}
}

func newMonitor(t *testing.T, engine string, c *clock, p coverage.Policy) (*coverage.Monitor, store.Store) {
	t.Helper()
	st := storetest.Open(t, engine, store.Options{})
	m, err := coverage.New(coverage.Config{Store: st, Policy: p, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	return m, st
}

func TestIssues(t *testing.T) {
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name  string
		edit  func(h *coverage.Heartbeat)
		issue string // "" for Healthy
	}{
		{"healthy", func(*coverage.Heartbeat) {}, ""},
		{"excluded", func(h *coverage.Heartbeat) { h.Labels[coverage.ManagedLabel] = "false" },
			"EXCLUDED_BY_LABEL:excluded by label mamori.io/managed=false"},
		{"managed true is covered", func(h *coverage.Heartbeat) { h.Labels[coverage.ManagedLabel] = "true" }, ""},
		{"exited", func(h *coverage.Heartbeat) { h.Exit = &coverage.Exit{Code: 2, Reason: "sensor: ring buffer: ENOMEM"} },
			"AGENT_EXITED:agent exited with code 2: sensor: ring buffer: ENOMEM"},
		{"no btf", func(h *coverage.Heartbeat) { h.BTF = false; h.Kernel = "5.4.0-generic" },
			"KERNEL_NO_BTF:kernel 5.4.0-generic lacks BTF (/sys/kernel/btf/vmlinux)"},
		{"sensor failed", func(h *coverage.Heartbeat) { h.SensorError = "load bpf: operation not permitted"; h.Hooks = nil },
			"SENSOR_FAILED:sensor failed to load: load bpf: operation not permitted"},
		{"hook failed", func(h *coverage.Heartbeat) {
			h.Hooks = append(h.Hooks, coverage.Hook{Program: "mount", Family: "mount", Hook: "tracepoint/syscalls/sys_enter_mount", Error: "no such tracepoint"},
				coverage.Hook{Program: "umount", Family: "mount", Hook: "tracepoint/syscalls/sys_enter_umount", Error: "EINVAL"})
		}, "HOOK_ATTACH_FAILED:hook tracepoint/syscalls/sys_enter_mount failed to attach: no such tracepoint (and 1 more)"},
		{"hook detached by another process", func(h *coverage.Heartbeat) {
			h.Hooks = append(h.Hooks, coverage.Hook{Program: "dns_ingress", Family: "dns", Hook: "cgroup_skb/ingress", Attached: true,
				DetachedAt: h.Time.Add(-20 * time.Second), Detaches: 1})
		}, "HOOK_DETACHED:hook cgroup_skb/ingress was detached by another process at 2026-03-01T11:59:40Z (re-attached; detachments since the agent started: 1)"},
		{"hook detached over a minute ago", func(h *coverage.Heartbeat) {
			h.Hooks = append(h.Hooks, coverage.Hook{Program: "dns_ingress", Family: "dns", Hook: "cgroup_skb/ingress", Attached: true,
				DetachedAt: h.Time.Add(-61 * time.Second), Detaches: 1})
		}, ""},
		{"runtime unreachable", func(h *coverage.Heartbeat) {
			h.Runtimes = append(h.Runtimes, coverage.Runtime{Name: "docker", Socket: "/var/run/docker.sock", Error: "connection refused"})
		}, "RUNTIME_UNREACHABLE:container runtime unreachable at /var/run/docker.sock: connection refused"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := &clock{t: start}
			m, _ := newMonitor(t, store.EngineSQLite, c, coverage.Policy{})
			h := healthy("n1", start)
			tc.edit(h)
			s, err := m.Observe(context.Background(), h, start)
			if err != nil {
				t.Fatal(err)
			}
			want := coverage.Healthy
			if tc.issue != "" {
				want = coverage.Unhealthy
			}
			if s.Status != want || s.Issue != tc.issue {
				t.Errorf("got %s %q, want %s %q", s.Status, s.Issue, want, tc.issue)
			}
		})
	}
}

func TestDropsInTheLastMinute(t *testing.T) {
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	c := &clock{t: start}
	m, _ := newMonitor(t, store.EngineSQLite, c, coverage.Policy{DropThreshold: 10})
	ctx := context.Background()
	h := healthy("n1", start)
	beat := func(kernel, queue uint64) *coverage.NodeStatus {
		t.Helper()
		h.Time = c.now()
		h.Drops = map[string]uint64{"kernel": kernel, "queue": queue}
		s, err := m.Observe(ctx, h, c.now())
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// Lifetime drops before we first hear of the agent are not "in the last minute".
	if s := beat(5000, 0); s.Status != coverage.Healthy {
		t.Fatalf("first heartbeat: %s %q", s.Status, s.Issue)
	}
	c.add(10 * time.Second)
	beat(5005, 0) // 5 in the window: under the threshold
	c.add(10 * time.Second)
	s := beat(5100, 20)
	if want := "EVENTS_DROPPED:events dropped 120 in the last minute (kernel 100, queue 20)"; s.Issue != want {
		t.Fatalf("issue %q, want %q", s.Issue, want)
	}
	// A minute later with no new loss the node recovers.
	for range 7 {
		c.add(10 * time.Second)
		s = beat(5100, 20)
	}
	if s.Status != coverage.Healthy {
		t.Errorf("after a quiet minute: %s %q", s.Status, s.Issue)
	}
	// A restarted agent counts from zero: a small total is new loss.
	c.add(10 * time.Second)
	h.Started = c.now().Add(-5 * time.Second)
	s = beat(50, 0)
	if !strings.HasPrefix(s.Issue, "EVENTS_DROPPED:events dropped 50 ") {
		t.Errorf("after restart: %q", s.Issue)
	}
}

func TestLateHeartbeatDoesNotRewind(t *testing.T) {
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	c := &clock{t: start}
	m, _ := newMonitor(t, store.EngineSQLite, c, coverage.Policy{})
	ctx := context.Background()
	old := healthy("n1", start)
	old.Hooks = append(old.Hooks, coverage.Hook{Hook: "tracepoint/x", Error: "gone"})
	fresh := healthy("n1", start.Add(time.Minute))
	c.add(time.Minute)
	if _, err := m.Observe(ctx, fresh, c.now()); err != nil {
		t.Fatal(err)
	}
	// The spooled older heartbeat arrives after the newer one.
	c.add(time.Second)
	s, err := m.Observe(ctx, old, c.now())
	if err != nil {
		t.Fatal(err)
	}
	if s.Status != coverage.Healthy || !s.LastHeartbeat.Equal(c.now()) {
		t.Errorf("late heartbeat: %s %q last %v", s.Status, s.Issue, s.LastHeartbeat)
	}
}

// A removed node's heartbeat still queued does not bring its row back —
// on another replica sharing the store, and after a restart, too — while a
// heartbeat made after the removal (the node enrolled again) does.
func TestRemovedNodeStaysGone(t *testing.T) {
	for _, engine := range []string{store.EngineSQLite, store.EnginePostgres} {
		t.Run(engine, func(t *testing.T) {
			// The store stamps the removal with the real clock.
			start := time.Now().Add(-2 * time.Minute).Truncate(time.Second)
			c := &clock{t: start}
			m, st := newMonitor(t, engine, c, coverage.Policy{})
			ctx := context.Background()
			if _, err := m.Observe(ctx, healthy("n1", start), c.now()); err != nil {
				t.Fatal(err)
			}
			c.add(time.Minute)
			if err := st.DeleteNode(ctx, "n1"); err != nil {
				t.Fatal(err)
			}
			// Another replica (or this one restarted) takes the heartbeat
			// the node sent before it was removed.
			replica, err := coverage.New(coverage.Config{Store: st, Now: c.now})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range []*coverage.Monitor{replica, m} {
				if _, err := r.Observe(ctx, healthy("n1", start.Add(30*time.Second)), c.now()); !errors.Is(err, coverage.ErrRemovedNode) {
					t.Fatalf("a removed node's late heartbeat: %v", err)
				}
			}
			if n, err := st.GetNode(ctx, "n1"); err == nil {
				t.Fatalf("a late heartbeat brought the removed node back: %+v", n.Status)
			}
			// A node never removed is not affected; nor is the node once
			// it enrolled again and reports.
			if _, err := replica.Observe(ctx, healthy("n2", start), c.now()); err != nil {
				t.Fatal(err)
			}
			if _, err := replica.Observe(ctx, healthy("n1", time.Now().Add(time.Second)), c.now()); err != nil {
				t.Fatal(err)
			}
			if _, err := st.GetNode(ctx, "n1"); err != nil {
				t.Fatalf("the node enrolled again is not covered: %v", err)
			}
			// Removing a node that has no row records the removal too.
			if err := st.DeleteNode(ctx, "n3"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("remove a node without a row: %v", err)
			}
			if _, err := m.Observe(ctx, healthy("n3", start), c.now()); !errors.Is(err, coverage.ErrRemovedNode) {
				t.Fatalf("a heartbeat made before its node's removal (which had no row): %v", err)
			}
		})
	}
}

func TestEnrolledWithoutHeartbeat(t *testing.T) {
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	c := &clock{t: start}
	m, _ := newMonitor(t, store.EngineSQLite, c, coverage.Policy{})
	ctx := context.Background()
	if err := m.Enrolled(ctx, "n9", "prod", start); err != nil {
		t.Fatal(err)
	}
	s, err := m.Node(ctx, "n9")
	if err != nil || s.Issue != "NO_HEARTBEAT:no heartbeat since enrollment at 2026-03-01T12:00:00Z" {
		t.Fatalf("enrolled node: %+v %v", s, err)
	}
	c.add(time.Second)
	if s, _ := m.Observe(ctx, healthy("n9", c.now()), c.now()); s.Status != coverage.Healthy {
		t.Errorf("after first heartbeat: %s %q", s.Status, s.Issue)
	}
	// Enrolling a known node again changes nothing.
	if err := m.Enrolled(ctx, "n9", "prod", c.now()); err != nil {
		t.Fatal(err)
	}
	if s, _ := m.Node(ctx, "n9"); s.Status != coverage.Healthy {
		t.Errorf("re-enrolled: %s", s.Status)
	}
}

func TestStatistics(t *testing.T) {
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	c := &clock{t: start}
	m, _ := newMonitor(t, store.EngineSQLite, c, coverage.Policy{})
	ctx := context.Background()
	for i, spec := range []struct {
		node, cluster, platform string
		bad                     bool
	}{
		{"a1", "prod", "kubernetes", false}, {"a2", "prod", "kubernetes", true}, {"a3", "prod", "host", false},
		{"b1", "dev", "ecs", false}, {"b2", "dev", "ecs", false},
	} {
		h := healthy(spec.node, start)
		h.Cluster, h.Platform = spec.cluster, spec.platform
		if spec.bad {
			h.BTF = false
		}
		if _, err := m.Observe(ctx, h, start.Add(time.Duration(i))); err != nil {
			t.Fatal(err)
		}
	}
	st, err := m.Statistics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Total != 5 || st.Healthy != 4 || st.Unhealthy != 1 {
		t.Errorf("totals %+v", st)
	}
	want := []coverage.Group{
		{Cluster: "dev", ResourceType: "ECSCluster", Total: 2, Healthy: 2, HealthyPercent: 100},
		{Cluster: "prod", ResourceType: "EKSCluster", Total: 2, Healthy: 1, Unhealthy: 1, HealthyPercent: 50},
		{Cluster: "prod", ResourceType: "Instance", Total: 1, Healthy: 1, HealthyPercent: 100},
	}
	if len(st.Groups) != len(want) {
		t.Fatalf("groups %+v", st.Groups)
	}
	for i := range want {
		if st.Groups[i] != want[i] {
			t.Errorf("group %d: %+v, want %+v", i, st.Groups[i], want[i])
		}
	}
	if len(st.Clusters) != 2 || st.Clusters[0].Status != coverage.Healthy || st.Clusters[1].Status != coverage.Unhealthy ||
		!strings.HasPrefix(st.Clusters[1].Issue, "1 of 3 nodes unhealthy: a2: KERNEL_NO_BTF:") {
		t.Errorf("rollups %+v", st.Clusters)
	}
	if len(st.ByResourceType) != 3 || st.ByResourceType[1].ResourceType != "EKSCluster" || st.ByResourceType[1].HealthyPercent != 50 {
		t.Errorf("by resource type %+v", st.ByResourceType)
	}
}

// TestBPFObjectsShown: a node on the build for older kernels is healthy,
// and its status says which build it runs and why, read back from the store.
func TestBPFObjectsShown(t *testing.T) {
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	m, _ := newMonitor(t, store.EngineSQLite, &clock{t: start}, coverage.Policy{})
	h := healthy("n1", start)
	h.BPFObjects = "compat: kernel lacks bpf_loop (Linux 5.17+)"
	if s, err := m.Observe(context.Background(), h, start); err != nil || s.Status != coverage.Healthy {
		t.Fatalf("observe: %v %+v", err, s)
	}
	s, err := m.Node(context.Background(), "n1")
	if err != nil || s == nil || s.BPFObjects != h.BPFObjects {
		t.Fatalf("node %+v (%v), want bpfObjects %q", s, err, h.BPFObjects)
	}
	h.BPFObjects = strings.Repeat("x", 513)
	if err := h.Validate(); err == nil || !strings.Contains(err.Error(), "bpfObjects") {
		t.Errorf("a 513-byte bpfObjects: %v, want an error naming it", err)
	}
}

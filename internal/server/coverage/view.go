package coverage

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	jsonv2 "github.com/go-json-experiment/json"

	"github.com/mamori-dev/mamori/internal/server/store"
)

// NodeStatus is one node's coverage as the API shows it.
type NodeStatus struct {
	NodeID       string `json:"nodeId"`
	Hostname     string `json:"hostname,omitempty"`
	Cluster      string `json:"cluster,omitempty"`
	ResourceType string `json:"resourceType"`
	// Status is Healthy or Unhealthy; Issue the first of Issues.
	Status        string            `json:"status"`
	Issue         string            `json:"issue,omitempty"`
	Issues        []string          `json:"issues,omitempty"`
	StatusSince   time.Time         `json:"statusSince"`
	FirstSeen     time.Time         `json:"firstSeen"`
	LastHeartbeat time.Time         `json:"lastHeartbeat,omitzero"`
	AgentVersion  string            `json:"agentVersion,omitempty"`
	Kernel        string            `json:"kernel,omitempty"`
	BTF           bool              `json:"btf"`
	BPFObjects    string            `json:"bpfObjects,omitempty"`
	Hooks         []Hook            `json:"hooks,omitempty"`
	Drops         map[string]uint64 `json:"drops,omitempty"` // cumulative since the agent started
	// DroppedLastMinute is the loss within the minute up to the latest
	// heartbeat, by source.
	DroppedLastMinute map[string]uint64 `json:"droppedLastMinute,omitempty"`
	LastEvent         time.Time         `json:"lastEvent,omitzero"`
	Runtimes          []Runtime         `json:"runtimes,omitempty"`
	Labels            map[string]string `json:"labels,omitempty"`

	heartbeat *Heartbeat
	state     state
}

func decodeState(n *store.Node, st *state) error {
	if len(n.State) == 0 {
		return nil
	}
	if err := jsonv2.Unmarshal(n.State, st); err != nil {
		return fmt.Errorf("node %s: stored state: %w", n.NodeID, err)
	}
	return nil
}

// heartbeatOf decodes a node's stored heartbeat. Its hook list comes from
// the cache when the digest matches (a sweep then decodes no hook lists),
// else from the stored list.
func (m *Monitor) heartbeatOf(n *store.Node) (*Heartbeat, error) {
	if len(n.Heartbeat) == 0 {
		return nil, nil
	}
	var h Heartbeat
	if err := jsonv2.Unmarshal(n.Heartbeat, &h); err != nil {
		return nil, fmt.Errorf("node %s: stored heartbeat: %w", n.NodeID, err)
	}
	// The hook list is stored apart (fill); rows written before it was
	// carry it inline.
	if len(h.Hooks) == 0 && n.HooksDigest != "" {
		if hooks, ok := m.hooks.get(n.NodeID, n.HooksDigest); ok {
			h.Hooks, h.HooksDigest = hooks, n.HooksDigest
			return &h, nil
		}
	}
	if len(h.Hooks) == 0 && len(n.Hooks) == 0 && n.HooksDigest != "" {
		// Read without its list, which this replica has not cached.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := n.LoadHooks(ctx)
		cancel()
		if err != nil {
			return nil, err
		}
	}
	if len(h.Hooks) == 0 && len(n.Hooks) > 0 {
		if err := json.Unmarshal(n.Hooks, &h.Hooks); err != nil {
			return nil, fmt.Errorf("node %s: stored hooks: %w", n.NodeID, err)
		}
		h.HooksDigest = n.HooksDigest
	}
	return &h, nil
}

// statusOf turns a stored row into its view. Issues are as stored: the
// row is re-judged by Sweep and on every heartbeat.
func (m *Monitor) statusOf(n *store.Node) (*NodeStatus, error) {
	s := &NodeStatus{NodeID: n.NodeID, Hostname: n.Hostname, Cluster: n.Cluster, ResourceType: n.ResourceType,
		Status: n.Status, Issue: n.Issue, StatusSince: n.StatusSince, FirstSeen: n.FirstSeen, LastHeartbeat: n.LastHeartbeat}
	if err := decodeState(n, &s.state); err != nil {
		return nil, err
	}
	h, err := m.heartbeatOf(n)
	if err != nil {
		return nil, err
	}
	s.heartbeat = h
	s.DroppedLastMinute = s.state.Dropped
	if h != nil {
		s.AgentVersion, s.Kernel, s.BTF, s.Hooks, s.Drops = h.AgentVersion, h.Kernel, h.BTF, h.Hooks, h.Drops
		s.BPFObjects = h.BPFObjects
		s.LastEvent, s.Runtimes, s.Labels = h.LastEvent, h.Runtimes, h.Labels
	}
	return s, nil
}

// withIssues fills Issues by judging the node at now.
func (m *Monitor) withIssues(s *NodeStatus) {
	_, s.Issues = evaluate(s.heartbeat, &s.state, s.LastHeartbeat, m.now(), m.cfg.Policy, m.backlog.Load())
}

// Nodes lists every node's coverage, by cluster then node id.
func (m *Monitor) Nodes(ctx context.Context) ([]NodeStatus, error) {
	rows, err := m.st.ListNodes(ctx)
	if err != nil {
		return nil, fmt.Errorf("coverage: %w", err)
	}
	out := make([]NodeStatus, 0, len(rows))
	for i := range rows {
		s, err := m.statusOf(&rows[i])
		if err != nil {
			return nil, fmt.Errorf("coverage: %w", err)
		}
		m.withIssues(s)
		out = append(out, *s)
	}
	return out, nil
}

// Node returns one node's coverage (store.ErrNotFound when unknown).
func (m *Monitor) Node(ctx context.Context, nodeID string) (*NodeStatus, error) {
	n, err := m.st.GetNode(ctx, nodeID)
	if err != nil {
		return nil, fmt.Errorf("coverage: %w", err)
	}
	s, err := m.statusOf(n)
	if err != nil {
		return nil, fmt.Errorf("coverage: %w", err)
	}
	m.withIssues(s)
	return s, nil
}

// Group counts nodes of one cluster and resource type.
type Group struct {
	Cluster        string  `json:"cluster"`
	ResourceType   string  `json:"resourceType"`
	Total          int     `json:"total"`
	Healthy        int     `json:"healthy"`
	Unhealthy      int     `json:"unhealthy"`
	HealthyPercent float64 `json:"healthyPercent"`
}

// ClusterStatus rolls a cluster's nodes up: Healthy when every node is.
type ClusterStatus struct {
	Cluster   string `json:"cluster"`
	Status    string `json:"status"`
	Issue     string `json:"issue,omitempty"` // "N of M nodes unhealthy: first node: its issue"
	Total     int    `json:"total"`
	Healthy   int    `json:"healthy"`
	Unhealthy int    `json:"unhealthy"`
}

// Statistics is the coverage summary.
type Statistics struct {
	Total     int `json:"total"`
	Healthy   int `json:"healthy"`
	Unhealthy int `json:"unhealthy"`
	// Groups are per cluster and resource type; ByResourceType across clusters.
	Groups         []Group         `json:"groups"`
	ByResourceType []Group         `json:"byResourceType"`
	Clusters       []ClusterStatus `json:"clusterRollups"`
}

// Summarize computes statistics over node statuses.
func Summarize(nodes []NodeStatus) *Statistics {
	st := &Statistics{Groups: []Group{}, ByResourceType: []Group{}, Clusters: []ClusterStatus{}}
	groups := map[[2]string]*Group{}
	types := map[string]*Group{}
	clusters := map[string]*ClusterStatus{}
	for _, n := range nodes {
		ok := n.Status == Healthy
		st.Total++
		g := groups[[2]string{n.Cluster, n.ResourceType}]
		if g == nil {
			g = &Group{Cluster: n.Cluster, ResourceType: n.ResourceType}
			groups[[2]string{n.Cluster, n.ResourceType}] = g
		}
		t := types[n.ResourceType]
		if t == nil {
			t = &Group{ResourceType: n.ResourceType}
			types[n.ResourceType] = t
		}
		c := clusters[n.Cluster]
		if c == nil {
			c = &ClusterStatus{Cluster: n.Cluster, Status: Healthy}
			clusters[n.Cluster] = c
		}
		for _, x := range []*Group{g, t} {
			x.Total++
			if ok {
				x.Healthy++
			} else {
				x.Unhealthy++
			}
		}
		c.Total++
		if ok {
			st.Healthy++
			c.Healthy++
		} else {
			st.Unhealthy++
			c.Unhealthy++
			if c.Status == Healthy {
				c.Status, c.Issue = Unhealthy, n.NodeID+": "+n.Issue
			}
		}
	}
	for _, g := range groups {
		g.HealthyPercent = percent(g.Healthy, g.Total)
		st.Groups = append(st.Groups, *g)
	}
	for _, t := range types {
		t.HealthyPercent = percent(t.Healthy, t.Total)
		st.ByResourceType = append(st.ByResourceType, *t)
	}
	for _, c := range clusters {
		if c.Unhealthy > 0 {
			c.Issue = fmt.Sprintf("%d of %d nodes unhealthy: %s", c.Unhealthy, c.Total, c.Issue)
		}
		st.Clusters = append(st.Clusters, *c)
	}
	sort.Slice(st.Groups, func(i, j int) bool {
		a, b := st.Groups[i], st.Groups[j]
		return a.Cluster < b.Cluster || a.Cluster == b.Cluster && a.ResourceType < b.ResourceType
	})
	sort.Slice(st.ByResourceType, func(i, j int) bool { return st.ByResourceType[i].ResourceType < st.ByResourceType[j].ResourceType })
	sort.Slice(st.Clusters, func(i, j int) bool { return st.Clusters[i].Cluster < st.Clusters[j].Cluster })
	return st
}

func percent(a, b int) float64 {
	if b == 0 {
		return 0
	}
	return float64(int(1000*float64(a)/float64(b)+0.5)) / 10
}

// Statistics summarizes every node's coverage.
func (m *Monitor) Statistics(ctx context.Context) (*Statistics, error) {
	nodes, err := m.Nodes(ctx)
	if err != nil {
		return nil, err
	}
	return Summarize(nodes), nil
}

// tail reads the transition log in order, tolerating sequence numbers
// that commit out of order (PostgreSQL identity values are handed out
// before commit): a gap is re-read for gapWait before it is given up.
type tail struct {
	st      store.Store
	last    int64               // every seq <= last is delivered or given up
	pending map[int64]time.Time // seqs above last not seen yet, with when the gap was found
	seen    map[int64]bool      // delivered seqs above last
}

const gapWait = 10 * time.Second

func newTail(ctx context.Context, st store.Store) (*tail, error) {
	t := &tail{st: st, pending: map[int64]time.Time{}, seen: map[int64]bool{}}
	// Start at the end: subscribers get transitions from now on.
	for {
		evs, err := st.CoverageEvents(ctx, t.last, 10000)
		if err != nil {
			return nil, fmt.Errorf("coverage: read transitions: %w", err)
		}
		if len(evs) == 0 {
			return t, nil
		}
		t.last = evs[len(evs)-1].Seq
	}
}

func (t *tail) next(ctx context.Context, now time.Time) ([]Event, error) {
	evs, err := t.st.CoverageEvents(ctx, t.last, 1000)
	if err != nil {
		return nil, err
	}
	var out []Event
	expect := t.last + 1
	for _, ev := range evs {
		for s := expect; s < ev.Seq; s++ {
			if !t.seen[s] {
				if _, ok := t.pending[s]; !ok {
					t.pending[s] = now
				}
			}
		}
		expect = ev.Seq + 1
		if !t.seen[ev.Seq] {
			t.seen[ev.Seq] = true
			delete(t.pending, ev.Seq)
			out = append(out, ev)
		}
	}
	// Advance last over everything delivered or waited for long enough.
	for {
		s := t.last + 1
		if t.seen[s] {
			delete(t.seen, s)
			t.last = s
			continue
		}
		if found, ok := t.pending[s]; ok && now.Sub(found) > gapWait {
			delete(t.pending, s)
			t.last = s
			continue
		}
		break
	}
	return out, nil
}

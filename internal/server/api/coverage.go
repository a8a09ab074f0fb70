package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/mamori-dev/mamori/internal/server/coverage"
	"github.com/mamori-dev/mamori/internal/server/store"
)

// CoverageView is what the API reads coverage from: the coverage
// package's Monitor, which judges each node at the time of the request
// (an agent gone silent shows as not reporting even between sweeps).
type CoverageView interface {
	Nodes(ctx context.Context) ([]coverage.NodeStatus, error)
	Node(ctx context.Context, nodeID string) (*coverage.NodeStatus, error)
}

// coverageFilters are the parameters of the coverage list.
var coverageFilters = []string{"cluster", "status", "resourceType"}

func (a *API) listCoverage(w http.ResponseWriter, r *http.Request) error {
	v := r.URL.Query()
	for k := range v {
		if !slices.Contains(coverageFilters, k) {
			return errorf(http.StatusBadRequest, "unknown query parameter %q", k)
		}
	}
	if s := v.Get("status"); s != "" && s != coverage.Healthy && s != coverage.Unhealthy {
		return errorf(http.StatusBadRequest, "status must be Healthy or Unhealthy")
	}
	nodes, err := a.opt.Coverage.Nodes(r.Context())
	if err != nil {
		return err
	}
	out := make([]coverage.NodeStatus, 0, len(nodes))
	for _, n := range nodes {
		if (v.Get("cluster") == "" || n.Cluster == v.Get("cluster")) &&
			(v.Get("status") == "" || n.Status == v.Get("status")) &&
			(v.Get("resourceType") == "" || n.ResourceType == v.Get("resourceType")) {
			out = append(out, n)
		}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"nodes": out})
}

func (a *API) getNode(w http.ResponseWriter, r *http.Request) error {
	n, err := a.opt.Coverage.Node(r.Context(), r.PathValue("nodeId"))
	if errors.Is(err, store.ErrNotFound) {
		return errorf(http.StatusNotFound, "node %q: not found", r.PathValue("nodeId"))
	}
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, n)
}

// CoverageCount counts nodes by status and their issues by type (the part
// of "TYPE:extra information" before the colon; a node with several
// issues counts under each).
type CoverageCount struct {
	Total          int            `json:"total"`
	Healthy        int            `json:"healthy"`
	Unhealthy      int            `json:"unhealthy"`
	HealthyPercent float64        `json:"healthyPercent"`
	Issues         map[string]int `json:"issues"`
}

// CoverageGroup is the count of one cluster and resource type.
type CoverageGroup struct {
	Cluster      string `json:"cluster"`
	ResourceType string `json:"resourceType"`
	CoverageCount
}

// CoverageStatistics is the answer of /coverage/statistics: counts
// overall and per cluster and resource type, plus the coverage package's
// per resource type counts and cluster rollups.
type CoverageStatistics struct {
	Overall        CoverageCount            `json:"overall"`
	Groups         []CoverageGroup          `json:"groups"`
	ByResourceType []coverage.Group         `json:"byResourceType"`
	ClusterRollups []coverage.ClusterStatus `json:"clusterRollups"`
}

func (c *CoverageCount) add(n coverage.NodeStatus) {
	c.Total++
	if n.Status == coverage.Healthy {
		c.Healthy++
	} else {
		c.Unhealthy++
	}
	issues := n.Issues
	if len(issues) == 0 && n.Issue != "" {
		issues = []string{n.Issue}
	}
	seen := map[string]bool{}
	for _, is := range issues {
		typ, _, _ := strings.Cut(is, ":")
		if typ != "" && !seen[typ] {
			seen[typ] = true
			c.Issues[typ]++
		}
	}
}

func (c *CoverageCount) percent() {
	if c.Total > 0 {
		c.HealthyPercent = float64(int(1000*float64(c.Healthy)/float64(c.Total)+0.5)) / 10
	}
}

// CoverageStats counts nodes overall and per cluster and resource type.
func CoverageStats(nodes []coverage.NodeStatus) CoverageStatistics {
	sum := coverage.Summarize(nodes)
	st := CoverageStatistics{Overall: CoverageCount{Issues: map[string]int{}}, Groups: []CoverageGroup{},
		ByResourceType: sum.ByResourceType, ClusterRollups: sum.Clusters}
	idx := map[[2]string]int{}
	for _, n := range nodes {
		st.Overall.add(n)
		k := [2]string{n.Cluster, n.ResourceType}
		i, ok := idx[k]
		if !ok {
			i = len(st.Groups)
			idx[k] = i
			st.Groups = append(st.Groups, CoverageGroup{Cluster: n.Cluster, ResourceType: n.ResourceType,
				CoverageCount: CoverageCount{Issues: map[string]int{}}})
		}
		st.Groups[i].add(n)
	}
	st.Overall.percent()
	for i := range st.Groups {
		st.Groups[i].percent()
	}
	slices.SortFunc(st.Groups, func(a, b CoverageGroup) int {
		return strings.Compare(a.Cluster+"\x00"+a.ResourceType, b.Cluster+"\x00"+b.ResourceType)
	})
	return st
}

func (a *API) coverageStats(w http.ResponseWriter, r *http.Request) error {
	nodes, err := a.opt.Coverage.Nodes(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, CoverageStats(nodes))
}

func (a *API) coverageEvents(w http.ResponseWriter, r *http.Request) error {
	v := r.URL.Query()
	var after int64
	limit := 100
	if s := v.Get("after"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return errorf(http.StatusBadRequest, "after must be a non-negative integer")
		}
		after = n
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 1000 {
			return errorf(http.StatusBadRequest, "limit must be 1-1000")
		}
		limit = n
	}
	evs, err := a.opt.Store.CoverageEvents(r.Context(), after, limit)
	if err != nil {
		return err
	}
	if evs == nil {
		evs = []store.CoverageEvent{}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"events": evs})
}

// defaultCoverage makes a Monitor over the store for reading (it is not
// run: heartbeats and sweeps belong to the server's own Monitor).
func defaultCoverage(st store.Store) (CoverageView, error) {
	m, err := coverage.New(coverage.Config{Store: st})
	if err != nil {
		return nil, fmt.Errorf("api: coverage: %w", err)
	}
	return m, nil
}

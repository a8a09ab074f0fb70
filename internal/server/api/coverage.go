package api

import (
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/mamori-dev/mamori/internal/server/store"
)

// Coverage statuses.
const (
	Healthy   = "Healthy"
	Unhealthy = "Unhealthy"
)

func (a *API) nodes(r *http.Request) ([]store.Node, error) {
	if a.opt.Coverage != nil {
		return a.opt.Coverage(r.Context())
	}
	return a.opt.Store.ListNodes(r.Context())
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
	if s := v.Get("status"); s != "" && s != Healthy && s != Unhealthy {
		return errorf(http.StatusBadRequest, "status must be Healthy or Unhealthy")
	}
	nodes, err := a.nodes(r)
	if err != nil {
		return err
	}
	out := make([]store.Node, 0, len(nodes))
	for _, n := range nodes {
		if (v.Get("cluster") == "" || n.Cluster == v.Get("cluster")) &&
			(v.Get("status") == "" || n.Status == v.Get("status")) &&
			(v.Get("resourceType") == "" || n.ResourceType == v.Get("resourceType")) {
			out = append(out, n)
		}
	}
	slices.SortFunc(out, func(a, b store.Node) int {
		return strings.Compare(a.Cluster+"\x00"+a.NodeID, b.Cluster+"\x00"+b.NodeID)
	})
	return writeJSON(w, http.StatusOK, map[string]any{"nodes": out})
}

func (a *API) getNode(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("nodeId")
	if a.opt.Coverage != nil {
		nodes, err := a.opt.Coverage(r.Context())
		if err != nil {
			return err
		}
		for _, n := range nodes {
			if n.NodeID == id {
				return writeJSON(w, http.StatusOK, n)
			}
		}
		return errorf(http.StatusNotFound, "node %q: not found", id)
	}
	n, err := a.opt.Store.GetNode(r.Context(), id)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, n)
}

// CoverageCount counts nodes by status and names the issues of the
// unhealthy ones by issue type (the part of "Type:Extra information"
// before the colon).
type CoverageCount struct {
	Total     int            `json:"total"`
	Healthy   int            `json:"healthy"`
	Unhealthy int            `json:"unhealthy"`
	Issues    map[string]int `json:"issues"`
}

// CoverageGroup is the count of one cluster and resource type.
type CoverageGroup struct {
	Cluster      string `json:"cluster"`
	ResourceType string `json:"resourceType"`
	CoverageCount
}

// CoverageStatistics is the answer of /coverage/statistics.
type CoverageStatistics struct {
	Overall CoverageCount   `json:"overall"`
	Groups  []CoverageGroup `json:"groups"`
}

func (c *CoverageCount) add(n store.Node) {
	c.Total++
	if n.Status == Healthy {
		c.Healthy++
		return
	}
	c.Unhealthy++
	typ, _, _ := strings.Cut(n.Issue, ":")
	if typ == "" {
		typ = "Unknown"
	}
	c.Issues[typ]++
}

// CoverageStats counts nodes overall and per cluster and resource type.
func CoverageStats(nodes []store.Node) CoverageStatistics {
	st := CoverageStatistics{Overall: CoverageCount{Issues: map[string]int{}}, Groups: []CoverageGroup{}}
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
	slices.SortFunc(st.Groups, func(a, b CoverageGroup) int {
		return strings.Compare(a.Cluster+"\x00"+a.ResourceType, b.Cluster+"\x00"+b.ResourceType)
	})
	return st
}

func (a *API) coverageStats(w http.ResponseWriter, r *http.Request) error {
	nodes, err := a.nodes(r)
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

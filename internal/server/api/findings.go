package api

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/mamori-dev/mamori/internal/finding"
	"github.com/mamori-dev/mamori/internal/server/store"
)

// shortcut filters: query parameter → finding field. Values with a '*' or
// '?' match as wildcard patterns, others must be equal.
var shortcuts = map[string]string{
	"type":          "type",
	"tactic":        "service.detector.tactic",
	"technique":     "service.detector.technique",
	"cluster":       "cluster",
	"namespace":     "resource.kubernetesDetails.kubernetesWorkloadDetails.namespace",
	"pod":           "resource.kubernetesDetails.kubernetesWorkloadDetails.name",
	"node":          "resource.instanceDetails.nodeId",
	"hostname":      "resource.instanceDetails.hostname",
	"resourceType":  "resource.resourceType",
	"containerName": "resource.containerDetails.name",
	"rule":          "service.detector.rule",
	"suppressedBy":  "suppressedBy",
}

// boolShortcuts take true or false.
var boolShortcuts = map[string]string{
	"archived": "service.archived",
	"sample":   "service.additionalInfo.sample",
}

// listParams are the query parameters listFindings knows besides filters.
var listParams = []string{"limit", "cursor", "offset", "sort", "order", "total", "filter",
	"severity", "severityLabel", "minSeverity", "image", "container"}

// QueryFromValues turns list query parameters into a store query. It is
// exported for the CLI's help and tests; see the OpenAPI description for
// each parameter.
func QueryFromValues(v url.Values) (store.Query, error) {
	var q store.Query
	bad := func(format string, args ...any) (store.Query, error) {
		return q, errorf(http.StatusBadRequest, format, args...)
	}
	for k := range v {
		if _, ok := shortcuts[k]; ok {
			continue
		}
		if _, ok := boolShortcuts[k]; ok {
			continue
		}
		if !slices.Contains(listParams, k) {
			return bad("unknown query parameter %q", k)
		}
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > store.MaxPageSize {
			return bad("limit must be 1-%d", store.MaxPageSize)
		}
		q.Limit = n
	}
	if s := v.Get("offset"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return bad("offset must be a non-negative integer")
		}
		q.Offset = n
	}
	q.Cursor = v.Get("cursor")
	if s := v.Get("sort"); s != "" {
		if !slices.Contains(store.SortFields, s) {
			return bad("sort must be one of %s", strings.Join(store.SortFields, ", "))
		}
		q.Sort = s
	}
	switch v.Get("order") {
	case "", "desc":
	case "asc":
		q.Asc = true
	default:
		return bad("order must be asc or desc")
	}
	switch v.Get("total") {
	case "", "true":
	case "false":
		q.NoTotal = true
	default:
		return bad("total must be true or false")
	}
	add := func(c store.Criterion) { q.Criteria = append(q.Criteria, c) }
	for param, field := range shortcuts {
		for _, s := range v[param] {
			if s == "" {
				continue
			}
			add(store.Criterion{Field: field, Op: wildcardOp(s), Value: s})
		}
	}
	for param, field := range boolShortcuts {
		switch s := v.Get(param); s {
		case "":
		case "true", "false":
			add(store.Criterion{Field: field, Op: store.OpEq, Value: s == "true"})
		default:
			return bad("%s must be true or false", param)
		}
	}
	for _, param := range []string{"severity", "severityLabel"} {
		s := v.Get(param)
		if s == "" {
			continue
		}
		// A band is a severity range: the label follows from the number
		// (finding.SeverityLabel), and the number is an indexed column
		// where the label would be read from every stored document.
		lo, hi, ok := severityRange(s)
		if !ok {
			return bad("%s must be Low, Medium, High or Critical", param)
		}
		if lo > 0 {
			add(store.Criterion{Field: "severity", Op: store.OpGt, Value: lo - severityEpsilon})
		}
		if hi > 0 {
			add(store.Criterion{Field: "severity", Op: store.OpLt, Value: hi})
		}
	}
	if s := v.Get("minSeverity"); s != "" {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || f < 0 || f > 10 {
			return bad("minSeverity must be a number 0-10")
		}
		add(store.Criterion{Field: "severity", Op: store.OpGt, Value: f - severityEpsilon})
	}
	if s := v.Get("image"); s != "" {
		if wildcardOp(s) == store.OpEq {
			s = "*" + s + "*" // a fragment of the image reference
		}
		add(store.Criterion{Field: "resource.containerDetails.image", Op: store.OpMatches, Value: s})
	}
	if s := v.Get("container"); s != "" {
		if wildcardOp(s) == store.OpEq {
			s += "*" // a container id prefix, as container tools print it
		}
		add(store.Criterion{Field: "resource.containerDetails.id", Op: store.OpMatches, Value: s})
	}
	for _, s := range v["filter"] {
		c, err := ParseFilter(s)
		if err != nil {
			return bad("%v", err)
		}
		add(c)
	}
	// Map iteration order must not leak into the query (cursors compare it).
	slices.SortFunc(q.Criteria, func(a, b store.Criterion) int {
		return strings.Compare(a.Field+"\x00"+string(a.Op)+"\x00"+fmt.Sprint(a.Value), b.Field+"\x00"+string(b.Op)+"\x00"+fmt.Sprint(b.Value))
	})
	cs, err := store.NormalizeAll(q.Criteria)
	if err != nil {
		return bad("%v", err)
	}
	q.Criteria = cs
	return q, nil
}

func wildcardOp(s string) store.Op {
	if strings.ContainsAny(s, "*?") {
		return store.OpMatches
	}
	return store.OpEq
}

// severityEpsilon turns "> x - ε" into ">= x" for severities, which carry
// at most a few decimals.
const severityEpsilon = 1e-9

// severityRange is the [lo, hi) severity range of a band (0: unbounded),
// matching finding.SeverityLabel.
func severityRange(band string) (lo, hi float64, ok bool) {
	switch strings.ToLower(band) {
	case "low":
		return 0, 4, true
	case "medium":
		return 4, 7, true
	case "high":
		return 7, 9, true
	case "critical":
		return 9, 0, true
	}
	return 0, 0, false
}

// ParseFilter reads "field:op:value", e.g. "service.count:gt:10" or
// "type:matches:Execution:*". The value takes its field's type: text for a
// text field (so a container id of digits stays text), a number or boolean
// for those; in free-form fields (the type-specific context) it is a number
// or boolean when it reads as one — quote it ("\"10\"") to compare as text.
func ParseFilter(s string) (store.Criterion, error) {
	field, rest, ok := strings.Cut(s, ":")
	op, val, ok2 := strings.Cut(rest, ":")
	if !ok || !ok2 || field == "" {
		return store.Criterion{}, fmt.Errorf("filter %q: want field:op:value", s)
	}
	var v any
	switch kind, _ := store.FieldKindOf(field); kind {
	case store.FieldString, store.FieldTime:
		v = unquoted(val)
	default:
		v = filterValue(val)
	}
	return store.Criterion{Field: field, Op: store.Op(op), Value: v}, nil
}

func unquoted(s string) string {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		if u, err := strconv.Unquote(s); err == nil {
			return u
		}
	}
	return s
}

func filterValue(s string) any {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		if u, err := strconv.Unquote(s); err == nil {
			return u
		}
	}
	switch s {
	case "true":
		return true
	case "false":
		return false
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		return f
	}
	return s
}

func (a *API) listFindings(w http.ResponseWriter, r *http.Request) error {
	q, err := QueryFromValues(r.URL.Query())
	if err != nil {
		return err
	}
	page, err := a.opt.Store.ListFindings(r.Context(), q)
	if err != nil {
		return err
	}
	if page.Findings == nil {
		page.Findings = []*store.Record{}
	}
	return writeJSON(w, http.StatusOK, page)
}

func (a *API) getFinding(w http.ResponseWriter, r *http.Request) error {
	rec, err := a.opt.Store.GetFinding(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, rec)
}

func (a *API) findingStats(w http.ResponseWriter, r *http.Request) error {
	st, err := a.opt.Store.Stats(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, st)
}

// ArchiveRequest selects findings by id or by criteria (not both).
type ArchiveRequest struct {
	IDs      []string          `json:"ids,omitempty"`
	Criteria []store.Criterion `json:"criteria,omitempty"`
}

// ArchiveResponse says how many findings changed.
type ArchiveResponse struct {
	Changed int `json:"changed"`
}

func (a *API) archive(archived bool) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		var req ArchiveRequest
		if err := readJSON(r, &req); err != nil {
			return err
		}
		switch {
		case len(req.IDs) > 0 && len(req.Criteria) > 0:
			return errorf(http.StatusBadRequest, "give ids or criteria, not both")
		case len(req.IDs) > maxIDs:
			return errorf(http.StatusBadRequest, "at most %d ids per request", maxIDs)
		case len(req.Criteria) > 0 && !archived:
			return errorf(http.StatusBadRequest, "unarchive takes ids")
		case len(req.IDs) == 0 && len(req.Criteria) == 0:
			return errorf(http.StatusBadRequest, "no ids or criteria")
		}
		var n int
		var err error
		if len(req.Criteria) > 0 {
			cs, nerr := store.NormalizeAll(req.Criteria)
			if nerr != nil {
				return nerr
			}
			n, err = a.opt.Store.ArchiveMatching(r.Context(), cs, "")
		} else {
			n, err = a.opt.Store.SetArchived(r.Context(), req.IDs, archived)
		}
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, ArchiveResponse{Changed: n})
	}
}

// SamplesResponse lists the sample findings made.
type SamplesResponse struct {
	Created int      `json:"created"`
	IDs     []string `json:"ids"`
}

// SamplesRequest optionally narrows the sample types.
type SamplesRequest struct {
	Types []string `json:"types,omitempty"`
}

func (a *API) sampleFindings(w http.ResponseWriter, r *http.Request) error {
	var req SamplesRequest
	if r.ContentLength != 0 {
		if err := readJSON(r, &req); err != nil {
			return err
		}
	}
	all := finding.Samples(a.opt.Agent)
	fs := all[:0:0]
	for _, f := range all {
		if len(req.Types) == 0 || slices.Contains(req.Types, f.Type) {
			fs = append(fs, f)
		}
	}
	for _, t := range req.Types {
		if _, ok := finding.Lookup(t); !ok {
			return errorf(http.StatusBadRequest, "unknown finding type %q", t)
		}
	}
	if a.opt.Submit != nil {
		if err := a.opt.Submit(r.Context(), fs); err != nil {
			return err
		}
	} else {
		us := make([]store.Upsert, len(fs))
		for i, f := range fs {
			us[i] = store.Upsert{Finding: f, Reporter: a.opt.Agent.NodeID, Epoch: f.CreatedAt.Format("20060102T150405.000000000")}
		}
		res, err := a.opt.Store.UpsertFindings(r.Context(), us)
		if err != nil {
			return err
		}
		for _, x := range res {
			if x.Err != nil {
				return x.Err
			}
		}
	}
	out := SamplesResponse{Created: len(fs), IDs: make([]string, len(fs))}
	for i, f := range fs {
		out.IDs[i] = f.ID
	}
	return writeJSON(w, http.StatusCreated, out)
}

func (a *API) findingTypes(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, http.StatusOK, map[string]any{"types": finding.Catalogue})
}

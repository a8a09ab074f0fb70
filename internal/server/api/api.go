// Package api is mamori's HTTP API under /api/v1/: findings (list, filter,
// sort, page, get, archive, unarchive), suppression rules and saved
// filters, sample findings, coverage and its statistics, the rules and
// threat intel distributed to agents, and API token management. Its
// OpenAPI 3 description is served at /api/v1/openapi.json.
//
// Every route but /api/v1/health and /api/v1/openapi.json needs a bearer
// token (Authorization: Bearer mat1....). No or an unknown token is
// answered 401, a token whose scope is too small 403. Scopes are ordered:
// admin ⊃ write ⊃ read ⊃ agent. Tokens are kept hashed in a file in the
// data directory (TokenFile); a local server writes its address and a
// bootstrap admin token there too (Local), which is how the CLI finds it.
//
// The API is a thin layer over the server's store (internal/server/store):
// filters become store criteria, pages are the store's keyset pages.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mamori-dev/mamori/internal/finding"
	"github.com/mamori-dev/mamori/internal/server/store"
)

// Prefix is where the API lives.
const Prefix = "/api/v1"

// maxBody bounds request bodies.
const maxBody = 1 << 20

// maxIDs bounds the ids of one archive request.
const maxIDs = 1000

var errNotFound = errors.New("not found")

// Options configure the API.
type Options struct {
	Store  store.Store
	Tokens TokenStore
	// Submit stores findings the API makes (samples) through the server's
	// ingest path, so suppression and export apply to them as to agents'
	// findings. Without it they are upserted into Store directly.
	Submit func(ctx context.Context, fs []*finding.Finding) error
	// Coverage reads node coverage [a coverage.Monitor over Store].
	Coverage CoverageView
	// RulesChanged is called after a suppression rule is created, changed
	// or deleted (ingest re-reads its rules at once).
	RulesChanged func()
	// RulesDir and IntelDir hold the files distributed to agents.
	RulesDir, IntelDir string
	// Agent names the server itself as the reporter of sample findings.
	Agent   finding.Agent
	Version string
	Logger  *slog.Logger
	// Registerer receives the API's metrics (nil: not registered).
	Registerer prometheus.Registerer
	// Agents manages enrolled agents and join tokens (nil: the routes
	// answer 501).
	Agents AgentAdmin
	// Problems lists what keeps the server from taking or storing agent
	// messages now (a paused intake, a database outage); /health reports
	// them. Nil: none known.
	Problems func() []string
	// SessionTTL bounds a console session's life [12h]; a session never
	// outlives the token it was opened with.
	SessionTTL time.Duration
}

// API is the HTTP API handler.
type API struct {
	opt     Options
	mux     *http.ServeMux
	routes  []route
	dist    map[string]*distribution
	metrics *metrics
}

// route is one API operation. The table drives the mux, the scope checks
// and the test that keeps the OpenAPI document complete.
type route struct {
	method, path string // path relative to Prefix, with {name} parameters
	scope        Scope  // "" for no authentication
	handler      func(w http.ResponseWriter, r *http.Request) error
}

// New returns the API handler.
func New(opt Options) (*API, error) {
	if opt.Store == nil || opt.Tokens == nil {
		return nil, errors.New("api: Store and Tokens are required")
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	if opt.SessionTTL <= 0 {
		opt.SessionTTL = DefaultSessionTTL
	}
	if opt.Coverage == nil {
		c, err := defaultCoverage(opt.Store)
		if err != nil {
			return nil, err
		}
		opt.Coverage = c
	}
	if opt.Agent.NodeID == "" {
		opt.Agent.NodeID = "mamori-server"
	}
	m, err := newMetrics(opt.Registerer)
	if err != nil {
		return nil, err
	}
	a := &API{opt: opt, mux: http.NewServeMux(), metrics: m}
	a.dist = map[string]*distribution{
		"rules": newDistribution("rules", opt.RulesDir, isRuleFile),
		"intel": newDistribution("intel", opt.IntelDir, isIntelFile),
	}
	a.routes = []route{
		{"GET", "/health", "", a.health},
		{"GET", "/openapi.json", "", a.openapi},
		{"GET", "/findings", ScopeRead, a.listFindings},
		{"GET", "/findings/statistics", ScopeRead, a.findingStats},
		{"GET", "/findings/{id}", ScopeRead, a.getFinding},
		{"POST", "/findings/archive", ScopeWrite, a.archive(true)},
		{"POST", "/findings/unarchive", ScopeWrite, a.archive(false)},
		{"POST", "/sample-findings", ScopeWrite, a.sampleFindings},
		{"GET", "/finding-types", ScopeRead, a.findingTypes},
		{"GET", "/suppression-rules", ScopeRead, a.listRules},
		{"POST", "/suppression-rules", ScopeWrite, a.createRule},
		{"GET", "/suppression-rules/{id}", ScopeRead, a.getRule},
		{"PUT", "/suppression-rules/{id}", ScopeWrite, a.updateRule},
		{"DELETE", "/suppression-rules/{id}", ScopeWrite, a.deleteRule},
		{"GET", "/coverage", ScopeRead, a.listCoverage},
		{"GET", "/coverage/statistics", ScopeRead, a.coverageStats},
		{"GET", "/coverage/events", ScopeRead, a.coverageEvents},
		{"GET", "/coverage/{nodeId}", ScopeRead, a.getNode},
		{"GET", "/distribution/{kind}", ScopeAgent, a.distribution},
		{"GET", "/agent/transport", ScopeAgent, a.agentTransport},
		{"GET", "/agents", ScopeRead, a.listAgents},
		{"DELETE", "/agents/{nodeId}", ScopeAdmin, a.removeAgent},
		{"POST", "/join-tokens", ScopeAdmin, a.createJoinToken},
		{"GET", "/join-tokens", ScopeAdmin, a.listJoinTokens},
		{"DELETE", "/join-tokens/{id}", ScopeAdmin, a.revokeJoinToken},
		{"GET", "/tokens", ScopeAdmin, a.listTokens},
		{"POST", "/tokens", ScopeAdmin, a.createToken},
		{"DELETE", "/tokens/{id}", ScopeAdmin, a.revokeToken},
		{"POST", "/sessions", ScopeRead, a.openSession},
		{"DELETE", "/sessions/current", ScopeRead, a.closeSession},
	}
	for _, rt := range a.routes {
		a.mux.Handle(rt.method+" "+Prefix+rt.path, a.wrap(rt))
	}
	a.mux.HandleFunc(Prefix+"/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such API route: "+r.Method+" "+r.URL.Path)
	})
	return a, nil
}

// ServeHTTP serves the API.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	a.mux.ServeHTTP(w, r)
}

// statusWriter remembers the status for metrics.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// httpError is an error with the status to answer.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func errorf(status int, format string, args ...any) error {
	return &httpError{status: status, msg: fmt.Sprintf(format, args...)}
}

// wrap authenticates, authorizes, runs the handler and maps its error.
func (a *API) wrap(rt route) http.Handler {
	label := rt.method + " " + rt.path
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			a.metrics.observe(label, sw.status, time.Since(start))
		}()
		if rt.scope != "" {
			tok, ok := a.authorize(sw, r, rt.scope)
			if !ok {
				return
			}
			r = r.WithContext(context.WithValue(r.Context(), callerKey{}, tok))
		}
		r.Body = http.MaxBytesReader(sw, r.Body, maxBody)
		if err := rt.handler(sw, r); err != nil {
			a.fail(sw, r, err)
		}
	})
}

// callerKey keys the authorized caller's token record in a request's context.
type callerKey struct{}

// caller returns the token an authorized request was made with.
func caller(r *http.Request) (Token, bool) {
	tok, ok := r.Context().Value(callerKey{}).(Token)
	return tok, ok
}

// authorize checks r's bearer token for scope, answering 401 or 403 itself
// when it does not do.
func (a *API) authorize(w http.ResponseWriter, r *http.Request, scope Scope) (Token, bool) {
	tok, err := a.opt.Tokens.Check(bearer(r))
	if err != nil {
		if !errors.Is(err, ErrNoToken) && !errors.Is(err, ErrInvalidToken) {
			a.opt.Logger.Error("api: token check", "err", err)
			writeError(w, http.StatusInternalServerError, "token check failed")
			return Token{}, false
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="mamori"`)
		msg := err.Error()
		if errors.Is(err, ErrNoToken) && r.Header.Get("Authorization") != "" {
			msg = `no API token: the Authorization header must read "Bearer TOKEN"`
		}
		writeError(w, http.StatusUnauthorized, msg)
		return Token{}, false
	}
	if !tok.Scope.Allows(scope) {
		writeError(w, http.StatusForbidden, fmt.Sprintf("token %q has scope %s; this needs %s", tok.Name, tok.Scope, scope))
		return Token{}, false
	}
	return tok, true
}

// Protect serves h only to requests bearing a token of scope (401/403
// otherwise): the server's Prometheus /metrics sits behind it, since metric
// labels name nodes, clusters and rules.
func (a *API) Protect(scope Scope, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := a.authorize(w, r, scope); ok {
			h.ServeHTTP(w, r)
		}
	})
}

func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

// fail answers an error: client errors with their message, anything else
// as 500 with the detail logged, not shown.
func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	var he *httpError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &he):
		writeError(w, he.status, he.msg)
	case errors.As(err, &mbe):
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body over %d bytes", mbe.Limit))
	case errors.Is(err, store.ErrNotFound), errors.Is(err, errNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, store.ErrInvalid):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, context.Canceled):
		// The client went away; nobody reads an answer.
	default:
		a.opt.Logger.Error("api: request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		writeError(w, http.StatusInternalServerError, "internal error (see the server log)")
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode response: %w", err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
	return nil
}

// Error is the body of every error answer.
type Error struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, status int, msg string) {
	_ = writeJSON(w, status, Error{Error: msg})
}

// readJSON decodes a request body strictly: unknown fields and trailing
// data are errors, so typos do not pass silently.
func readJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		if errors.Is(err, io.EOF) {
			return errorf(http.StatusBadRequest, "request body: empty, want JSON")
		}
		return errorf(http.StatusBadRequest, "request body: %v", err)
	}
	if dec.More() {
		return errorf(http.StatusBadRequest, "request body: more than one JSON value")
	}
	return nil
}

// health answers 200 while the server serves. To a caller with a read
// token it also says "degraded" with the problems that keep the server
// from taking or storing agent messages (the API still answers then, so a
// load balancer keeps it, while monitoring can alert); to anyone else it is
// a liveness check, "ok": when the server cannot store findings is worth
// knowing to an attacker too.
func (a *API) health(w http.ResponseWriter, r *http.Request) error {
	out := struct {
		Status   string   `json:"status"`
		Version  string   `json:"version"`
		Problems []string `json:"problems,omitempty"`
	}{Status: "ok", Version: a.opt.Version}
	if a.opt.Problems != nil {
		if tok, err := a.opt.Tokens.Check(bearer(r)); err == nil && tok.Scope.Allows(ScopeRead) {
			if out.Problems = a.opt.Problems(); len(out.Problems) > 0 {
				out.Status = "degraded"
			}
		}
	}
	return writeJSON(w, http.StatusOK, out)
}

func (a *API) openapi(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(openAPIDoc)
	return nil
}

// metrics of the API.
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mamori_api_requests_total",
			Help: "API requests by route and status code."}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "mamori_api_request_duration_seconds",
			Help: "API request latency by route.", Buckets: prometheus.ExponentialBuckets(0.001, 4, 8)}, []string{"route"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.requests, m.duration} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("api metrics: %w", err)
			}
		}
	}
	return m, nil
}

func (m *metrics) observe(route string, status int, d time.Duration) {
	if status == 0 {
		status = http.StatusOK
	}
	m.requests.WithLabelValues(route, strconv.Itoa(status)).Inc()
	m.duration.WithLabelValues(route).Observe(d.Seconds())
}

package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/mamori-dev/mamori/internal/finding"
	"github.com/mamori-dev/mamori/internal/server/store"
)

// env is an API over a real SQLite store, served by a real HTTP server
// whose every answer is checked against the OpenAPI document.
type env struct {
	t      testing.TB
	api    *API
	srv    *httptest.Server
	st     store.Store
	local  Local
	tokens map[Scope]string
	dir    string
}

var (
	docOnce   sync.Once
	docRouter routers.Router
	docErr    error
)

func openAPIRouter() (routers.Router, error) {
	docOnce.Do(func() {
		loader := openapi3.NewLoader()
		doc, err := loader.LoadFromData(openAPIDoc)
		if err != nil {
			docErr = fmt.Errorf("load openapi.json: %w", err)
			return
		}
		if err := doc.Validate(context.Background()); err != nil {
			docErr = fmt.Errorf("openapi.json is not valid OpenAPI 3: %w", err)
			return
		}
		// Serve the document's relative server URL from any host.
		// Requests are matched as if sent to localhost (see validating).
		doc.Servers = openapi3.Servers{{URL: "http://localhost" + Prefix}}
		docRouter, docErr = gorillamux.NewRouter(doc)
	})
	return docRouter, docErr
}

type recorder struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (r *recorder) WriteHeader(c int) { r.status = c; r.ResponseWriter.WriteHeader(c) }
func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = 200
	}
	r.body.Write(b)
	return r.ResponseWriter.Write(b)
}

// validating checks each answer of h against the OpenAPI document.
func validating(t testing.TB, h http.Handler) http.Handler {
	router, err := openAPIRouter()
	if err != nil {
		t.Fatal(err)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &recorder{ResponseWriter: w}
		h.ServeHTTP(rec, r)
		r = r.Clone(r.Context())
		r.URL.Scheme, r.URL.Host, r.Host = "http", "localhost", "localhost"
		route, params, err := router.FindRoute(r)
		if err != nil {
			if rec.status != http.StatusNotFound {
				t.Errorf("%s %s answered %d but is not in openapi.json: %v", r.Method, r.URL.Path, rec.status, err)
			}
			return
		}
		in := &openapi3filter.ResponseValidationInput{
			RequestValidationInput: &openapi3filter.RequestValidationInput{Request: r, PathParams: params, Route: route},
			Status:                 rec.status, Header: rec.Header(), Body: io.NopCloser(bytes.NewReader(rec.body.Bytes())),
			Options: &openapi3filter.Options{IncludeResponseStatus: true},
		}
		if err := openapi3filter.ValidateResponse(r.Context(), in); err != nil {
			t.Errorf("%s %s answer %d does not match openapi.json: %v\nbody: %.500s", r.Method, r.URL, rec.status, err, rec.body.String())
		}
	})
}

func newEnv(t testing.TB) *env {
	t.Helper()
	dir := t.TempDir()
	ctx := context.Background()
	st, err := store.OpenSQLite(ctx, filepath.Join(dir, "mamori.db"), store.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	local := LocalFor(dir)
	tf, admin, err := local.OpenTokens()
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, st: st, local: local, dir: dir, tokens: map[Scope]string{ScopeAdmin: admin}}
	for _, s := range []Scope{ScopeAgent, ScopeRead, ScopeWrite} {
		tok, _, err := tf.Create(NewToken{Name: "test " + string(s), Scope: s})
		if err != nil {
			t.Fatal(err)
		}
		e.tokens[s] = tok
	}
	for _, d := range []string{"rules", "intel"} {
		if err := mkdir(filepath.Join(dir, d)); err != nil {
			t.Fatal(err)
		}
	}
	e.api, err = New(Options{Store: st, Tokens: tf, RulesDir: filepath.Join(dir, "rules"), IntelDir: filepath.Join(dir, "intel"),
		Agent: finding.Agent{NodeID: "server-test", Hostname: "server", Version: "test"}, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewServer(validating(t, e.api))
	t.Cleanup(e.srv.Close)
	return e
}

// do sends a request with the given token ("" for none) and returns the
// status and body.
func (e *env) do(method, path, token string, body any) (int, []byte) {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		if s, ok := body.(string); ok {
			rd = strings.NewReader(s)
		} else {
			b, err := json.Marshal(body)
			if err != nil {
				e.t.Fatal(err)
			}
			rd = bytes.NewReader(b)
		}
	}
	req, err := http.NewRequest(method, e.srv.URL+Prefix+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.StatusCode, b
}

// must sends a request with the given scope's token and decodes the
// answer, failing unless the status is want.
func (e *env) must(want int, method, path string, scope Scope, body, out any) {
	e.t.Helper()
	code, b := e.do(method, path, e.tokens[scope], body)
	if code != want {
		e.t.Fatalf("%s %s: %d, want %d: %s", method, path, code, want, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			e.t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
}

// put stores findings as agents' upserts.
func (e *env) put(fs ...*finding.Finding) {
	e.t.Helper()
	for len(fs) > 0 {
		n := min(len(fs), 500)
		us := make([]store.Upsert, n)
		for i, f := range fs[:n] {
			us[i] = store.Upsert{Finding: f, Reporter: f.Service.AdditionalInfo.AgentDetails.AgentID, Cluster: "c1"}
		}
		res, err := e.st.UpsertFindings(context.Background(), us)
		if err != nil {
			e.t.Fatal(err)
		}
		for _, r := range res {
			if r.Err != nil {
				e.t.Fatal(r.Err)
			}
		}
		fs = fs[n:]
	}
}

// makeFindings returns n distinct valid findings cycling through the
// catalogue's samples on nodes node-0..node-(nodes-1), with severities,
// times and counts that differ.
func makeFindings(n, nodes int) []*finding.Finding {
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	out := make([]*finding.Finding, 0, n)
	for i := 0; len(out) < n; i++ {
		samples := finding.Samples(finding.Agent{NodeID: fmt.Sprintf("node-%d", i%nodes), Hostname: fmt.Sprintf("host-%d", i%nodes), Version: "t"})
		for j, f := range samples {
			if len(out) == n {
				break
			}
			k := len(out)
			f.ID = finding.ID(fmt.Sprintf("test-%d", k))
			f.Title = strings.TrimPrefix(f.Title, "[SAMPLE] ")
			f.Service.AdditionalInfo.Sample = k%10 == 0
			f.CreatedAt = base.Add(time.Duration(k) * time.Second)
			f.UpdatedAt = f.CreatedAt.Add(time.Duration(j) * time.Millisecond)
			f.Service.EventFirstSeen, f.Service.EventLastSeen = f.CreatedAt, f.UpdatedAt
			f.Service.Count = int64(1 + k%7)
			out = append(out, f)
		}
	}
	return out
}

func mkdir(p string) error { return os.MkdirAll(p, 0o700) }

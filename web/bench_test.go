package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/mamori-dev/mamori/internal/event"
	"github.com/mamori-dev/mamori/internal/finding"
	"github.com/mamori-dev/mamori/internal/server/api"
	"github.com/mamori-dev/mamori/internal/server/store"
	"github.com/mamori-dev/mamori/web"
	"github.com/mamori-dev/mamori/web/webtest"
)

// console is the console over the real API and a real SQLite store.
type console struct {
	srv   *httptest.Server
	token string
	store store.Store
	// problems are what the API's /health reports (nil: none).
	problems atomic.Pointer[[]string]
}

// newConsole serves the console over a fresh SQLite store holding n
// findings spread over types, clusters, nodes and containers.
func newConsole(tb testing.TB, n int) *console {
	tb.Helper()
	ctx := context.Background()
	dir := tb.TempDir()
	st, err := store.Open(ctx, "sqlite:"+filepath.Join(dir, "mamori.db"), store.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	seed(tb, st, n)
	tokens, err := api.OpenTokenFile(filepath.Join(dir, "tokens.json"))
	if err != nil {
		tb.Fatal(err)
	}
	tok, _, err := tokens.Create(api.NewToken{Name: "bench", Scope: api.ScopeWrite})
	if err != nil {
		tb.Fatal(err)
	}
	c := &console{token: tok, store: st}
	a, err := api.New(api.Options{Store: st, Tokens: tokens, Problems: func() []string {
		if p := c.problems.Load(); p != nil {
			return *p
		}
		return nil
	}})
	if err != nil {
		tb.Fatal(err)
	}
	h, err := web.New(web.Options{API: a})
	if err != nil {
		tb.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(api.Prefix+"/", a)
	mux.Handle("/", h)
	c.srv = httptest.NewServer(mux)
	tb.Cleanup(c.srv.Close)
	return c
}

// seed stores n findings as agents would report them.
func seed(tb testing.TB, st store.Store, n int) {
	tb.Helper()
	now := time.Now().UTC()
	batch := make([]store.Upsert, 0, 500)
	flush := func() {
		res, err := st.UpsertFindings(context.Background(), batch)
		if err != nil {
			tb.Fatal(err)
		}
		for _, r := range res {
			if r.Err != nil {
				tb.Fatal(r.Err)
			}
		}
		batch = batch[:0]
	}
	for i := range n {
		k := finding.Catalogue[i%len(finding.Catalogue)]
		node := fmt.Sprintf("node-%02d", i%20)
		ev := &event.Event{Time: now.Add(-time.Duration(i) * time.Second),
			Process: event.Process{PID: uint32(1000 + i), Comm: "proc", Exe: fmt.Sprintf("/usr/bin/tool-%d", i%97),
				Args: []string{"tool", "--n", fmt.Sprint(i)}, UUID: fmt.Sprintf("u-%d", i), Start: now.Add(-time.Hour),
				Lineage: []event.Ancestor{{PID: 1, Name: "sh", Exe: "/bin/sh", Args: []string{"sh", "-c", "tool"}}}},
			Container: &event.Container{ID: fmt.Sprintf("%064x", i%200), Name: fmt.Sprintf("app-%d", i%200), Runtime: "containerd",
				Image: fmt.Sprintf("registry.example.com/team/app-%d:1.%d", i%50, i%7),
				Pod:   &event.Pod{Name: fmt.Sprintf("app-%d-7f9c", i%200), Namespace: fmt.Sprintf("ns-%d", i%10)}}}
		f := finding.New(k.Type, ev, finding.Agent{NodeID: node, Hostname: node, Version: "bench"}, fmt.Sprint("actor-", i), nil)
		batch = append(batch, store.Upsert{Finding: f, Reporter: node, Epoch: "1", Cluster: fmt.Sprintf("cluster-%d", i%5)})
		if len(batch) == cap(batch) {
			flush()
		}
	}
	if len(batch) > 0 {
		flush()
	}
}

// client logs in through the console and returns a client holding the
// session cookie.
func (c *console) client(tb testing.TB) *http.Client {
	tb.Helper()
	jar, _ := cookiejar.New(nil)
	cl := &http.Client{Jar: jar}
	req, _ := http.NewRequest("POST", c.srv.URL+"/console/login", strings.NewReader(`{"token":"`+c.token+`"}`))
	req.Header.Set(web.HeaderName, "1")
	resp, err := cl.Do(req)
	if err != nil || resp.StatusCode != 200 {
		tb.Fatalf("login: %v %v", resp, err)
	}
	resp.Body.Close()
	return cl
}

func (c *console) get(tb testing.TB, cl *http.Client, path string) []byte {
	req, _ := http.NewRequest("GET", c.srv.URL+path, nil)
	req.Header.Set(web.HeaderName, "1")
	resp, err := cl.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		tb.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
	}
	return b
}

// BenchmarkFirstPage10k is the console's first request at 10,000 stored
// findings: the newest active page of 50, through the console's session
// proxy, the API and SQLite. Target: under 300 ms.
func BenchmarkFirstPage10k(b *testing.B) {
	c := newConsole(b, 10000)
	cl := c.client(b)
	for _, q := range []struct{ name, query string }{
		{"newest", "archived=false&sort=updatedAt&order=desc&limit=50"},
		{"last-seen", "archived=false&sort=eventLastSeen&order=desc&limit=50"},
		{"by-severity", "archived=false&sort=severity&order=desc&limit=50"},
		{"filtered", "archived=false&severity=High&namespace=ns-7&image=app-7&sort=updatedAt&order=desc&limit=50"},
		{"page-199", "archived=false&sort=updatedAt&order=desc&limit=50&cursor=" + cursorOfPage(b, c, cl, 198)},
	} {
		b.Run(q.name, func(b *testing.B) {
			for b.Loop() {
				body := c.get(b, cl, "/console/api/v1/findings?"+q.query)
				if len(body) < 100 {
					b.Fatalf("short page: %s", body)
				}
			}
		})
	}
}

// cursorOfPage follows the console's Next button n times and returns the
// cursor of page n+1.
func cursorOfPage(tb testing.TB, c *console, cl *http.Client, n int) string {
	next := ""
	for range n {
		var p struct {
			Next string `json:"next"`
		}
		b := c.get(tb, cl, "/console/api/v1/findings?archived=false&sort=updatedAt&order=desc&limit=50&total=false&cursor="+url.QueryEscape(next))
		if err := json.Unmarshal(b, &p); err != nil || p.Next == "" {
			tb.Fatalf("page walk stopped: %v", err)
		}
		next = p.Next
	}
	return url.QueryEscape(next)
}

// BenchmarkFirstPageBrowser10k loads the console in headless Chromium at
// 10,000 findings until the first page's 50 rows are on screen: page,
// scripts, API request and rendering together. ms-to-first-page is the
// page's own User Timing mark (from navigation start to the rows in the
// DOM); ns/op adds the driver's navigation and polling round trips.
func BenchmarkFirstPageBrowser10k(b *testing.B) {
	c := newConsole(b, 10000)
	ctx, _ := webtest.Browser(b, 10*time.Minute)
	err := chromedp.Do(ctx,
		chromedp.Navigate(c.srv.URL),
		chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.SendKeys(chromedp.CSS("#token"), c.token),
		chromedp.Click(chromedp.CSS("#login-form button")),
		chromedp.WaitVisible(chromedp.CSS("#findings-body tr")))
	if err != nil {
		b.Fatal(err)
	}
	var inPage time.Duration
	for b.Loop() {
		err := chromedp.Do(ctx, chromedp.Navigate(c.srv.URL+"/?r="+fmt.Sprint(time.Now().UnixNano())+"#/findings"))
		if err == nil {
			err = webtest.WaitTrue(ctx, `document.querySelectorAll('#findings-body tr').length === 50`, 10*time.Second)
		}
		if err != nil {
			b.Fatal(err)
		}
		// The page's own measure, without the driver's polling and round trips.
		ms, err := webtest.Eval[float64](ctx, `performance.getEntriesByName('mamori:first-page')[0].startTime`)
		if err != nil {
			b.Fatal(err)
		}
		inPage += time.Duration(ms * float64(time.Millisecond))
	}
	b.ReportMetric(float64(inPage.Milliseconds())/float64(b.N), "ms-to-first-page")
}

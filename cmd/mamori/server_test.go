package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mamori-dev/mamori/internal/finding"
	"github.com/mamori-dev/mamori/internal/server/api"
	"github.com/mamori-dev/mamori/internal/server/export"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// mamoriBinary builds the command once per test run.
func mamoriBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "mamori-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "mamori")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binErr = err
			t.Logf("%s", out)
		}
	})
	if binErr != nil {
		t.Fatalf("build mamori: %v", binErr)
	}
	return binPath
}

// cli runs the binary and returns stdout, stderr and whether it succeeded.
func cli(t *testing.T, args ...string) (string, string, bool) {
	t.Helper()
	cmd := exec.Command(mamoriBinary(t), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err == nil
}

func cliJSON(t *testing.T, v any, args ...string) {
	t.Helper()
	out, errOut, ok := cli(t, append(args, "--json")...)
	if !ok {
		t.Fatalf("mamori %s: %s", strings.Join(args, " "), errOut)
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("mamori %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// hook is a webhook receiver collecting OCSF records.
type hook struct {
	mu   sync.Mutex
	recs []export.OCSFFinding
}

func (h *hook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	var f export.OCSFFinding
	if err := json.Unmarshal(b, &f); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	h.mu.Lock()
	h.recs = append(h.recs, f)
	h.mu.Unlock()
}

func (h *hook) snapshot() []export.OCSFFinding {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]export.OCSFFinding(nil), h.recs...)
}

// TestCLIEndToEnd runs `mamori server` as a process and drives it with the
// CLI binary: samples, listing, filters, get, archive, suppression (stored
// archived, never exported), coverage, and tokens with too small a scope.
func TestCLIEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dir := t.TempDir()
	rcv := &hook{}
	hs := httptest.NewServer(rcv)
	defer hs.Close()
	srv, srvOut, _, url, admin := startServerProcess(t, dir, "--api-addr", "127.0.0.1:0", "--cluster", "e2e",
		"--export-webhook", hs.URL, "--export-file", filepath.Join(dir, "export.jsonl"), "--export-format", "ocsf", "--export-update-frequency", "15m",
		"--export-file", "falco="+filepath.Join(dir, "falco.jsonl"))
	local := api.LocalFor(dir)
	if !strings.Contains(srvOut.String(), url) || !strings.HasPrefix(url, "http://127.0.0.1:") {
		t.Fatalf("server did not print its address %q: %q", url, srvOut.String())
	}
	if want := "sudo cat " + filepath.Join(dir, "api", "admin.token"); !strings.Contains(srvOut.String(), want) {
		t.Fatalf("server did not say where its admin token is (%q): %q", want, srvOut.String())
	}
	d := "--data-dir=" + dir

	// A second server on the same data directory is refused before it
	// touches anything, and the first keeps its address file.
	if _, errOut, ok := cli(t, "server", d, "--api-addr", "127.0.0.1:0"); ok ||
		!strings.Contains(errOut, "another mamori server is running with --data-dir "+dir) ||
		!strings.Contains(errOut, fmt.Sprintf("(pid %d)", srv.Process.Pid)) {
		t.Fatalf("a second server on the same data dir: ok=%v, stderr %q", ok, errOut)
	}
	if u, _, err := local.Read(); err != nil || u != url {
		t.Fatalf("the refused second server disturbed the first's address file: %q, %v", u, err)
	}

	// A suppression rule first, then samples: the suppressed type is
	// stored archived and never exported.
	const suppressed = "Discovery:Runtime/SuspiciousCommand"
	var rule api.RuleResponse
	cliJSON(t, &rule, "suppress", "add", d, "--name", "recon noise", "--type", suppressed)
	if rule.ID == "" || rule.Action != "ARCHIVE" {
		t.Fatalf("rule %+v", rule)
	}
	var samples api.SamplesResponse
	cliJSON(t, &samples, "findings", "samples", d)
	n := len(finding.Catalogue)
	if samples.Created != n {
		t.Fatalf("samples %d", samples.Created)
	}
	var page struct {
		Findings []json.RawMessage
		Total    int
	}
	cliJSON(t, &page, "findings", "list", d, "--limit", "20", "--all")
	if page.Total != n-1 || len(page.Findings) != n-1 {
		t.Fatalf("active findings: total %d, listed %d, want %d", page.Total, len(page.Findings), n-1)
	}
	cliJSON(t, &page, "findings", "list", d, "--archived")
	var sup struct {
		Type         string `json:"type"`
		SuppressedBy string `json:"suppressedBy"`
	}
	if page.Total != 1 || json.Unmarshal(page.Findings[0], &sup) != nil || sup.SuppressedBy != rule.ID || sup.Type != suppressed {
		t.Fatalf("suppressed finding: %d %s", page.Total, page.Findings)
	}
	cliJSON(t, &page, "findings", "list", d, "--severity", "High", "--type", "Execution:*", "--limit", "100")
	for _, raw := range page.Findings {
		var f finding.Finding
		if err := json.Unmarshal(raw, &f); err != nil {
			t.Fatal(err)
		}
		if f.SeverityLabel != "High" || !strings.HasPrefix(f.Type, "Execution:") || f.Service.Archived {
			t.Errorf("filtered list returned %s %s", f.SeverityLabel, f.Type)
		}
	}
	if page.Total == 0 {
		t.Fatal("no High Execution sample")
	}

	// Exports: every new, unsuppressed finding at once, as OCSF Create.
	deadline := time.Now().Add(15 * time.Second)
	for len(rcv.snapshot()) < n-1 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // nothing more may arrive
	recs := rcv.snapshot()
	if len(recs) != n-1 {
		t.Fatalf("webhook got %d records, want %d", len(recs), n-1)
	}
	for _, r := range recs {
		if r.ClassUID != 2004 || r.ActivityID != export.OCSFActivityCreate || r.FindingInfo.Types[0] == suppressed {
			t.Fatalf("exported record: class %d activity %d type %v", r.ClassUID, r.ActivityID, r.FindingInfo.Types)
		}
	}

	// The export file holds the same records, one per line.
	b, err := os.ReadFile(filepath.Join(dir, "export.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Count(string(b), "\n"); lines != n-1 || !strings.Contains(string(b), `"class_uid":2004`) {
		t.Fatalf("export file: %d lines", lines)
	}
	// A sink with a format of its own (falco=PATH) beside the OCSF ones.
	b, err = os.ReadFile(filepath.Join(dir, "falco.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Count(string(b), "\n"); lines != n-1 || strings.Contains(string(b), `"class_uid"`) ||
		!strings.Contains(string(b), `"output_fields"`) {
		t.Fatalf("falco export file: %d lines: %.300s", lines, b)
	}

	// Get, in both forms, then archive.
	id := recs[0].FindingInfo.UID
	out, errOut, ok := cli(t, "findings", "get", id, d)
	if !ok || !strings.Contains(out, "Id:              "+id) || !strings.Contains(out, "Node:            mamori-server") {
		t.Fatalf("get: %s %s", out, errOut)
	}
	var rec map[string]any
	cliJSON(t, &rec, "findings", "get", id, d)
	if rec["id"] != id || rec["revision"] == nil {
		t.Fatalf("get --json: %v", rec)
	}
	if out, errOut, ok = cli(t, "findings", "archive", id, d); !ok || !strings.Contains(out, "archived 1 of 1") {
		t.Fatalf("archive: %s %s", out, errOut)
	}
	cliJSON(t, &page, "findings", "list", d, "--archived")
	if page.Total != 2 {
		t.Fatalf("archived after archive: %d", page.Total)
	}
	if out, _, ok = cli(t, "findings", "unarchive", id, d); !ok || !strings.Contains(out, "unarchived 1") {
		t.Fatalf("unarchive: %s", out)
	}
	// An id that does not exist is an error, not "0 of 1"; one already in
	// the asked state is not.
	if out, errOut, ok = cli(t, "findings", "archive", id, "deadbeef", d); ok || !strings.Contains(errOut, "no such finding: deadbeef") ||
		strings.Contains(errOut, id) {
		t.Fatalf("archive of a missing id: ok=%v %s %s", ok, out, errOut)
	}
	if out, errOut, ok = cli(t, "findings", "archive", id, d); !ok || !strings.Contains(out, "archived 0 of 1") {
		t.Fatalf("archive of an archived finding: ok=%v %s %s", ok, out, errOut)
	}
	if _, _, ok = cli(t, "findings", "unarchive", id, d); !ok {
		t.Fatal("unarchive")
	}
	if out, errOut, ok = cli(t, "findings", "get", "ffffffffffffffffffffffffffffffff", d); ok || !strings.Contains(errOut, "404") {
		t.Fatalf("unknown id: %s %s", out, errOut)
	}

	// Table output and coverage.
	if out, _, ok = cli(t, "findings", "list", d, "--limit", "3"); !ok || !strings.HasPrefix(out, "SEVERITY") || !strings.Contains(out, "next page") {
		t.Fatalf("table: %s", out)
	}
	var cov struct {
		Nodes      []json.RawMessage
		Statistics api.CoverageStatistics
	}
	cliJSON(t, &cov, "coverage", d)
	if cov.Statistics.Overall.Total != len(cov.Nodes) {
		t.Fatalf("coverage %+v", cov)
	}
	var rules struct{ Rules []api.RuleResponse }
	cliJSON(t, &rules, "suppress", "list", d)
	if len(rules.Rules) != 1 || rules.Rules[0].ID != rule.ID {
		t.Fatalf("rules %+v", rules)
	}

	// --server and --token: a read token lists but cannot archive; no
	// token is refused before any request.
	reader := createToken(t, url, admin, api.ScopeRead)
	if _, errOut, ok = cli(t, "findings", "list", "--server", url, "--token", reader, "--limit", "1"); !ok {
		t.Fatalf("read token list: %s", errOut)
	}
	if _, errOut, ok = cli(t, "findings", "archive", id, "--server", url, "--token", reader); ok || !strings.Contains(errOut, "403") {
		t.Fatalf("read token archived: %s", errOut)
	}
	if _, errOut, ok = cli(t, "findings", "list", "--server", url, "--token", "mat1.000000000000.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"); ok || !strings.Contains(errOut, "401") {
		t.Fatalf("unknown token: %s", errOut)
	}
	// Prometheus metrics: a read token, nothing less.
	for _, c := range []struct {
		token string
		want  int
	}{{"", http.StatusUnauthorized}, {createToken(t, url, admin, api.ScopeAgent), http.StatusForbidden}, {reader, http.StatusOK}} {
		req, _ := http.NewRequest(http.MethodGet, url+"/metrics", nil)
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		// The stream's bound is served from JetStream itself.
		if res.StatusCode != c.want || (c.want == http.StatusOK &&
			!strings.Contains(string(body), "\nmamori_transport_stream_max_bytes ")) {
			t.Fatalf("/metrics with token %q: %d (want %d)", c.token, res.StatusCode, c.want)
		}
	}
	if _, errOut, ok = cli(t, "suppress", "delete", rule.ID, d); !ok {
		t.Fatalf("delete rule: %s", errOut)
	}
	if _, errOut, ok = cli(t, "findings", "list", "--data-dir", t.TempDir()); ok || !strings.Contains(errOut, "no local mamori server") {
		t.Fatalf("empty data dir: %s", errOut)
	}

	// Updates are held for the update frequency (15m here), in the
	// store's export outbox: not sent at once, nor rushed out at SIGTERM
	// (TestExportOutlivesKill shows they outlive the server).
	before := len(rcv.snapshot())
	cliJSON(t, &samples, "findings", "samples", d)
	time.Sleep(time.Second)
	if got := len(rcv.snapshot()); got != before {
		t.Fatalf("updates went out at once: %d records, had %d", got, before)
	}
	// Every sample but the suppressed one (archiving by hand does not
	// stop exports; a suppression rule does).
	if pending := metricValue(t, url, admin, `mamori_export_outbox_pending{sink="webhook-0"}`); pending != float64(n-1) {
		t.Fatalf("held updates in the outbox: %v, want %d", pending, n-1)
	}
}

// startServerProcess runs `mamori server --data-dir dir args...` and waits
// for its address file; the server is stopped with SIGTERM at cleanup
// unless the test ended it.
func startServerProcess(t *testing.T, dir string, args ...string) (srv *exec.Cmd, out, errOut *syncBuffer, url, admin string) {
	t.Helper()
	srv = exec.Command(mamoriBinary(t), append([]string{"server", "--data-dir", dir}, args...)...)
	out, errOut = &syncBuffer{}, &syncBuffer{}
	srv.Stdout, srv.Stderr = out, errOut
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if srv.ProcessState == nil {
			_ = srv.Process.Signal(syscall.SIGTERM)
			_ = srv.Wait()
		}
		if t.Failed() {
			t.Logf("server stderr:\n%s", errOut.String())
		}
	})
	local := api.LocalFor(dir)
	for deadline := time.Now().Add(20 * time.Second); ; {
		var err error
		// The address file a killed server left behind is not this one's.
		if url, admin, err = local.Read(); err == nil && strings.Contains(out.String(), url) {
			return srv, out, errOut, url, admin
		}
		if time.Now().After(deadline) {
			t.Fatalf("server wrote no address: %v\n%s", err, errOut.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// syncBuffer is a bytes.Buffer a process writes while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// metricValue reads one sample (name with its labels, as exposed) from
// the server's /metrics; -1 when absent.
func metricValue(t *testing.T, url, token, sample string) float64 {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			var f float64
			if _, err := fmt.Sscan(v, &f); err == nil {
				return f
			}
		}
	}
	return -1
}

func createToken(t *testing.T, url, admin string, scope api.Scope) string {
	t.Helper()
	b, _ := json.Marshal(api.TokenRequest{Name: "e2e " + string(scope), Scope: scope})
	req, _ := http.NewRequestWithContext(context.Background(), "POST", url+api.Prefix+"/tokens", bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+admin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tr api.TokenResponse
	if err := json.NewDecoder(resp.Body).Decode(&tr); err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("create token: %d %v", resp.StatusCode, err)
	}
	return tr.Value
}

package e2e

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mamori-dev/mamori/internal/testenv"
)

// TestServerOnAFillingDisk runs `mamori server` on a small disk of its own
// with a separate `mamori agent`. The server starts although the disk is
// smaller than NATS's default quota would need; when the disk runs low it
// refuses agent messages, the agent keeps what it detects in its spool,
// coverage names the server's disk — not the agent — as why the node is
// silent; once the disk has room, what the agent saw arrives, counted once,
// and the node is Healthy again without having been blamed on its agent.
func TestServerOnAFillingDisk(t *testing.T) {
	m := start(t)
	bin := filepath.Join(m.dir, "mamori")
	srvDir := testenv.SmallDisk(t, 320)
	agDir := t.TempDir()
	natsPort, apiPort := testenv.FreePort(t), testenv.FreePort(t)
	srv := testenv.StartProcess(t, "", "server", bin, "server", "--data-dir", srvDir, "--api-addr", "127.0.0.1:"+strconv.Itoa(apiPort),
		"--nats-port", strconv.Itoa(natsPort), "--cluster", "disk", "--min-free-disk", strconv.Itoa(64<<20))
	token := testenv.WaitFile(t, filepath.Join(srvDir, "join-token"))
	url := testenv.WaitFile(t, filepath.Join(srvDir, "api", "address"))
	admin := testenv.WaitFile(t, filepath.Join(srvDir, "api", "admin.token"))
	testenv.StartProcess(t, "", "agent", bin, "agent", "--data-dir", agDir, "--server", url, "--join-token", token,
		"--cluster", "disk", "--metrics-addr", "", "-q")
	nodeID := testenv.WaitFile(t, filepath.Join(agDir, "node-id"))
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(agDir, "events.sock")); err == nil {
			break
		}
	}
	time.Sleep(time.Second) // detection subscribed
	secret := func(name string) string {
		p := "/root/.ssh/mamori-e2e-disk-" + name + "-" + randHex(t)
		os.MkdirAll("/root/.ssh", 0o700)
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Remove(p) })
		exec.Command("cat", p).Run()
		return p
	}
	waitServerFinding(t, bin, srvDir, nodeID, secret("before"))
	waitHealthy := func(step string) {
		t.Helper()
		var status, issue string
		for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(time.Second) {
			if status, issue = nodeIssue(t, bin, srvDir); status == "Healthy" {
				return
			}
		}
		t.Fatalf("%s: node %s %q, want Healthy", step, status, issue)
	}
	waitHealthy("before the disk fills")

	free := testenv.FillDisk(t, srvDir, 32<<20)
	serverLog := func() string { b, _ := os.ReadFile(srv.Log); return string(b) }
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(serverLog(), "disk guard: disk low on space"); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the server did not notice its disk ran low:\n%s", srv.LogTail(40))
		}
	}
	during := secret("during")
	// Silent for 30 s (three heartbeats), the node is Unhealthy: the
	// server's disk is named.
	const want = "SERVER_BEHIND:no heartbeat stored since "
	const why = " while the server refuses agent messages: the disk under its message store is full or low on free space"
	var status, issue string
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(time.Second) {
		if status, issue = nodeIssue(t, bin, srvDir); strings.HasPrefix(issue, want) {
			break
		}
	}
	if status != "Unhealthy" || !strings.HasPrefix(issue, want) || !strings.Contains(issue, why) {
		t.Fatalf("coverage with the server's disk low: %s %q, want %q...%q", status, issue, want, why)
	}
	for _, f := range serverFindings(t, bin, srvDir) {
		if strings.Contains(f.String(), during) {
			t.Fatal("a finding reached the store while the server refused agent messages")
		}
	}
	if h := health(t, url, admin); h.Status != "degraded" || len(h.Problems) != 1 || !strings.Contains(h.Problems[0], "agent intake paused since") {
		t.Fatalf("/health with the disk low: %+v", h)
	}

	free()
	f := waitServerFinding(t, bin, srvDir, nodeID, during)
	if f.Num("service.count") != 1 {
		t.Errorf("finding held in the agent's spool counted %v times", f.Num("service.count"))
	}
	waitHealthy("with room again")
	if h := health(t, url, admin); h.Status != "ok" || len(h.Problems) != 0 {
		t.Fatalf("/health with room again: %+v", h)
	}
	// Heard again within seconds of the resumption, the node was never
	// blamed on its agent on the way back.
	if strings.Contains(serverLog(), "AGENT_NOT_REPORTING") {
		t.Error("the node was called not reporting: the server's refusal was its cause")
	}
}

// serverHealth is GET /api/v1/health.
type serverHealth struct {
	Status   string   `json:"status"`
	Problems []string `json:"problems"`
}

func health(t *testing.T, apiURL, token string) serverHealth {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, apiURL+"/api/v1/health", nil)
	req.Header.Set("Authorization", "Bearer "+token) // the problems are told to a reader only
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("health: %v", err)
	}
	defer res.Body.Close()
	var h serverHealth
	if err := json.NewDecoder(res.Body).Decode(&h); err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("health: %d %v", res.StatusCode, err)
	}
	return h
}

package e2e

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mamori-dev/mamori/internal/testenv"
	"github.com/mamori-dev/mamori/internal/transport"
)

// serverFindings lists the server's findings through the CLI.
func serverFindings(t *testing.T, bin, dataDir string) []Finding {
	t.Helper()
	out, err := exec.Command(bin, "findings", "list", "--data-dir", dataDir, "--json").Output()
	if err != nil {
		return nil
	}
	var page struct {
		Findings []Finding `json:"findings"`
	}
	if json.Unmarshal(out, &page) == nil && page.Findings != nil {
		return page.Findings
	}
	var list []Finding
	_ = json.Unmarshal(out, &list)
	return list
}

func waitServerFinding(t *testing.T, bin, dataDir, nodeID, path string) Finding {
	t.Helper()
	return waitServer(t, bin, dataDir, nodeID, "about "+path, func(f Finding) bool { return strings.Contains(f.String(), path) })
}

// waitServer waits for a finding of node matching match on the server.
func waitServer(t *testing.T, bin, dataDir, nodeID, what string, match func(Finding) bool) Finding {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, f := range serverFindings(t, bin, dataDir) {
			if f.Str("service.additionalInfo.agentDetails.agentId") == nodeID && match(f) {
				return f
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("no finding %s from node %s reached the server", what, nodeID)
	return nil
}

// TestRemoteAgentThroughOutage: a separate `mamori agent` enrolls with a
// `mamori server` by join token over the server's self-signed HTTPS, pinning
// its CA by fingerprint (a wrong fingerprint is refused before the token is
// sent), and reports over NATS JetStream; the server
// is killed with SIGKILL, the agent keeps detecting, and after the server
// restarts on the same data directory what the agent saw in between
// arrives, counted once.
func TestRemoteAgentThroughOutage(t *testing.T) {
	m := start(t)
	bin := filepath.Join(m.dir, "mamori")
	srvDir, agDir := t.TempDir(), t.TempDir()
	natsPort, apiPort := testenv.FreePort(t), testenv.FreePort(t)
	serverArgs := []string{bin, "server", "--data-dir", srvDir, "--api-addr", "127.0.0.1:" + strconv.Itoa(apiPort),
		"--nats-port", strconv.Itoa(natsPort), "--cluster", "edge", "--api-tls", "on"}
	srv := testenv.StartProcess(t, "", "server", serverArgs...)
	token := testenv.WaitFile(t, filepath.Join(srvDir, "join-token"))
	url := testenv.WaitFile(t, filepath.Join(srvDir, "api", "address"))
	if !strings.HasPrefix(url, "https://") {
		t.Fatalf("server with --api-tls on serves %s", url)
	}
	ca, err := os.ReadFile(filepath.Join(srvDir, "api", "tls", "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	fp, err := transport.CAFingerprint(ca)
	if err != nil {
		t.Fatal(err)
	}
	wrong := strings.Repeat("0", len(fp))
	out, err := exec.Command(bin, "agent", "--data-dir", t.TempDir(), "--server", url, "--join-token", token,
		"--ca-fingerprint", wrong, "--metrics-addr", "", "-q").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "pinned fingerprint") {
		t.Fatalf("agent with a wrong CA fingerprint: %v\n%s", err, out)
	}

	// The CLI reaches an https server by its CA's fingerprint, in openssl's
	// form too; without it, the error says what to pass.
	admin := testenv.WaitFile(t, filepath.Join(srvDir, "api", "admin.token"))
	out, err = exec.Command(bin, "coverage", "--server", url, "--token", admin).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--ca-fingerprint") {
		t.Errorf("CLI against the server's own CA without a pin: %v\n%s", err, out)
	}
	var colons []string
	for i := 0; i < len(fp); i += 2 {
		colons = append(colons, strings.ToUpper(fp[i:i+2]))
	}
	out, err = exec.Command(bin, "coverage", "--server", url, "--token", admin, "--ca-fingerprint", "SHA256 Fingerprint="+strings.Join(colons, ":")).CombinedOutput()
	if err != nil {
		t.Errorf("CLI with the openssl form of the fingerprint: %v\n%s", err, out)
	}

	// A custom rule kept on the server reaches the agent by distribution.
	rule := `rules:
  - id: e2e-distributed
    type: Custom:Runtime/DistributedRule
    severity: Medium
    kinds: [open]
    condition: event.file.path == "/etc/mamori-e2e-distributed" && event.file.write
`
	if err := os.WriteFile(filepath.Join(srvDir, "rules", "distributed.yaml"), []byte(rule), 0o644); err != nil { // the server made the directory
		t.Fatal(err)
	}
	ag := testenv.StartProcess(t, "", "agent", bin, "agent", "--data-dir", agDir, "--server", url, "--join-token", token, "--cluster", "edge",
		"--ca-fingerprint", fp, "--metrics-addr", "", "-q", "--label", "mamori.io/managed=false", "--sync-interval", "1s")
	nodeID := testenv.WaitFile(t, filepath.Join(agDir, "node-id"))
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(agDir, "events.sock")); err == nil {
			break
		}
	}
	time.Sleep(time.Second) // detection subscribed
	secret := "/root/.ssh/mamori-e2e-" + randHex(t)
	os.MkdirAll("/root/.ssh", 0o700)
	_ = os.WriteFile(secret, []byte("x"), 0o600)
	t.Cleanup(func() { os.Remove(secret) })
	exec.Command("cat", secret).Run()
	f := waitServerFinding(t, bin, srvDir, nodeID, secret)
	if f.Str("type") != "CredentialAccess:Runtime/SensitiveFileRead" {
		t.Fatalf("type %s", f.Str("type"))
	}

	// The distributed rule is in the agent's rules directory and fires.
	testenv.WaitFile(t, filepath.Join(agDir, "rules", "distributed.yaml"))
	time.Sleep(3 * time.Second) // the agent polls its rules directory every 2s
	t.Cleanup(func() { os.Remove("/etc/mamori-e2e-distributed") })
	if err := os.WriteFile("/etc/mamori-e2e-distributed", []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitServer(t, bin, srvDir, nodeID, "of the distributed rule", func(f Finding) bool {
		return f.Str("type") == "Custom:Runtime/DistributedRule" && strings.Contains(f.String(), "/etc/mamori-e2e-distributed")
	})

	// The node opted out of coverage with its label, and coverage says so.
	if status, issue := nodeIssue(t, bin, srvDir); status != "Unhealthy" || issue != "EXCLUDED_BY_LABEL:excluded by label mamori.io/managed=false" {
		t.Errorf("coverage of the opted-out node: %s %q", status, issue)
	}

	// Outage: kill the server hard, detect meanwhile, restart.
	srv.Kill()
	during := secret + "-during-outage"
	_ = os.WriteFile(during, []byte("x"), 0o600)
	t.Cleanup(func() { os.Remove(during) })
	exec.Command("cat", during).Run()
	time.Sleep(3 * time.Second)
	srv = testenv.StartProcess(t, "", "server-again", serverArgs...)
	g := waitServerFinding(t, bin, srvDir, nodeID, during)
	if g.Num("service.count") != 1 {
		t.Errorf("finding from the outage counted %v times", g.Num("service.count"))
	}

	// A second agent on the data directory is refused before it connects.
	out, err = exec.Command(bin, "agent", "--data-dir", agDir, "--server", url, "--ca-fingerprint", fp,
		"--metrics-addr", "", "-q").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "in use") || strings.Contains(string(out), "transport: connected") {
		t.Errorf("a second agent on the data directory: %v\n%s", err, out)
	}

	// A clean stop says so at once; a crash waits for silence.
	ag.Stop()
	var issue string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if _, issue = nodeIssue(t, bin, srvDir); strings.HasPrefix(issue, "AGENT_EXITED:") {
			break
		}
	}
	if issue != "AGENT_EXITED:agent exited with code 0: stopped (signal)" {
		t.Errorf("coverage after the agent stopped: %q", issue)
	}

	// Join tokens are listed, the server's own among them, used.
	if out, err := exec.Command(bin, "agents", "join-tokens", "--data-dir", srvDir).CombinedOutput(); err != nil ||
		!strings.Contains(string(out), "written to the data dir at server start") || !strings.Contains(string(out), "(unlimited)") {
		t.Errorf("agents join-tokens: %v\n%s", err, out)
	}

	// Removed on the server, the node leaves coverage; started again with
	// the join token, its refused credential is replaced by a new enrollment
	// and it reports again.
	if out, err := exec.Command(bin, "agents", "remove", nodeID, "--data-dir", srvDir).CombinedOutput(); err != nil {
		t.Fatalf("agents remove: %v\n%s", err, out)
	}
	if status, issue := nodeIssue(t, bin, srvDir); status != "" {
		t.Errorf("removed node still in coverage: %s %q", status, issue)
	}
	again := testenv.StartProcess(t, "", "agent-again", bin, "agent", "--data-dir", agDir, "--server", url, "--join-token", token,
		"--cluster", "edge", "--ca-fingerprint", fp, "--metrics-addr", "", "-q")
	readSecretSeen(t, bin, srvDir, agDir, nodeID, secret+"-after-removal")
	if log, _ := os.ReadFile(again.Log); !strings.Contains(string(log), "enrolling again") {
		t.Errorf("the agent did not say it enrolled again:\n%s", log)
	}

	// An agent that fails after it started reporting exits (it hung before,
	// heartbeating while nothing detected) and its node says why.
	again.Stop()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	out, err = exec.CommandContext(ctx, bin, "agent", "--data-dir", agDir, "--server", url, "--ca-fingerprint", fp,
		"--metrics-addr", busy.Addr().String(), "-q").CombinedOutput()
	if ctx.Err() != nil || err == nil {
		t.Fatalf("agent with its metrics port taken: %v (context %v)\n%s", err, ctx.Err(), out)
	}
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if _, issue = nodeIssue(t, bin, srvDir); strings.HasPrefix(issue, "AGENT_EXITED:agent exited with code 1") {
			break
		}
	}
	if !strings.HasPrefix(issue, "AGENT_EXITED:agent exited with code 1") || !strings.Contains(issue, "address already in use") {
		t.Errorf("coverage after the agent failed: %q", issue)
	}

	// The server moves its NATS to another port. An agent whose enrolled
	// address no longer answers asks the API where NATS is now, follows,
	// and reports.
	srv.Stop()
	movedArgs := slices.Clone(serverArgs)
	movedArgs[slices.Index(movedArgs, "--nats-port")+1] = strconv.Itoa(testenv.FreePort(t))
	moved := testenv.StartProcess(t, "", "server-moved", movedArgs...)
	testenv.WaitFile(t, filepath.Join(srvDir, "api", "address"))
	follower := testenv.StartProcess(t, "", "agent-follows", bin, "agent", "--data-dir", agDir, "--server", url,
		"--ca-fingerprint", fp, "--metrics-addr", "", "-q", "--follow-after", "3s")
	readSecretSeen(t, bin, srvDir, agDir, nodeID, secret+"-after-nats-moved")
	if log, _ := os.ReadFile(follower.Log); !strings.Contains(string(log), "asking the server's API where it is") ||
		strings.Count(string(log), "the server's NATS moved; following it") != 1 {
		t.Errorf("the agent did not say it asked where NATS is at its start and followed:\n%s", log)
	}

	// It moves again while the agent runs: after --follow-after without
	// the bus, the running agent asks the API, follows, keeps the new
	// address for its next start, and what it saw meanwhile arrives.
	moved.Stop()
	port := strconv.Itoa(testenv.FreePort(t))
	movedArgs[slices.Index(movedArgs, "--nats-port")+1] = port
	during = secret + "-while-nats-moves"
	_ = os.WriteFile(during, []byte("x"), 0o600)
	t.Cleanup(func() { os.Remove(during) })
	exec.Command("cat", during).Run()
	testenv.StartProcess(t, "", "server-moved-again", movedArgs...)
	waitServerFinding(t, bin, srvDir, nodeID, during)
	if log, _ := os.ReadFile(follower.Log); strings.Count(string(log), "the server's NATS moved; following it") != 2 {
		t.Errorf("the running agent did not say it followed the server's NATS:\n%s", log)
	}
	creds, err := transport.LoadCredentials(agDir)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(creds.NATSURLs, func(u string) bool { return strings.HasSuffix(u, ":"+port) }) {
		t.Errorf("the agent kept %v for its next start, not the port %s", creds.NATSURLs, port)
	}
	readSecretSeen(t, bin, srvDir, agDir, nodeID, secret+"-after-live-follow")
}

// readSecretSeen waits until the agent of agDir serves its event socket
// (and has subscribed its detectors), reads a fresh secret file at path,
// and waits for the server to hold the finding about it.
func readSecretSeen(t *testing.T, bin, srvDir, agDir, nodeID, path string) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(agDir, "events.sock")); err == nil {
			break
		}
	}
	time.Sleep(time.Second)
	_ = os.WriteFile(path, []byte("x"), 0o600)
	t.Cleanup(func() { os.Remove(path) })
	exec.Command("cat", path).Run()
	waitServerFinding(t, bin, srvDir, nodeID, path)
}

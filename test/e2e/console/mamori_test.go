// Package console tests the web console end to end: a real `mamori run`
// (sensor, detection, server, API, console) on this host, real attacks in
// real podman containers, and the console driven in headless Chromium.
// Screenshots are saved under test/e2e/artifacts/.
package console

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// mamori is one running `mamori run`.
type mamori struct {
	bin, data string
	url       string
	token     string
	cmd       *exec.Cmd
	log       *os.File
}

// build compiles the mamori binary into dir.
func build(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "mamori")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/mamori-dev/mamori/cmd/mamori").CombinedOutput()
	if err != nil {
		t.Fatalf("build mamori: %v\n%s", err, out)
	}
	return bin
}

// launch starts `mamori run` with a fresh data directory and waits until
// its agent and its API answer. It is stopped at cleanup.
func launch(t *testing.T, bin string, extra ...string) *mamori {
	t.Helper()
	dir := t.TempDir()
	m := &mamori{bin: bin, data: filepath.Join(dir, "data")}
	var err error
	if m.log, err = os.Create(filepath.Join(dir, "mamori.log")); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"run", "--data-dir", m.data, "--metrics-addr", "", "--print", "", "--quiet",
		"--api-addr", "127.0.0.1:0", "--nats-port", "-1"}, extra...)
	m.cmd = exec.Command(bin, args...)
	m.cmd.Stdout, m.cmd.Stderr = m.log, m.log
	if err := m.cmd.Start(); err != nil {
		t.Fatalf("start mamori run: %v", err)
	}
	t.Cleanup(func() { m.stop(t) })
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		if m.ready() {
			return m
		}
		if m.cmd.ProcessState != nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("mamori run not ready within 90s; log:\n%s", m.logTail())
	return nil
}

// agentProc is a remote `mamori agent` reporting to a mamori run.
type agentProc struct {
	data string
	cmd  *exec.Cmd
	log  *os.File
}

// startAgent enrolls a separate `mamori agent` with m by its join token, in
// cluster, and waits until its sensor runs. It is stopped at cleanup.
func startAgent(t *testing.T, m *mamori, cluster string) *agentProc {
	t.Helper()
	dir := t.TempDir()
	tok, err := os.ReadFile(filepath.Join(m.data, "join-token"))
	if err != nil {
		t.Fatalf("join token: %v", err)
	}
	a := &agentProc{data: filepath.Join(dir, "data")}
	if a.log, err = os.Create(filepath.Join(dir, "agent.log")); err != nil {
		t.Fatal(err)
	}
	a.cmd = exec.Command(m.bin, "agent", "--data-dir", a.data, "--server", m.url, "--join-token", strings.TrimSpace(string(tok)),
		"--cluster", cluster, "--metrics-addr", "", "--print", "", "--quiet")
	a.cmd.Stdout, a.cmd.Stderr = a.log, a.log
	if err := a.cmd.Start(); err != nil {
		t.Fatalf("start mamori agent: %v", err)
	}
	t.Cleanup(func() {
		if a.cmd.ProcessState == nil {
			_ = a.cmd.Process.Kill()
			_ = a.cmd.Wait()
		}
		if t.Failed() {
			b, _ := os.ReadFile(a.log.Name())
			t.Logf("agent log (tail):\n%s", b[max(0, len(b)-4000):])
		}
	})
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if c, err := net.Dial("unix", filepath.Join(a.data, "events.sock")); err == nil {
			c.Close()
			return a
		}
		if a.cmd.ProcessState != nil {
			break
		}
	}
	b, _ := os.ReadFile(a.log.Name())
	t.Fatalf("mamori agent not ready within 90s; log:\n%s", b)
	return nil
}

// ready reports whether the agent's socket and the API answer, reading
// the API's address and admin token from the data directory as the CLI does.
func (m *mamori) ready() bool {
	c, err := net.Dial("unix", filepath.Join(m.data, "events.sock"))
	if err != nil {
		return false
	}
	c.Close()
	addr, err1 := os.ReadFile(filepath.Join(m.data, "api", "address"))
	tok, err2 := os.ReadFile(filepath.Join(m.data, "api", "admin.token"))
	if err1 != nil || err2 != nil {
		return false
	}
	m.url, m.token = strings.TrimSpace(string(addr)), strings.TrimSpace(string(tok))
	resp, err := http.Get(m.url + "/api/v1/health")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == 200
}

func (m *mamori) stop(t *testing.T) {
	if m.cmd.Process == nil || m.cmd.ProcessState != nil {
		return
	}
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = m.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = m.cmd.Process.Kill()
		<-done
	}
	if t.Failed() {
		t.Logf("mamori log (tail):\n%s", m.logTail())
	}
}

func (m *mamori) logTail() string {
	b, _ := os.ReadFile(m.log.Name())
	return string(b[max(0, len(b)-6000):])
}

// api calls the API with the admin token and decodes the answer into out.
func (m *mamori) api(t *testing.T, method, path string, body, out any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, m.url+"/api/v1"+path, rd)
	req.Header.Set("Authorization", "Bearer "+m.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
}

// Finding is the part of a stored finding the tests read.
type Finding struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	Resource struct {
		ContainerDetails *struct {
			ID string `json:"id"`
		} `json:"containerDetails"`
	} `json:"resource"`
	Service struct {
		Archived       bool `json:"archived"`
		RuntimeDetails struct {
			Process *struct {
				Name           string `json:"name"`
				ExecutablePath string `json:"executablePath"`
			} `json:"process"`
		} `json:"runtimeDetails"`
	} `json:"service"`
	SuppressedBy string `json:"suppressedBy"`
}

// waitFinding polls the API for a finding of typ about container ctr.
func (m *mamori) waitFinding(t *testing.T, typ, ctr string) Finding {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var seen []string
	for time.Now().Before(deadline) {
		var page struct {
			Findings []Finding `json:"findings"`
		}
		m.api(t, "GET", "/findings?limit=100&container="+ctr[:12]+"&archived=false", nil, &page)
		seen = seen[:0]
		for _, f := range page.Findings {
			if f.Type == typ {
				return f
			}
			seen = append(seen, f.Type)
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("no %s finding for container %s within 30s; findings for it: %v", typ, ctr[:12], seen)
	return Finding{}
}

func (m *mamori) finding(t *testing.T, id string) Finding {
	t.Helper()
	var f Finding
	m.api(t, "GET", "/findings/"+id, nil, &f)
	return f
}

func short(id string) string { return fmt.Sprintf("%.12s", id) }

// Package e2e performs real attacks in real containers and on the host
// against a running `mamori run`, and asserts the findings it writes to its
// --findings-file. Each finding type has a test with the attack and a
// benign twin that must stay silent.
package e2e

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mamori-dev/mamori/internal/server/api"
	"github.com/mamori-dev/mamori/internal/testenv"
)

// Finding is a finding line as written to --findings-file, kept generic
// so tests read it the way a user's tooling would: by JSON field names.
type Finding map[string]any

// Get walks a dotted path ("service.runtimeDetails.process.name");
// numeric segments index arrays.
func (f Finding) Get(path string) any {
	var cur any = map[string]any(f)
	for _, seg := range strings.Split(path, ".") {
		switch v := cur.(type) {
		case map[string]any:
			cur = v[seg]
		case []any:
			var i int
			if _, err := fmt.Sscanf(seg, "%d", &i); err != nil || i < 0 || i >= len(v) {
				return nil
			}
			cur = v[i]
		default:
			return nil
		}
	}
	return cur
}

// Str returns the string at path, "" when absent.
func (f Finding) Str(path string) string {
	s, _ := f.Get(path).(string)
	return s
}

// Num returns the number at path, 0 when absent.
func (f Finding) Num(path string) float64 {
	n, _ := f.Get(path).(float64)
	return n
}

func (f Finding) String() string {
	b, _ := json.Marshal(f)
	return string(b)
}

// ContainerID is the id of the container the finding is about.
func (f Finding) ContainerID() string { return f.Str("resource.containerDetails.id") }

type mamori struct {
	dir      string
	findings string
	cmd      *exec.Cmd
	log      *os.File

	mu   sync.Mutex
	seen []Finding
	off  int64
}

var (
	srv     *mamori
	srvErr  error
	srvOnce sync.Once
)

// bin builds the mamori binary once per test run.
func buildMamori(dir string) (string, error) {
	bin := filepath.Join(dir, "mamori")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/mamori-dev/mamori/cmd/mamori").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("build mamori: %v\n%s", err, out)
	}
	return bin, nil
}

// start runs one `mamori run` for the whole package. Intel and rules used
// by the tests are written to its data directory first.
func start(t *testing.T) *mamori {
	t.Helper()
	testenv.RequireBPF(t)
	testenv.RequirePodman(t)
	testenv.EnsureImage(t)
	srvOnce.Do(func() { srv, srvErr = launch() })
	if srvErr != nil {
		t.Fatalf("start mamori: %v", srvErr)
	}
	return srv
}

func launch() (*mamori, error) {
	dir, err := os.MkdirTemp("", "mamori-e2e-")
	if err != nil {
		return nil, err
	}
	bin, err := buildMamori(dir)
	if err != nil {
		return nil, err
	}
	// The findings file is the data dir's default, so `mamori demo` finds it.
	m := &mamori{dir: dir, findings: filepath.Join(dir, "data", "findings.jsonl")}
	if err := writeFixtures(dir); err != nil {
		return nil, err
	}
	m.log, err = os.Create(filepath.Join(dir, "mamori.log"))
	if err != nil {
		return nil, err
	}
	m.cmd = exec.Command(bin, "run", "--data-dir", filepath.Join(dir, "data"),
		"--findings-file", m.findings, "--metrics-addr", "", "--print", "", "--api-addr", "127.0.0.1:0", "--nats-port", "-1",
		"--intel", filepath.Join(dir, "intel"), "--rules", filepath.Join(dir, "rules"),
		// An engine socket of the tests' own (TestEngineSocketUnderAnotherName).
		"--engine-socket", filepath.Join(dir, "engine", "*.sock"))
	m.cmd.Stdout, m.cmd.Stderr = m.log, m.log
	if err := m.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start mamori run: %w", err)
	}
	// Ready when the agent answers on its socket.
	sock := filepath.Join(dir, "data", "events.sock")
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			time.Sleep(500 * time.Millisecond) // container table seeded, pipeline running
			return m, nil
		}
		if m.cmd.ProcessState != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	log, _ := os.ReadFile(m.log.Name())
	return nil, fmt.Errorf("mamori run not ready within 60s; log:\n%s", log)
}

// read loads new finding lines from the file.
func (m *mamori) read() []Finding {
	m.mu.Lock()
	defer m.mu.Unlock()
	f, err := os.Open(m.findings)
	if err != nil {
		return m.seen
	}
	defer f.Close()
	if _, err := f.Seek(m.off, io.SeekStart); err != nil {
		return m.seen
	}
	r := bufio.NewReader(f)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			break // a partial last line is read next time
		}
		m.off += int64(len(line))
		var fd Finding
		if json.Unmarshal(line, &fd) == nil {
			m.seen = append(m.seen, fd)
		}
	}
	return append([]Finding(nil), m.seen...)
}

// Wait returns the first finding of type typ for which match holds.
func (m *mamori) Wait(t *testing.T, typ string, match func(Finding) bool) Finding {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		for _, f := range m.read() {
			if f.Str("type") == typ && (match == nil || match(f)) {
				return f
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	var types []string
	for _, f := range m.read() {
		types = append(types, f.Str("type")+"@"+short(f.ContainerID()))
	}
	t.Fatalf("no %s finding within 15s; findings so far: %v", typ, types)
	return nil
}

// WaitStored waits until the server's copy of finding id (GET
// /api/v1/findings/{id}) satisfies match.
func (m *mamori) WaitStored(t *testing.T, id string, match func(Finding) bool) Finding {
	t.Helper()
	url, token, err := api.LocalFor(filepath.Join(m.dir, "data")).Read()
	if err != nil {
		t.Fatalf("server address: %v", err)
	}
	var last Finding
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		req, _ := http.NewRequest(http.MethodGet, url+"/api/v1/findings/"+id, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			continue
		}
		var f Finding
		err = json.NewDecoder(res.Body).Decode(&f)
		res.Body.Close()
		if err == nil && res.StatusCode == http.StatusOK {
			if last = f; match(f) {
				return f
			}
		}
	}
	t.Fatalf("the server's finding %s never matched; last: %s", id, last)
	return nil
}

func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// None fails if, after settle, a finding of type typ matches (or, with
// typ "", any finding of Medium or higher severity matches).
func (m *mamori) None(t *testing.T, typ string, settle time.Duration, match func(Finding) bool) {
	t.Helper()
	time.Sleep(settle)
	for _, f := range m.read() {
		if typ != "" && f.Str("type") != typ {
			continue
		}
		if typ == "" && f.Num("severity") < 4 {
			continue
		}
		if match == nil || match(f) {
			t.Fatalf("unexpected finding: %s", f)
		}
	}
}

// InContainer matches findings about container id.
func InContainer(id string) func(Finding) bool {
	return func(f Finding) bool { return f.ContainerID() == id }
}

// Container starts a container for an attack; see testenv.StartContainer.
func Container(t *testing.T, extra []string, cmd ...string) string {
	t.Helper()
	return testenv.StartContainer(t, extra, cmd...)
}

// Sh runs a shell script in a container, returning its output; failures
// of the script itself are the attack's business, not the test's.
func Sh(t *testing.T, id, script string) string {
	t.Helper()
	out, _ := exec.Command("podman", "--runtime", "runc", "exec", id, "sh", "-c", script).CombinedOutput()
	return string(out)
}

// HostSh runs a shell script on the host.
func HostSh(t *testing.T, script string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, "sh", "-c", script).CombinedOutput()
	return string(out)
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	if id == "" {
		return "host"
	}
	return id
}

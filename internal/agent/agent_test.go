package agent

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mamori-dev/mamori/internal/event"
	"github.com/mamori-dev/mamori/internal/sensor"
	"github.com/mamori-dev/mamori/internal/testenv"
)

// The agent is loaded once for the package: loading attaches ~100 programs.
var (
	shared     *Agent
	sharedErr  error
	sharedOnce sync.Once
	col        = &collector{}
)

type collector struct {
	mu  sync.Mutex
	evs []*event.Event
}

func (c *collector) add(ev *event.Event) {
	c.mu.Lock()
	c.evs = append(c.evs, ev)
	c.mu.Unlock()
}

func (c *collector) all() []*event.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*event.Event(nil), c.evs...)
}

func startAgent(t *testing.T) *Agent {
	t.Helper()
	testenv.RequireBPF(t)
	sharedOnce.Do(func() {
		dir, err := os.MkdirTemp("", "mamori-agent-test")
		if err != nil {
			sharedErr = err
			return
		}
		id, err := LoadNodeID(dir)
		if err != nil {
			sharedErr = err
			return
		}
		shared, sharedErr = New(Options{NodeID: id})
		if sharedErr != nil {
			return
		}
		shared.Subscribe(col.add)
		go func() {
			if err := shared.Run(context.Background()); err != nil {
				panic(err) // the shared agent dying would fail every test obscurely
			}
		}()
	})
	if sharedErr != nil {
		t.Fatalf("start agent: %v", sharedErr)
	}
	return shared
}

// waitFor polls the collected events until match holds for one.
func waitFor(t *testing.T, what string, match func(*event.Event) bool) *event.Event {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, ev := range col.all() {
			if match(ev) {
				return ev
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no %s event within 10s", what)
	return nil
}

func cgroupIDOf(t *testing.T, a *Agent, ctrID string) uint64 {
	t.Helper()
	pid := strings.TrimSpace(testenv.Podman(t, "inspect", "-f", "{{.State.Pid}}", ctrID))
	data, err := os.ReadFile("/proc/" + pid + "/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "0::"); ok {
			var st syscall.Stat_t
			if err := syscall.Stat(filepath.Join(a.ctrs.CgroupRoot(), rest), &st); err != nil {
				t.Fatal(err)
			}
			return st.Ino
		}
	}
	t.Fatalf("no cgroup v2 line for container %s", ctrID)
	return 0
}

func TestContainerIdentityFromFirstEvent(t *testing.T) {
	a := startAgent(t)
	testenv.RequirePodman(t)
	name := "mamori-agent-" + strings.ReplaceAll(t.Name(), "/", "-")
	id := testenv.StartContainer(t, []string{"--name", name}, "sh", "-c", "cat /etc/hostname; exec sleep 600")
	cg := cgroupIDOf(t, a, id)

	start := waitFor(t, "container_start", func(ev *event.Event) bool {
		return ev.Kind == event.KindContainerStart && ev.Container != nil && ev.Container.ID == id
	})
	if start.Container.Name != name || start.Container.Runtime != "podman" || start.Container.Image == "" {
		t.Errorf("start event container %+v", start.Container)
	}
	// The container's init exec and its cat: every event from the
	// container's cgroup, the first one included, carries the identity.
	waitFor(t, "cat in container", func(ev *event.Event) bool {
		return ev.Kind == event.KindExec && ev.Process.CgroupID == cg && len(ev.Exec.Args) > 0 && ev.Exec.Args[0] == "cat"
	})
	n := 0
	for _, ev := range col.all() {
		if ev.Process.CgroupID != cg {
			continue
		}
		n++
		if ev.Container == nil || ev.Container.ID != id || ev.Container.Name != name {
			t.Fatalf("event %d (%s) from the container has container %+v, want id %s", n, ev.Kind, ev.Container, id)
		}
	}
	if n < 2 {
		t.Fatalf("only %d events from the container's cgroup", n)
	}

	testenv.Podman(t, "rm", "-f", "-t", "0", id)
	waitFor(t, "container_stop", func(ev *event.Event) bool {
		return ev.Kind == event.KindContainerStop && ev.Container != nil && ev.Container.ID == id
	})
	if st := a.Stats(); st.Retry.Dropped != 0 || st.Retry.Expired != 0 {
		t.Errorf("retry cache lost or expired events: %+v", st.Retry)
	}
}

func TestExecOfDroppedBinaryIsMarked(t *testing.T) {
	a := startAgent(t)
	testenv.RequirePodman(t)
	id := testenv.StartContainer(t, nil, "sleep", "600")
	cg := cgroupIDOf(t, a, id)
	testenv.Exec(t, id, "sh", "-c", "cp /bin/busybox /tmp/echo && /tmp/echo dropped && /bin/true image; echo end")

	dropped := waitFor(t, "exec of /tmp/echo", func(ev *event.Event) bool {
		return ev.Kind == event.KindExec && ev.Process.CgroupID == cg && ev.Exec.Path == "/tmp/echo"
	})
	if !dropped.Exec.UpperLayer || !dropped.Exec.ModifiedAfterStart {
		t.Errorf("dropped binary: upperLayer=%v modifiedAfterStart=%v", dropped.Exec.UpperLayer, dropped.Exec.ModifiedAfterStart)
	}
	image := waitFor(t, "exec of /bin/true", func(ev *event.Event) bool {
		return ev.Kind == event.KindExec && ev.Process.CgroupID == cg && len(ev.Exec.Args) == 2 && ev.Exec.Args[1] == "image"
	})
	if image.Exec.UpperLayer || image.Exec.ModifiedAfterStart {
		t.Errorf("image binary %s marked as dropped: %+v", image.Exec.Path, image.Exec)
	}
	// Lineage: the shell that ran them is the parent, with its arguments.
	if len(image.Process.Lineage) == 0 || !strings.Contains(strings.Join(image.Process.Lineage[0].Args, " "), "cp /bin/busybox") {
		t.Errorf("lineage of /bin/true: %+v", image.Process.Lineage)
	}
	if image.Process.ParentUUID == "" || image.Process.ParentUUID != image.Process.Lineage[0].UUID {
		t.Errorf("parent uuid %q vs lineage %+v", image.Process.ParentUUID, image.Process.Lineage)
	}
	if image.Process.User != "root" {
		t.Errorf("user %q, want root from the container's /etc/passwd", image.Process.User)
	}
}

func TestHostExecHashedAndUnique(t *testing.T) {
	startAgent(t)
	cmd := exec.Command("sleep", "0.5")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	pid := uint32(cmd.Process.Pid)
	path, _ := exec.LookPath("sleep")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	want := hex.EncodeToString(sum[:])
	exit := waitFor(t, "exit of sleep", func(ev *event.Event) bool {
		return ev.Kind == event.KindExit && ev.Process.PID == pid
	})
	if exit.Container != nil {
		t.Errorf("host process has container %+v", exit.Container)
	}
	if exit.Process.ExeSHA256 != want {
		t.Errorf("exit of sleep carries sha256 %q, want %q", exit.Process.ExeSHA256, want)
	}
	execEv := waitFor(t, "exec of sleep", func(ev *event.Event) bool {
		return ev.Kind == event.KindExec && ev.Process.PID == pid
	})
	if execEv.Process.UUID == "" || execEv.Process.UUID != exit.Process.UUID {
		t.Errorf("uuid changed between exec (%q) and exit (%q)", execEv.Process.UUID, exit.Process.UUID)
	}
	if len(execEv.Process.Lineage) == 0 || execEv.Process.Lineage[0].PID != uint32(os.Getpid()) {
		t.Errorf("lineage of sleep does not start with the test process: %+v", execEv.Process.Lineage)
	}
}

func TestMetricsExposeLossCounters(t *testing.T) {
	a := startAgent(t)
	srv := httptest.NewServer(a.MetricsHandler())
	defer srv.Close()
	waitFor(t, "any", func(*event.Event) bool { return true })
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{"mamori_sensor_records_read_total", "mamori_sensor_decode_errors_total",
		"mamori_sensor_program_misses_total", `mamori_retry_cache_events_total{outcome="dropped"}`,
		`mamori_sensor_hooks{state="attached"}`, "mamori_process_table_entries", "mamori_sensor_events_emitted_total{kind=\"exec\"}",
		`mamori_sensor_secret_inodes{state="not_watched"} 0`, "mamori_sensor_watched_roots", "mamori_sensor_root_scans_lost_total"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	// This host's /etc/shadow at least is known by inode.
	if strings.Contains(string(body), `mamori_sensor_secret_inodes{state="watched"} 0`) {
		t.Error("no secret file known by inode")
	}
}

// TestEventsCommandStreamsFromAgent runs the real `mamori events` binary
// against the agent's socket and checks its filters.
func TestEventsCommandStreamsFromAgent(t *testing.T) {
	a := startAgent(t)
	testenv.RequirePodman(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "mamori")
	build := exec.Command("go", "build", "-o", bin, "github.com/mamori-dev/mamori/cmd/mamori")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build mamori: %v\n%s", err, out)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := a.ServeStream(ctx, filepath.Join(dir, "events.sock")); err != nil {
		t.Fatal(err)
	}
	id := testenv.StartContainer(t, nil, "sleep", "600")

	cmd := exec.Command(bin, "events", "--data-dir", dir, "--json", "--kind", "exec", "--container", id[:12], "--duration", "8s")
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	time.Sleep(500 * time.Millisecond) // let it subscribe
	testenv.Exec(t, id, "/bin/echo", "from-container")
	if out, err := exec.Command("/bin/echo", "from-host").CombinedOutput(); err != nil {
		t.Fatal(err, string(out))
	}
	found := false
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var ev event.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("bad JSON line %q: %v", sc.Text(), err)
		}
		if ev.Kind != event.KindExec || ev.Container == nil || ev.Container.ID != id {
			t.Fatalf("filter let through %s from %+v", ev.Kind, ev.Container)
		}
		if strings.Join(ev.Exec.Args, " ") == "/bin/echo from-container" {
			found = true
			break
		}
	}
	if !found {
		t.Fatal("the container's echo never reached `mamori events`")
	}

	// A data directory where no agent runs (a typo): it says so, streams
	// from a sensor of its own, and does not create the directory.
	typo := filepath.Join(dir, "no-such-dir")
	out, err := exec.Command(bin, "events", "--data-dir", typo, "--kind", "exec", "--duration", "1s").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "no agent answers at "+typo+"/events.sock") ||
		!strings.Contains(string(out), "sensor loaded") {
		t.Fatalf("events with a wrong --data-dir: %v\n%s", err, out)
	}
	if _, err := os.Stat(typo); !os.IsNotExist(err) {
		t.Fatalf("the mistyped data dir was created (%v)", err)
	}
}

func TestHeartbeatForCoverage(t *testing.T) {
	a := startAgent(t)
	_ = exec.Command("/bin/true").Run() // an event, also when run alone
	waitFor(t, "any", func(*event.Event) bool { return true })
	hb := a.Heartbeat(HeartbeatInfo{Version: "test", Interval: 10 * time.Second})
	if err := hb.Validate(); err != nil {
		t.Fatalf("heartbeat invalid: %v", err)
	}
	attached, unavailable := 0, 0
	for _, h := range hb.Hooks {
		if h.Attached {
			attached++
		} else if h.Optional && h.Error != "" {
			unavailable++
		}
	}
	if attached < 50 || hb.LastEvent.IsZero() || hb.Kernel == "" || !hb.BTF {
		t.Fatalf("heartbeat %d hooks attached, last event %v, kernel %q, btf %v", attached, hb.LastEvent, hb.Kernel, hb.BTF)
	}
	// The build loaded is the one the probe picks here, said with its reason.
	want := "default"
	if v := sensor.ChooseVariant(false); v.Compat {
		want = "compat: " + v.Why
	} else if v.Why != "" {
		want = "default: " + v.Why
	}
	if hb.BPFObjects != want {
		t.Errorf("heartbeat bpfObjects %q, want %q", hb.BPFObjects, want)
	}
	for _, k := range []string{"kernel", "decode", "retry", "bpf_recursion"} {
		if _, ok := hb.Drops[k]; !ok {
			t.Errorf("heartbeat lacks the %s drop counter", k)
		}
	}
	// podman (installed on every machine these tests run on) is reported
	// with the storage it is read from.
	podman := false
	for _, r := range hb.Runtimes {
		podman = podman || (r.Name == "podman" && r.Reachable && r.Socket == "/var/lib/containers/storage")
	}
	if !podman {
		t.Errorf("heartbeat runtimes %+v lack a reachable podman", hb.Runtimes)
	}
}

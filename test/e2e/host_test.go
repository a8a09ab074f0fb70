package e2e

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mamori-dev/mamori/internal/agent"
)

func onHost(f Finding) bool {
	return f.Str("resource.resourceType") == "Instance" && f.ContainerID() == ""
}

func actor(t *testing.T, args ...string) string {
	t.Helper()
	out, _ := exec.Command(actorPath, args...).CombinedOutput()
	return string(out)
}

// TestHostFindings: host-scope findings carry the node, not a container.
func TestHostFindings(t *testing.T) {
	m := start(t)
	actor(t, "dns", "c2.guarddutyc2activityb.com", dnsServer+":53")
	f := m.Wait(t, "Backdoor:Runtime/C&CActivity.B!DNS", and(onHost, ctxIs("domain", "c2.guarddutyc2activityb.com")))
	expect(t, f, "High", "")
	if f.Str("resource.instanceDetails.nodeId") == "" {
		t.Error("host finding without the node id")
	}

	l := listen(t)
	// An interactive shell on the connection (the listener sends "exit").
	actor(t, "dup-socket", l.Addr().String(), "/bin/sh", "-i")
	f = m.Wait(t, "Execution:Runtime/ReverseShell", onHost)
	expect(t, f, "High", "")
	if !strings.HasSuffix(f.Str("service.runtimeDetails.process.executablePath"), "sh") {
		t.Errorf("reverse shell process %s", f.Str("service.runtimeDetails.process.executablePath"))
	}

	if _, err := os.Stat("/etc/sudoers.d"); err != nil {
		if err := os.Mkdir("/etc/sudoers.d", 0o750); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Remove("/etc/sudoers.d") })
	}
	drop := "/etc/sudoers.d/mamori-e2e-" + randHex(t)
	if err := os.WriteFile(drop, []byte("# test\n"), 0o440); err != nil {
		t.Fatal(err)
	}
	os.Remove(drop)
	f = m.Wait(t, "PrivilegeEscalation:Runtime/SensitiveFileModified", and(onHost, ctxIs("filePath", drop)))
	expect(t, f, "Medium", "")
	// Lineage reaches the test binary that wrote the file.
	if f.Get("service.runtimeDetails.process.lineage.0.uuid") == nil {
		t.Errorf("no lineage: %s", f)
	}
}

// TestKernelModuleLoaded performs a module load for real. This kernel is
// built without module support (no init_module/finit_module tracepoints),
// so no finding can come: the test asserts that mamori says so — the hook
// is listed unavailable with the reason — instead of staying silent.
func TestKernelModuleLoaded(t *testing.T) {
	m := start(t)
	actor(t, "finit-module", "/bin/true")
	c, err := net.Dial("unix", filepath.Join(m.dir, "data", "events.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = json.NewEncoder(c).Encode(agent.StreamRequest{Status: true})
	var st agent.Status
	if err := json.NewDecoder(c).Decode(&st); err != nil {
		t.Fatal(err)
	}
	if st.BPFObjects != "default" && !strings.HasPrefix(st.BPFObjects, "compat: ") && !strings.HasPrefix(st.BPFObjects, "default: ") {
		t.Errorf("status names the BPF objects %q, want default or compat with a reason", st.BPFObjects)
	}
	sawHook := false
	for _, h := range st.Hooks {
		if strings.Contains(h.Hook, "finit_module") {
			sawHook = true
			if !h.Attached && (!h.Optional || !strings.Contains(h.Error, "not available on this kernel")) {
				t.Errorf("finit_module hook down without a reason: %+v", h)
			}
			if h.Attached {
				f := m.Wait(t, "DefenseEvasion:Runtime/KernelModuleLoaded", onHost)
				expect(t, f, "High", "")
			}
		}
	}
	if !sawHook {
		t.Fatal("the finit_module hook is not reported at all")
	}
}

// TestBenignWorkloads runs ordinary work in a container and on the host:
// none of it may raise a Medium or High finding.
func TestBenignWorkloads(t *testing.T) {
	m := start(t)
	began := time.Now().UTC()
	id := Container(t, []string{"--network", "host"}, "sleep", "600")
	// Serve HTTP from the container and fetch it; archive and compress;
	// everyday admin commands.
	Sh(t, id, `mkdir -p /srv/www && echo hello > /srv/www/index.html &&
(httpd -f -p 127.0.0.1:18080 -h /srv/www & echo $! > /tmp/httpd.pid) && sleep 0.3 &&
wget -q -O /tmp/got http://127.0.0.1:18080/index.html && cat /tmp/got &&
tar czf /tmp/www.tgz -C /srv www && gzip -dc /tmp/www.tgz | tar tf - && bzip2 -k /tmp/got &&
ps; df; uname -a; id; whoami; ls -la /etc; cat /etc/os-release 2>/dev/null; env | sort | head -3;
echo "line" >> /var/log/app.log; date; find /etc -name '*.conf' | head; kill $(cat /tmp/httpd.pid)`)

	// On the host: build a Go program, serve HTTP and curl it, archive it.
	dir := t.TempDir()
	src := "package main\nimport (\"fmt\";\"net/http\")\nfunc main(){http.HandleFunc(\"/\",func(w http.ResponseWriter,r *http.Request){fmt.Fprint(w,\"ok\")});http.ListenAndServe(\"127.0.0.1:18081\",nil)}\n"
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	script := `set -e; cd ` + dir + ` && go mod init example.com/web >/dev/null 2>&1 && go build -o web . &&
(./web & echo $! > web.pid) && sleep 0.5 && curl -s http://127.0.0.1:18081/ && kill $(cat web.pid) &&
tar czf web.tgz web main.go && gzip -t web.tgz && ls -la && ps aux | head -3 && df -h >/dev/null && uname -a && id`
	if out, err := exec.Command("sh", "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("benign host workload failed: %v\n%s", err, out)
	}
	m.None(t, "", 3*time.Second, func(f Finding) bool {
		created, _ := time.Parse(time.RFC3339Nano, f.Str("createdAt"))
		if created.Before(began) {
			return false
		}
		if f.ContainerID() == id {
			return true
		}
		// Host findings from this workload: processes under the temp dir
		// or the shell running the script.
		return onHost(f) && (strings.Contains(f.String(), dir))
	})
}

// TestDemo runs `mamori demo` against the running mamori: every behaviour
// it performs must come back as its finding.
func TestDemo(t *testing.T) {
	m := start(t)
	bin := filepath.Join(m.dir, "mamori")
	out, err := exec.Command(bin, "demo", "--data-dir", filepath.Join(m.dir, "data"), "--wait", "30s").CombinedOutput()
	if err != nil && strings.Contains(string(out), "no local mamori run") {
		t.Fatalf("demo did not find the run: %s", out)
	}
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "missing") {
		t.Fatalf("demo findings missing:\n%s", out)
	}
}

// TestRuleReloadWithoutRestart adds a rule file to the running mamori's
// rules directory; the rule fires without a restart.
func TestRuleReloadWithoutRestart(t *testing.T) {
	m := start(t)
	rule := `rules:
  - id: e2e-reloaded
    type: Custom:Runtime/ReloadedRule
    severity: Low
    kinds: [open]
    condition: event.file.path == "/etc/mamori-e2e-reloaded" && event.file.write
`
	path := filepath.Join(m.dir, "rules", "reloaded.yaml")
	if err := os.WriteFile(path, []byte(rule), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(path) })
	time.Sleep(3 * time.Second) // the rules directory is polled every 2s
	id := attackContainer(t)
	Sh(t, id, "echo x > /etc/mamori-e2e-reloaded")
	f := m.Wait(t, "Custom:Runtime/ReloadedRule", InContainer(id))
	expect(t, f, "Low", id)
}

package e2e

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// Addresses the tests list as threat intel. All are loopback: no traffic
// leaves the machine.
const (
	ipCC        = "127.10.0.1"
	ipCrypto    = "127.10.0.2"
	ipTor       = "127.10.0.3"
	ipBlackhole = "127.10.0.4"
	ipDropPoint = "127.10.0.5"
	ipUnlisted  = "127.10.0.99"
	// dnsServer answers the tests' DNS queries (see serveDNS).
	dnsServer = "127.10.0.53"
)

var actorPath string

func TestMain(m *testing.M) {
	code := m.Run()
	if srv != nil && srv.cmd.Process != nil {
		_ = srv.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = srv.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = srv.cmd.Process.Kill()
		}
		if code != 0 {
			if log, err := os.ReadFile(srv.log.Name()); err == nil {
				os.Stderr.Write(log[max(0, len(log)-4000):])
			}
		}
		os.RemoveAll(srv.dir)
	}
	os.Exit(code)
}

// writeFixtures writes the tests' intel lists and a custom rule, builds
// the actor binary, and starts the DNS server.
func writeFixtures(dir string) error {
	intelDir := filepath.Join(dir, "intel")
	rulesDir := filepath.Join(dir, "rules")
	for _, d := range []string{intelDir, rulesDir, filepath.Join(dir, "actor")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	lists := map[string]string{
		"cc.txt":        ipCC + "\n",
		"crypto.txt":    ipCrypto + "\n",
		"tor.txt":       ipTor + "\n",
		"blackhole.txt": ipBlackhole + "\n",
		"droppoint.txt": ipDropPoint + "\n",
	}
	for name, content := range lists {
		if err := os.WriteFile(filepath.Join(intelDir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	rule := `rules:
  - id: e2e-marker-file
    type: Custom:Runtime/MarkerFileTouched
    severity: Medium
    title: "marker touched by {{.process.name}}"
    kinds: [open]
    condition: event.file.path == "/etc/mamori-e2e-marker" && event.file.write
`
	if err := os.WriteFile(filepath.Join(rulesDir, "e2e.yaml"), []byte(rule), 0o644); err != nil {
		return err
	}
	actorPath = filepath.Join(dir, "actor", "actor")
	cmd := exec.Command("go", "build", "-o", actorPath, "github.com/mamori-dev/mamori/test/actor")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return &buildError{string(out), err}
	}
	return serveDNS()
}

type buildError struct {
	out string
	err error
}

func (e *buildError) Error() string { return "build actor: " + e.err.Error() + "\n" + e.out }

// serveDNS answers A queries on dnsServer:53: rebind.mamori.test gets the
// instance metadata address, NXDOMAIN for nx.mamori.test, 10.0.0.1 for
// everything else.
func serveDNS() error {
	pc, err := net.ListenPacket("udp", dnsServer+":53")
	if err != nil {
		return err
	}
	go func() {
		buf := make([]byte, 1500)
		for {
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			var p dnsmessage.Parser
			h, err := p.Start(buf[:n])
			if err != nil {
				continue
			}
			q, err := p.Question()
			if err != nil {
				continue
			}
			name := strings.ToLower(strings.TrimSuffix(q.Name.String(), "."))
			resp := dnsmessage.Message{Header: dnsmessage.Header{ID: h.ID, Response: true, RecursionAvailable: true},
				Questions: []dnsmessage.Question{q}}
			switch {
			case name == "nx.mamori.test":
				resp.Header.RCode = dnsmessage.RCodeNameError
			case q.Type == dnsmessage.TypeA:
				ip := [4]byte{10, 0, 0, 1}
				if name == "rebind.mamori.test" {
					ip = [4]byte{169, 254, 169, 254}
				}
				resp.Answers = []dnsmessage.Resource{{
					Header: dnsmessage.ResourceHeader{Name: q.Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 5},
					Body:   &dnsmessage.AResource{A: ip}}}
			}
			out, err := resp.Pack()
			if err == nil {
				_, _ = pc.WriteTo(out, addr)
			}
		}
	}()
	return nil
}

// attackContainer starts a busybox container with what the attacks need:
// the host network (to reach the loopback DNS server and intel addresses),
// the actor binary, ptrace capability and no seccomp filter (podman's
// default one denies userfaultfd before any tracepoint sees it).
func attackContainer(t *testing.T) string {
	t.Helper()
	return Container(t, []string{"--network", "host", "--cap-add", "SYS_PTRACE", "--security-opt", "seccomp=unconfined",
		"-v", filepath.Dir(actorPath) + ":/t:ro"}, "sleep", "600")
}

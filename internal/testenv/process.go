package testenv

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// FreePort returns a loopback TCP port nobody listens on (at the moment).
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Process is a child process of a test whose output goes to a log file,
// shown (its tail) when the test fails.
type Process struct {
	Name string
	Cmd  *exec.Cmd
	Log  string
}

// StartProcess runs args[0] with args[1:] in dir ("" for the current one)
// and stops it at cleanup.
func StartProcess(t testing.TB, dir, name string, args ...string) *Process {
	t.Helper()
	log := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(log)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, f, f
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &Process{Name: name, Cmd: cmd, Log: log}
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("%s log (tail):\n%s", name, p.LogTail(4000))
		}
	})
	return p
}

// Exited reports whether the process has been waited for.
func (p *Process) Exited() bool { return p.Cmd.ProcessState != nil }

// Stop sends SIGTERM and waits up to 15s before SIGKILL.
func (p *Process) Stop() {
	if p.Exited() {
		return
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = p.Cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = p.Cmd.Process.Kill()
		<-done
	}
}

// Kill sends SIGKILL and waits: a crash, not a shutdown.
func (p *Process) Kill() {
	if p.Exited() {
		return
	}
	_ = p.Cmd.Process.Kill()
	_ = p.Cmd.Wait()
}

// LogTail returns the last n bytes of the process's output.
func (p *Process) LogTail(n int) string {
	b, _ := os.ReadFile(p.Log)
	return string(b[max(0, len(b)-n):])
}

// WaitFile waits up to a minute for the file at path to hold something
// (a process writes it once it is up) and returns its content, trimmed.
func WaitFile(t testing.TB, path string) string {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) > 0 {
			return strings.TrimSpace(string(b))
		}
	}
	t.Fatalf("%s never appeared", path)
	return ""
}

// HangUp listens on network/addr and closes every connection it accepts
// (a peer that answers, then hangs up), until the test ends.
func HangUp(t testing.TB, network, addr string) net.Listener {
	t.Helper()
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Fatalf("listen %s %s: %v", network, addr, err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return l
}

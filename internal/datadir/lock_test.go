package datadir

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestAcquireRefusesASecondHolder(t *testing.T) {
	dir := t.TempDir()
	l, err := Acquire(dir, "server")
	if err != nil {
		t.Fatal(err)
	}
	// Another role of the same directory is fine.
	a, err := Acquire(dir, "agent")
	if err != nil {
		t.Fatalf("agent lock beside a server lock: %v", err)
	}
	defer a.Release()
	// A second server — in another process, as in real life (flock is per
	// open file, so a second open in this process conflicts too).
	_, err = Acquire(dir, "server")
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second server lock: %v, want ErrLocked", err)
	}
	if want := fmt.Sprintf("(pid %d)", os.Getpid()); !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("error %q does not name the holder %s and the directory", err, want)
	}
	// flock(1), another process, finds it held too (exit status 1).
	if _, lerr := exec.LookPath("flock"); lerr == nil {
		out, err := exec.Command("flock", "-n", dir+"/server.lock", "true").CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Fatalf("flock(1) on the held lock: %v %s", err, out)
		}
	}
	l.Release()
	l2, err := Acquire(dir, "server")
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	l2.Release()
}

func TestAcquireRefusesASymlink(t *testing.T) {
	dir := t.TempDir()
	target := dir + "/elsewhere"
	if err := os.WriteFile(target, []byte("keep\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, dir+"/agent.lock"); err != nil {
		t.Fatal(err)
	}
	if _, err := Acquire(dir, "agent"); err == nil {
		t.Fatal("a symlinked lock file was followed")
	}
	if b, _ := os.ReadFile(target); string(b) != "keep\n" {
		t.Fatalf("the symlink's target was written: %q", b)
	}
}

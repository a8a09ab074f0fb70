package sensor

import (
	"bufio"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mamori-dev/mamori/internal/event"
	"github.com/mamori-dev/mamori/internal/testenv"
)

// where runs actor actions either on the host or inside one container.
type where struct {
	name     string
	cgroupID uint64 // 0 on the host
	ctrID    string
	actor    string // actor path as seen by the process
	tmp      string // a writable directory as seen by the process
}

// run performs one action and returns the mark (collector index) before it.
func (w *where) run(t *testing.T, args ...string) (mark int, pid int, out string, err error) {
	t.Helper()
	return w.runAt(t, "", args...)
}

// runAt is run with the working directory dir ("" leaves it as it is).
func (w *where) runAt(t *testing.T, dir string, args ...string) (mark int, pid int, out string, err error) {
	t.Helper()
	_, mark = collected.since(1 << 62)
	var cmd *exec.Cmd
	if w.ctrID == "" {
		cmd = exec.Command(w.actor, args...)
		cmd.Dir = dir
	} else {
		podman := []string{"exec", w.ctrID, w.actor}
		if dir != "" {
			podman = []string{"exec", "-w", dir, w.ctrID, w.actor}
		}
		cmd = exec.Command("podman", append(podman, args...)...)
	}
	b, err := cmd.CombinedOutput()
	return mark, cmd.Process.Pid, strings.TrimSpace(string(b)), err
}

// start runs an action in the background; it returns the command, its
// stdout and a stop function.
func (w *where) start(t *testing.T, args ...string) (*exec.Cmd, *bufio.Reader, func()) {
	t.Helper()
	var cmd *exec.Cmd
	if w.ctrID == "" {
		cmd = exec.Command(w.actor, args...)
	} else {
		cmd = exec.Command("podman", append([]string{"exec", w.ctrID, w.actor}, args...)...)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", args, err)
	}
	return cmd, bufio.NewReader(out), func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
}

// from reports whether ev came from the actor in this place.
func (w *where) from(ev *event.Event) bool {
	if ev.Process.Comm != "actor" && ev.Process.Comm != "payload" {
		return false
	}
	if w.cgroupID == 0 {
		return ev.Process.CgroupID != 0
	}
	return ev.Process.CgroupID == w.cgroupID
}

// waitFrom waits for a matching event collected after mark.
func waitFrom(t *testing.T, mark int, what string, match func(*event.Event) bool) *event.Event {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	next := mark
	for time.Now().Before(deadline) {
		var evs []*event.Event
		evs, next = collected.since(next)
		for _, ev := range evs {
			if match(ev) {
				return ev
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no %s event within 5s", what)
	return nil
}

// seenWithin reports whether a matching event is collected after mark
// within d.
func seenWithin(mark int, d time.Duration, match func(*event.Event) bool) bool {
	deadline := time.Now().Add(d)
	next := mark
	for {
		var evs []*event.Event
		evs, next = collected.since(next)
		for _, ev := range evs {
			if match(ev) {
				return true
			}
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// places returns the host and a running podman container with the actor
// mounted at /t/actor and host networking (for loopback peers).
func places(t *testing.T) []*where {
	startSensor(t)
	host := &where{name: "host", actor: actorPath, tmp: t.TempDir()}
	testenv.RequirePodman(t)
	// seccomp=unconfined: podman's default profile denies userfaultfd, and
	// these tests check what a call that runs reports (a denied attempt is
	// TestSeccompDeniedAttemptIsSeen); capabilities stay default.
	id := testenv.StartContainer(t, []string{"--network", "host", "--cap-add", "SYS_PTRACE",
		"--security-opt", "seccomp=unconfined",
		"-v", filepath.Dir(actorPath) + ":/t:ro"}, "sleep", "600")
	cg, err := containerCgroupID(id)
	if err != nil {
		t.Fatalf("container cgroup: %v", err)
	}
	ctr := &where{name: "container", cgroupID: cg, ctrID: id, actor: "/t/actor", tmp: "/tmp"}
	return []*where{host, ctr}
}

// containerCgroupID finds the cgroup v2 id (directory inode) of a container.
func containerCgroupID(id string) (uint64, error) {
	out, err := exec.Command("podman", "inspect", "-f", "{{.State.Pid}}", id).Output()
	if err != nil {
		return 0, fmt.Errorf("podman inspect: %w", err)
	}
	pid := strings.TrimSpace(string(out))
	data, err := os.ReadFile("/proc/" + pid + "/cgroup")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "0::"); ok {
			var st syscall.Stat_t
			if err := syscall.Stat(filepath.Join(CgroupV2Root(), rest), &st); err != nil {
				return 0, err
			}
			return st.Ino, nil
		}
	}
	return 0, fmt.Errorf("no cgroup v2 line for pid %s", pid)
}

func mustOK(t *testing.T, err error, out string) {
	t.Helper()
	if err != nil {
		t.Fatalf("action failed: %v: %s", err, out)
	}
}

func TestProcessEvents(t *testing.T) {
	for _, w := range places(t) {
		t.Run(w.name, func(t *testing.T) {
			mark, _, out, err := w.run(t, "exit", "3")
			if err == nil {
				t.Fatalf("want exit status 3, got success: %s", out)
			}
			ex := waitFrom(t, mark, "exec", func(ev *event.Event) bool {
				return ev.Kind == event.KindExec && w.from(ev) && len(ev.Exec.Args) == 3 && ev.Exec.Args[1] == "exit"
			})
			if !strings.HasSuffix(ex.Exec.Path, "/actor") || ex.Exec.Args[2] != "3" || ex.Exec.Cwd == "" {
				t.Errorf("exec fields: %+v", ex.Exec)
			}
			if w.cgroupID != 0 && ex.Process.NSPID == ex.Process.PID {
				t.Errorf("container process has namespace pid %d equal to host pid", ex.Process.NSPID)
			}
			exit := waitFrom(t, mark, "exit", func(ev *event.Event) bool {
				return ev.Kind == event.KindExit && ev.Process.PID == ex.Process.PID
			})
			if exit.Exit.Code != 3 {
				t.Errorf("exit code %d, want 3", exit.Exit.Code)
			}
			// A shell forking the actor: fork names the child.
			mark = forkViaShell(t, w)
			fork := waitFrom(t, mark, "fork", func(ev *event.Event) bool {
				return ev.Kind == event.KindFork && (w.cgroupID == 0 || ev.Process.CgroupID == w.cgroupID) && ev.Process.Comm == "sh"
			})
			waitFrom(t, mark, "exec of forked child", func(ev *event.Event) bool {
				return ev.Kind == event.KindExec && ev.Process.PID == fork.Fork.ChildPID
			})
		})
	}
}

func forkViaShell(t *testing.T, w *where) int {
	t.Helper()
	_, mark := collected.since(1 << 62)
	script := w.actor + " exit 0 & wait"
	var cmd *exec.Cmd
	if w.ctrID == "" {
		cmd = exec.Command("sh", "-c", script)
	} else {
		cmd = exec.Command("podman", "exec", w.ctrID, "sh", "-c", script)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sh: %v: %s", err, out)
	}
	return mark
}

func TestExecDetails(t *testing.T) {
	for _, w := range places(t) {
		t.Run(w.name, func(t *testing.T) {
			// Script: interpreter and script path both reported.
			script := filepath.Join(w.tmp, fmt.Sprintf("mamori-script-%d.sh", rand.Int()))
			writeIn(t, w, script, "#!/bin/sh\nexit 0\n", 0o755)
			mark := runShell(t, w, script)
			ev := waitFrom(t, mark, "script exec", func(ev *event.Event) bool {
				return ev.Kind == event.KindExec && ev.Exec.ScriptPath == script
			})
			if !strings.Contains(ev.Exec.Path, "sh") && !strings.Contains(ev.Exec.Path, "busybox") && !strings.Contains(ev.Exec.Path, "dash") {
				t.Errorf("interpreter path %q", ev.Exec.Path)
			}
			// LD_PRELOAD and LD_LIBRARY_PATH come from the environment.
			mark = runShell(t, w, "LD_PRELOAD=/tmp/evil.so LD_LIBRARY_PATH=/opt/lib PYTHONPATH=/tmp/py "+w.actor+" exit 0")
			ev = waitFrom(t, mark, "exec with LD_PRELOAD", func(ev *event.Event) bool {
				return ev.Kind == event.KindExec && w.from(ev) && ev.Exec.LDPreload != ""
			})
			if ev.Exec.LDPreload != "/tmp/evil.so" || ev.Exec.LDLibPath != "/opt/lib" || !slices.Contains(ev.Exec.CodeEnv, "PYTHONPATH=/tmp/py") {
				t.Errorf("ld env: %q %q %q", ev.Exec.LDPreload, ev.Exec.LDLibPath, ev.Exec.CodeEnv)
			}
			// Fileless: a memfd executed.
			mark, _, out, err := w.run(t, "memfd-exec", w.actor, "exit", "0")
			mustOK(t, err, out)
			ev = waitFrom(t, mark, "memfd exec", func(ev *event.Event) bool {
				return ev.Kind == event.KindExec && ev.Exec.Memfd
			})
			if !strings.Contains(ev.Exec.Path, "memfd:payload") {
				t.Errorf("memfd exec path %q", ev.Exec.Path)
			}
			// A program started with a TCP connection for its standard
			// input and output, put there without dup2; its twin, a unix
			// socket pair (a service's), is not on the network.
			ln := testenv.HangUp(t, "tcp4", "127.0.0.1:0")
			for where, want := range map[string]bool{"inet:" + ln.Addr().String(): true, "unix": false} {
				mark, _, out, err := w.run(t, "stdio-socket-exec", where, w.actor, "exit", "0")
				mustOK(t, err, out)
				ev = waitFrom(t, mark, "exec with socket stdio", func(ev *event.Event) bool {
					return ev.Kind == event.KindExec && w.from(ev) && len(ev.Exec.Args) > 1 && ev.Exec.Args[1] == "exit"
				})
				if ev.Exec.StdioOnNetwork != want {
					t.Errorf("%s: stdioOnNetwork %v, want %v", where, ev.Exec.StdioOnNetwork, want)
				}
			}
		})
	}
}

func runShell(t *testing.T, w *where, script string) int {
	t.Helper()
	_, mark := collected.since(1 << 62)
	var cmd *exec.Cmd
	if w.ctrID == "" {
		cmd = exec.Command("sh", "-c", script)
	} else {
		cmd = exec.Command("podman", "exec", w.ctrID, "sh", "-c", script)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sh -c %q: %v: %s", script, err, out)
	}
	return mark
}

func writeIn(t *testing.T, w *where, path, content string, mode os.FileMode) {
	t.Helper()
	if w.ctrID == "" {
		if err := os.WriteFile(path, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		return
	}
	cmd := exec.Command("podman", "exec", "-i", w.ctrID, "sh", "-c", fmt.Sprintf("cat > %s && chmod %o %s", path, mode, path))
	cmd.Stdin = strings.NewReader(content)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("write %s in container: %v: %s", path, err, out)
	}
}

func TestFileEvents(t *testing.T) {
	for _, w := range places(t) {
		t.Run(w.name, func(t *testing.T) {
			name := "/etc/mamori-test-" + strconv.Itoa(rand.Int())
			t.Cleanup(func() { cleanupIn(w, name, name+".new", name+".link", name+".sym") })
			mark, _, out, err := w.run(t, "open-write", name)
			mustOK(t, err, out)
			ev := waitFrom(t, mark, "open for write", func(ev *event.Event) bool {
				return ev.Kind == event.KindOpen && w.from(ev) && ev.File.Path == name
			})
			if !ev.File.Write || ev.Result < 0 || !ev.File.Created {
				t.Errorf("open that made the file: %+v result %d", ev.File, ev.Result)
			}
			// The same open again finds the file there: nothing made.
			mark, _, out, err = w.run(t, "open-write", name)
			mustOK(t, err, out)
			ev = waitFrom(t, mark, "open for write of an existing file", func(ev *event.Event) bool {
				return ev.Kind == event.KindOpen && w.from(ev) && ev.File.Path == name
			})
			if !ev.File.Write || ev.File.Created {
				t.Errorf("open of an existing file: %+v", ev.File)
			}
			// Reads of a sensitive file are reported; reads elsewhere are not.
			mark, _, out, err = w.run(t, "open-read", "/etc/shadow")
			mustOK(t, err, out)
			ev = waitFrom(t, mark, "sensitive read", func(ev *event.Event) bool {
				return ev.Kind == event.KindOpen && w.from(ev) && ev.File.Path == "/etc/shadow"
			})
			if ev.File.Write {
				t.Errorf("read reported as write")
			}
			unwatched := filepath.Join(w.tmp, "mamori-unwatched")
			mark, pid, out, err := w.run(t, "open-write", unwatched)
			mustOK(t, err, out)
			assertNone(t, mark, pid, w, func(ev *event.Event) bool {
				return ev.Kind == event.KindOpen && strings.HasSuffix(ev.File.Path, "mamori-unwatched")
			})
			mark, _, out, err = w.run(t, "rename", name, name+".new")
			mustOK(t, err, out)
			ev = waitFrom(t, mark, "rename", func(ev *event.Event) bool {
				return ev.Kind == event.KindRename && w.from(ev)
			})
			if ev.File.Path != name || ev.File.NewPath != name+".new" {
				t.Errorf("rename: %+v", ev.File)
			}
			// rm -r and mv work relative to directory fds: each path is
			// resolved against its own directory, not the cwd.
			moved := filepath.Join(w.tmp, "mamori-moved")
			mark, _, out, err = w.run(t, "renameat-dirs", "/etc", filepath.Base(name)+".new", w.tmp, "mamori-moved")
			mustOK(t, err, out)
			ev = waitFrom(t, mark, "renameat with directory fds", func(ev *event.Event) bool {
				return ev.Kind == event.KindRename && w.from(ev)
			})
			if ev.File.Path != name+".new" || ev.File.NewPath != moved {
				t.Errorf("renameat(/etc fd, %s, %s fd, mamori-moved): %+v", filepath.Base(name)+".new", w.tmp, ev.File)
			}
			_, _, out, err = w.run(t, "rename", moved, name+".new")
			mustOK(t, err, out)
			// "//etc/shadow" is not the string the kernel filter watches,
			// but is the file: it is reported by what it names.
			mark, _, out, err = w.run(t, "open-read", "//etc/./shadow")
			mustOK(t, err, out)
			ev = waitFrom(t, mark, "sensitive read through //", func(ev *event.Event) bool {
				return ev.Kind == event.KindOpen && w.from(ev) && ev.File.Path == "/etc/shadow"
			})
			if ev.File.RawPath != "//etc/./shadow" || ev.File.Write {
				t.Errorf("read through //: %+v", ev.File)
			}
			mark, _, out, err = w.run(t, "open-read", "/etc/../etc/shadow")
			mustOK(t, err, out)
			ev = waitFrom(t, mark, "sensitive read through ..", func(ev *event.Event) bool {
				return ev.Kind == event.KindOpen && w.from(ev) && ev.File.Path == "/etc/shadow"
			})
			if ev.File.RawPath != "/etc/../etc/shadow" {
				t.Errorf("read through ..: %+v", ev.File)
			}
			// The ".." just past the kernel scan's first eight bytes; the
			// attempt fails (no /etc/ab) and is reported all the same.
			mark, _, _, err = w.run(t, "open-read", "/etc/ab/../shadow")
			if err == nil {
				t.Fatal("open of /etc/ab/../shadow succeeded")
			}
			ev = waitFrom(t, mark, "read through .. across a word", func(ev *event.Event) bool {
				return ev.Kind == event.KindOpen && w.from(ev) && ev.File.RawPath == "/etc/ab/../shadow"
			})
			if ev.File.Path != "/etc/shadow" || ev.Error != "ENOENT" {
				t.Errorf("read through .. across a word: %+v %s", ev.File, ev.Error)
			}
			// Through a process's root directory: the kernel filter cannot
			// hold the pid, so such paths go to user space, which names the
			// file reached — and, for a failed attempt, the file aimed at.
			mark, _, out, err = w.run(t, "open-read", "/proc/self/root/etc/shadow")
			mustOK(t, err, out)
			ev = waitFrom(t, mark, "sensitive read through /proc/self/root", func(ev *event.Event) bool {
				return ev.Kind == event.KindOpen && w.from(ev) && ev.File.RawPath == "/proc/self/root/etc/shadow"
			})
			if ev.File.Path != "/etc/shadow" || ev.File.Write {
				t.Errorf("read through /proc/self/root: %+v", ev.File)
			}
			mark, _, _, err = w.run(t, "open-read", "/proc/self/task/1/root/root/.ssh/mamori-missing")
			if err == nil {
				t.Fatal("open of a missing file through /proc/self/task/1/root succeeded")
			}
			ev = waitFrom(t, mark, "failed read through /proc/self/task/1/root", func(ev *event.Event) bool {
				return ev.Kind == event.KindOpen && w.from(ev) && ev.File.RawPath == "/proc/self/task/1/root/root/.ssh/mamori-missing"
			})
			if ev.File.Path != "/root/.ssh/mamori-missing" || ev.Error != "ENOENT" {
				t.Errorf("failed read through /proc/self/task/1/root: %+v %s", ev.File, ev.Error)
			}
			// Reads of /proc itself stay in the kernel.
			mark, pid, out, err = w.run(t, "open-read", "/proc/self/status")
			mustOK(t, err, out)
			assertNone(t, mark, pid, w, func(ev *event.Event) bool {
				return ev.Kind == event.KindOpen && strings.HasSuffix(ev.File.Path, "/status")
			})
			mark, _, out, err = w.run(t, "link", name+".new", name+".link")
			mustOK(t, err, out)
			ev = waitFrom(t, mark, "link", func(ev *event.Event) bool { return ev.Kind == event.KindLink && w.from(ev) })
			if ev.File.NewPath != name+".link" {
				t.Errorf("link: %+v", ev.File)
			}
			mark, _, out, err = w.run(t, "symlink", "/bin/sh", name+".sym")
			mustOK(t, err, out)
			ev = waitFrom(t, mark, "symlink", func(ev *event.Event) bool { return ev.Kind == event.KindSymlink && w.from(ev) })
			if ev.File.Path != "/bin/sh" || ev.File.NewPath != name+".sym" {
				t.Errorf("symlink: %+v", ev.File)
			}
			// A symlink to a secret, made where nothing is watched, is
			// watched from the moment it exists: the read through it right
			// after is seen, named by the file it reached. Its twin, a link
			// to a file that is no secret, stays in the kernel.
			link := filepath.Join(w.tmp, "mamori-link-"+strconv.Itoa(rand.Int()))
			t.Cleanup(func() { cleanupIn(w, link, link+"-passwd") })
			learned := shared.Counters().LinksLearned
			mark, _, out, err = w.run(t, "symlink", "/etc/shadow", link)
			mustOK(t, err, out)
			mark2, _, out, err := w.run(t, "open-read", link)
			mustOK(t, err, out)
			ev = waitFrom(t, mark, "symlink to a secret", func(ev *event.Event) bool {
				return ev.Kind == event.KindSymlink && w.from(ev) && ev.File.NewPath == link
			})
			if ev.File.Path != "/etc/shadow" || ev.Result != 0 {
				t.Errorf("symlink to a secret: %+v result %d", ev.File, ev.Result)
			}
			ev = waitFrom(t, mark2, "read through a symlink to a secret", func(ev *event.Event) bool {
				return ev.Kind == event.KindOpen && w.from(ev) && ev.File.RawPath == link
			})
			if ev.File.Path != "/etc/shadow" || ev.File.Write {
				t.Errorf("read through a symlink to /etc/shadow: %+v", ev.File)
			}
			if c := shared.Counters(); c.LinksLearned <= learned || c.LinksNotLearned != 0 {
				t.Errorf("links learned %d (before %d), not learned %d", c.LinksLearned, learned, c.LinksNotLearned)
			}
			_, _, out, err = w.run(t, "symlink", "/etc/passwd", link+"-passwd")
			mustOK(t, err, out)
			mark, pid, out, err = w.run(t, "open-read", link+"-passwd")
			mustOK(t, err, out)
			assertNone(t, mark, pid, w, func(ev *event.Event) bool {
				return ev.Kind == event.KindOpen && ev.File.RawPath == link+"-passwd"
			})
			// A symlink to a directory with a secret below it: every open
			// under it is sent, named by the file reached. A link to a
			// directory holding none (/bin) stays in the kernel.
			t.Cleanup(func() { cleanupIn(w, link+"-etc", link+"-bin") })
			_, _, out, err = w.run(t, "symlink", "/etc", link+"-etc")
			mustOK(t, err, out)
			mark, _, out, err = w.run(t, "open-read", link+"-etc/shadow")
			mustOK(t, err, out)
			ev = waitFrom(t, mark, "read through a symlink to /etc", func(ev *event.Event) bool {
				return ev.Kind == event.KindOpen && w.from(ev) && ev.File.RawPath == link+"-etc/shadow"
			})
			if ev.File.Path != "/etc/shadow" || ev.File.Write {
				t.Errorf("read through a symlink to /etc: %+v", ev.File)
			}
			// A link to that link is learned in turn; and a link to a
			// directory inside a read-watched one (a pod's service-account
			// token directory under /run/secrets/) covers the files in it.
			t.Cleanup(func() { cleanupIn(w, link+"-chain", link+"-sa") })
			_, _, out, err = w.run(t, "symlink", link+"-etc", link+"-chain")
			mustOK(t, err, out)
			mark, _, out, err = w.run(t, "open-read", link+"-chain/shadow")
			mustOK(t, err, out)
			ev = waitFrom(t, mark, "read through a link to a link to /etc", func(ev *event.Event) bool {
				return ev.Kind == event.KindOpen && w.from(ev) && ev.File.RawPath == link+"-chain/shadow"
			})
			if ev.File.Path != "/etc/shadow" {
				t.Errorf("read through a link to a link to /etc: %+v", ev.File)
			}
			saDir := "/run/secrets/mamori-test-" + strconv.Itoa(rand.Int())
			mkdirIn(t, w, saDir)
			t.Cleanup(func() { cleanupIn(w, saDir+"/token", saDir) })
			_, _, out, err = w.run(t, "open-write", saDir+"/token")
			mustOK(t, err, out)
			_, _, out, err = w.run(t, "symlink", saDir, link+"-sa")
			mustOK(t, err, out)
			mark, _, out, err = w.run(t, "open-read", link+"-sa/token")
			mustOK(t, err, out)
			ev = waitFrom(t, mark, "read through a link to a directory under /run/secrets/", func(ev *event.Event) bool {
				return ev.Kind == event.KindOpen && w.from(ev) && ev.File.RawPath == link+"-sa/token"
			})
			if ev.File.Path != saDir+"/token" {
				t.Errorf("read through a link to %s: %+v", saDir, ev.File)
			}
			// A link to a secret under a relative name ("cd /tmp; ln -s
			// /etc/shadow s; cat s"): its cgroup's relative reads are sent
			// from then on, named by the file reached.
			rel := filepath.Base(link) + "-rel"
			t.Cleanup(func() { cleanupIn(w, filepath.Join(w.tmp, rel)) })
			_, _, out, err = w.runAt(t, w.tmp, "symlink", "/etc/shadow", rel)
			mustOK(t, err, out)
			mark, _, out, err = w.runAt(t, w.tmp, "open-read", rel)
			mustOK(t, err, out)
			ev = waitFrom(t, mark, "relative read through a relative link to a secret", func(ev *event.Event) bool {
				return ev.Kind == event.KindOpen && w.from(ev) && ev.File.RawPath == rel
			})
			if ev.File.Path != "/etc/shadow" || ev.File.Write {
				t.Errorf("relative read through a relative link to /etc/shadow: %+v", ev.File)
			}
			// A link the path filter cannot name — here one with a relative
			// target, learned by no one — still opens the secret's inode,
			// which the kernel checks on every read it let pass (the
			// container's own /etc/shadow is known through its root). The
			// twin, a relative link to /etc/passwd, stays in the kernel.
			relDir := filepath.Join(w.tmp, "mamori-reltarget-"+strconv.Itoa(rand.Int()))
			mkdirIn(t, w, relDir)
			t.Cleanup(func() { cleanupIn(w, relDir+"/s", relDir+"/p", relDir+"/h", relDir) })
			target, _ := filepath.Rel(relDir, "/etc/shadow")
			_, _, out, err = w.run(t, "symlink", target, relDir+"/s")
			mustOK(t, err, out)
			mark, _, out, err = w.run(t, "open-read", relDir+"/s")
			mustOK(t, err, out)
			ev = waitFrom(t, mark, "read through a link with a relative target", func(ev *event.Event) bool {
				return ev.Kind == event.KindOpen && w.from(ev) && ev.File.RawPath == relDir+"/s"
			})
			if ev.File.Path != "/etc/shadow" || ev.File.Write {
				t.Errorf("read through %s -> %s: %+v", relDir+"/s", target, ev.File)
			}
			if !ev.File.ByInode {
				t.Errorf("read through %s not flagged as judged by its inode: %+v", relDir+"/s", ev.File)
			}
			// A hard link to a secret: the walk of the opened file names
			// the link, and the flag says the file is the secret.
			_, _, out, err = w.run(t, "link", "/etc/shadow", relDir+"/h")
			mustOK(t, err, out)
			mark, _, out, err = w.run(t, "open-read", relDir+"/h")
			mustOK(t, err, out)
			ev = waitFrom(t, mark, "read through a hard link", func(ev *event.Event) bool {
				return ev.Kind == event.KindOpen && w.from(ev) && ev.File.Path == relDir+"/h"
			})
			if !ev.File.ByInode || ev.File.Write {
				t.Errorf("read through a hard link to /etc/shadow: %+v", ev.File)
			}
			// open_by_handle_at names no path at all ("shocker"). On the
			// host (root holds CAP_DAC_READ_SEARCH) it opens the secret,
			// flagged (and named by whichever of its links the kernel
			// picks: the hard link above is one); in the container it is
			// refused, and the attempt is sent all the same.
			mark, _, out, err = w.run(t, "open-by-handle", "/etc/shadow")
			if w.cgroupID == 0 {
				mustOK(t, err, out)
				ev = waitFrom(t, mark, "open_by_handle_at of /etc/shadow", func(ev *event.Event) bool {
					return ev.Kind == event.KindOpen && w.from(ev) && ev.File.RawPath == "" && ev.Result >= 0 && ev.File.Path != ""
				})
				if !ev.File.ByInode || (ev.File.Path != "/etc/shadow" && ev.File.Path != relDir+"/h") {
					t.Errorf("open_by_handle_at of /etc/shadow: %+v", ev.File)
				}
			} else {
				if err == nil {
					t.Error("open_by_handle_at succeeded in a container without CAP_DAC_READ_SEARCH")
				}
				waitFrom(t, mark, "refused open_by_handle_at", func(ev *event.Event) bool {
					return ev.Kind == event.KindOpen && w.from(ev) && ev.Error == "EPERM" && ev.File.RawPath == "" && ev.File.Path == ""
				})
			}
			target, _ = filepath.Rel(relDir, "/etc/passwd")
			_, _, out, err = w.run(t, "symlink", target, relDir+"/p")
			mustOK(t, err, out)
			mark, pid, out, err = w.run(t, "open-read", relDir+"/p")
			mustOK(t, err, out)
			assertNone(t, mark, pid, w, func(ev *event.Event) bool {
				return ev.Kind == event.KindOpen && ev.File.RawPath == relDir+"/p"
			})
			// A secret replaced after the scan (a fresh file renamed over
			// it, as passwd does with /etc/shadow) has a new inode: the
			// rename onto a read-watched path makes the agent scan again
			// at once, so reads through the link are seen within moments,
			// not at the next periodic scan (5 s).
			// The fresh file is made outside the read-watched directory,
			// so only the rename can make the agent scan for it.
			rotated := saDir + "/rotated"
			fresh := "/run/mamori-fresh-" + strconv.Itoa(rand.Int())
			t.Cleanup(func() { cleanupIn(w, rotated, fresh, relDir+"/r") })
			_, _, out, err = w.run(t, "open-write", rotated)
			mustOK(t, err, out)
			target, _ = filepath.Rel(relDir, rotated)
			_, _, out, err = w.run(t, "symlink", target, relDir+"/r")
			mustOK(t, err, out)
			_, _, out, err = w.run(t, "open-write", fresh)
			mustOK(t, err, out)
			_, _, out, err = w.run(t, "rename", fresh, rotated)
			mustOK(t, err, out)
			renamed := time.Now()
			seen := false
			for !seen && time.Since(renamed) < 2*time.Second {
				mark, _, out, err = w.run(t, "open-read", relDir+"/r")
				mustOK(t, err, out)
				seen = seenWithin(mark, 200*time.Millisecond, func(ev *event.Event) bool {
					return ev.Kind == event.KindOpen && w.from(ev) && ev.File.RawPath == relDir+"/r" && ev.File.Path == rotated
				})
			}
			if !seen {
				t.Errorf("no read through a link to %s, renamed over, within 2s of the rename", rotated)
			}
			if c := shared.Counters(); c.SecretInodes == 0 || c.WatchedRoots == 0 || c.SecretInodesNotWatched != 0 {
				t.Errorf("secret inodes %d in %d roots, %d not watched", c.SecretInodes, c.WatchedRoots, c.SecretInodesNotWatched)
			}
			_, _, out, err = w.run(t, "symlink", "/bin", link+"-bin")
			mustOK(t, err, out)
			mark, pid, out, err = w.run(t, "open-read", link+"-bin/sh")
			mustOK(t, err, out)
			assertNone(t, mark, pid, w, func(ev *event.Event) bool {
				return ev.Kind == event.KindOpen && strings.HasPrefix(ev.File.RawPath, link+"-bin/")
			})
			mark, _, out, err = w.run(t, "chmod", name+".new", "04755")
			mustOK(t, err, out)
			ev = waitFrom(t, mark, "chmod", func(ev *event.Event) bool { return ev.Kind == event.KindChmod && w.from(ev) })
			if !ev.File.SetUID || ev.File.Mode != 0o4755 || ev.File.Path != name+".new" {
				t.Errorf("chmod: %+v", ev.File)
			}
			mark, _, out, err = w.run(t, "chown", name+".new", "65534", "65534")
			mustOK(t, err, out)
			ev = waitFrom(t, mark, "chown", func(ev *event.Event) bool { return ev.Kind == event.KindChown && w.from(ev) })
			if ev.File.UID == nil || *ev.File.UID != 65534 {
				t.Errorf("chown: %+v", ev.File)
			}
			mark, _, out, err = w.run(t, "unlinkat-dir", "/etc", filepath.Base(name)+".link")
			mustOK(t, err, out)
			ev = waitFrom(t, mark, "unlink", func(ev *event.Event) bool { return ev.Kind == event.KindUnlink && w.from(ev) })
			if ev.File.Path != name+".link" {
				t.Errorf("unlinkat(/etc fd, %s): %+v", filepath.Base(name)+".link", ev.File)
			}
			// A failed attempt is still reported, with its error.
			mark, _, _, err = w.run(t, "unlink", "/etc/mamori-does-not-exist")
			if err == nil {
				t.Fatal("unlink of a missing file succeeded")
			}
			ev = waitFrom(t, mark, "failed unlink", func(ev *event.Event) bool { return ev.Kind == event.KindUnlink && w.from(ev) })
			if ev.Error != "ENOENT" {
				t.Errorf("failed unlink error %q", ev.Error)
			}
		})
	}
}

// mkdirIn makes a directory on the host or in w's container.
func mkdirIn(t *testing.T, w *where, dir string) {
	t.Helper()
	var err error
	var out []byte
	if w.ctrID == "" {
		err = os.MkdirAll(dir, 0o700)
	} else {
		out, err = exec.Command("podman", "exec", w.ctrID, "mkdir", "-p", dir).CombinedOutput()
	}
	if err != nil {
		t.Fatalf("mkdir %s: %v %s", dir, err, out)
	}
}

func cleanupIn(w *where, paths ...string) {
	for _, p := range paths {
		if w.ctrID == "" {
			os.Remove(p)
		} else {
			_ = exec.Command("podman", "exec", w.ctrID, "rm", "-f", p).Run()
		}
	}
}

// assertNone waits for the process's exit (after which all its events have
// been read, the ring buffer being ordered) and fails if any match.
func assertNone(t *testing.T, mark, pid int, w *where, match func(*event.Event) bool) {
	t.Helper()
	waitFrom(t, mark, "exit of the actor", func(ev *event.Event) bool {
		return ev.Kind == event.KindExit && w.from(ev)
	})
	evs, _ := collected.since(mark)
	for _, ev := range evs {
		if match(ev) {
			t.Errorf("unexpected event: %+v %+v", ev.Kind, ev.File)
		}
	}
	_ = pid
}

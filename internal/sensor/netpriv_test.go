package sensor

import (
	"bufio"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mamori-dev/mamori/internal/event"
	"github.com/mamori-dev/mamori/internal/testenv"
)

func freePort() int { return 20000 + rand.Intn(20000) }

func TestNetworkEvents(t *testing.T) {
	for _, w := range places(t) {
		t.Run(w.name, func(t *testing.T) {
			port := freePort()
			addr := "127.0.0.1:" + strconv.Itoa(port)
			_, mark0 := collected.since(1 << 62)
			srv, _, stop := w.start(t, "serve", addr)
			defer stop()
			// Wait for the listener before connecting.
			waitFrom(t, mark0, "listen", func(ev *event.Event) bool {
				return ev.Kind == event.KindListen && w.from(ev) && ev.Net.LocalPort == uint16(port)
			})
			bind := waitFrom(t, mark0, "bind", func(ev *event.Event) bool {
				return ev.Kind == event.KindBind && w.from(ev) && ev.Net.LocalPort == uint16(port)
			})
			if bind.Net.Family != "inet" || bind.Net.LocalAddr != "127.0.0.1" {
				t.Errorf("bind: %+v", bind.Net)
			}
			mark, _, out, err := w.run(t, "connect", addr)
			mustOK(t, err, out)
			conn := waitFrom(t, mark, "connect", func(ev *event.Event) bool {
				return ev.Kind == event.KindConnect && w.from(ev) && ev.Net.RemotePort == uint16(port)
			})
			if conn.Net.RemoteAddr != "127.0.0.1" || conn.Net.Type != "stream" || conn.Result != 0 && conn.Error != "EINPROGRESS" {
				t.Errorf("connect: %+v result %d %s", conn.Net, conn.Result, conn.Error)
			}
			acc := waitFrom(t, mark0, "accept", func(ev *event.Event) bool {
				return ev.Kind == event.KindAccept && w.from(ev) && ev.Result >= 0 && ev.Net.LocalPort == uint16(port)
			})
			if acc.Net.RemoteAddr != "127.0.0.1" || acc.Net.RemotePort == 0 {
				t.Errorf("accept: %+v", acc.Net)
			}
			_ = srv.Wait()

			// A raw packet socket.
			mark, _, _, _ = w.run(t, "socket-packet")
			sock := waitFrom(t, mark, "packet socket", func(ev *event.Event) bool {
				return ev.Kind == event.KindSocket && w.from(ev) && ev.Net.Family == "packet"
			})
			if sock.Net.Type != "raw" {
				t.Errorf("socket: %+v", sock.Net)
			}
			// A unix connect to a missing socket: the attempt and its error.
			mark, _, _, _ = w.run(t, "connect-unix", "/run/mamori-missing.sock")
			ux := waitFrom(t, mark, "unix connect", func(ev *event.Event) bool {
				return ev.Kind == event.KindConnect && w.from(ev) && ev.Net.Family == "unix"
			})
			if ux.Net.SocketPath != "/run/mamori-missing.sock" || ux.Error != "ENOENT" {
				t.Errorf("unix connect: %+v %s", ux.Net, ux.Error)
			}
			// A socket duplicated onto stdio (reverse shell shape).
			port2 := freePort()
			_, _, stop2 := w.start(t, "serve", "127.0.0.1:"+strconv.Itoa(port2))
			defer stop2()
			time.Sleep(300 * time.Millisecond)
			mark, _, out, err = w.run(t, "dup-socket", "127.0.0.1:"+strconv.Itoa(port2))
			mustOK(t, err, out)
			for _, fd := range []int{0, 1, 2} {
				dup := waitFrom(t, mark, fmt.Sprintf("dup onto fd %d", fd), func(ev *event.Event) bool {
					return ev.Kind == event.KindDup && w.from(ev) && ev.Net.NewFD == fd
				})
				if dup.Net.Family != "inet" || dup.Net.RemotePort != uint16(port2) || dup.Net.RemoteAddr != "127.0.0.1" {
					t.Errorf("dup: %+v", dup.Net)
				}
			}
		})
	}
}

func TestPrivilegeEvents(t *testing.T) {
	for _, w := range places(t) {
		t.Run(w.name, func(t *testing.T) {
			// mount: succeeds on the host, refused in the container; both reported.
			target := w.tmp + "/mnt-" + strconv.Itoa(rand.Int())
			if w.ctrID == "" {
				if err := os.Mkdir(target, 0o755); err != nil {
					t.Fatal(err)
				}
			} else {
				runShell(t, w, "mkdir -p "+target)
			}
			mark, _, _, err := w.run(t, "mount", "none", target, "tmpfs")
			ev := waitFrom(t, mark, "mount", func(ev *event.Event) bool { return ev.Kind == event.KindMount && w.from(ev) })
			if ev.Mount.Target != target || ev.Mount.FSType != "tmpfs" || ev.Mount.Source != "none" {
				t.Errorf("mount: %+v", ev.Mount)
			}
			if w.ctrID == "" {
				if err != nil || ev.Result != 0 {
					t.Errorf("host mount failed: %v %d", err, ev.Result)
				}
				mark, _, out, err := w.run(t, "umount", target)
				mustOK(t, err, out)
				um := waitFrom(t, mark, "umount", func(ev *event.Event) bool { return ev.Kind == event.KindUmount && w.from(ev) })
				if um.Mount.Target != target {
					t.Errorf("umount: %+v", um.Mount)
				}
			} else if ev.Error != "EPERM" {
				t.Errorf("container mount: want EPERM, got result %d %q", ev.Result, ev.Error)
			}

			// A target process for ptrace, process_vm_writev and /proc/PID/mem.
			_, tout, stop := w.start(t, "print-addr", "20")
			defer stop()
			tpid, taddr := readTarget(t, tout)
			mark, _, out, err := w.run(t, "ptrace-attach", tpid)
			mustOK(t, err, out)
			ev = waitFrom(t, mark, "ptrace", func(ev *event.Event) bool { return ev.Kind == event.KindPtrace && w.from(ev) })
			if ev.Access.Request != "PTRACE_ATTACH" || strconv.Itoa(int(ev.Access.TargetPID)) != tpid {
				t.Errorf("ptrace: %+v (target %s)", ev.Access, tpid)
			}
			mark, _, out, err = w.run(t, "vm-writev", tpid, taddr)
			mustOK(t, err, out)
			ev = waitFrom(t, mark, "process_vm_writev", func(ev *event.Event) bool { return ev.Kind == event.KindProcessVM && w.from(ev) })
			if ev.Access.Op != "process_vm_writev" || strconv.Itoa(int(ev.Access.TargetPID)) != tpid || ev.Result != 8 {
				t.Errorf("process_vm_writev: %+v result %d", ev.Access, ev.Result)
			}
			mark, _, out, err = w.run(t, "proc-mem-write", tpid)
			mustOK(t, err, out)
			ev = waitFrom(t, mark, "/proc/PID/mem write open", func(ev *event.Event) bool {
				return ev.Kind == event.KindOpen && w.from(ev) && strings.HasSuffix(ev.File.RawPath+ev.File.Path, "/mem")
			})
			if !ev.File.Write {
				t.Errorf("proc mem open not a write: %+v", ev.File)
			}

			checks := []struct {
				args  []string
				kind  event.Kind
				check func(*event.Event) string
			}{
				{[]string{"memfd", "mamori-memfd"}, event.KindMemfd, func(ev *event.Event) string {
					return want(ev.Memory.Name == "mamori-memfd" && ev.Result >= 0, "memfd %+v", ev.Memory)
				}},
				{[]string{"userfaultfd"}, event.KindUserfaultfd, func(ev *event.Event) string {
					return want(ev.Memory.Flags == unix.O_CLOEXEC, "userfaultfd %+v", ev.Memory)
				}},
				{[]string{"bpf-prog-load"}, event.KindBPF, func(ev *event.Event) string {
					return want(ev.BPF.Cmd == "BPF_PROG_LOAD", "bpf %+v", ev.BPF)
				}},
				{[]string{"setuid", "65534"}, event.KindSetID, func(ev *event.Event) string {
					return want(ev.Cred.Call == "setuid" && ev.Cred.NewUID == 65534 && ev.Cred.OldUID == 0, "setuid %+v", ev.Cred)
				}},
				{[]string{"capset-drop"}, event.KindCapset, func(ev *event.Event) string {
					return want(ev.Cred.Effective&(1<<unix.CAP_NET_RAW) == 0 && ev.Result == 0, "capset %+v", ev.Cred)
				}},
				{[]string{"unshare-uts"}, event.KindUnshare, func(ev *event.Event) string {
					return want(len(ev.Namespace.Flags) == 1 && ev.Namespace.Flags[0] == "CLONE_NEWUTS", "unshare %+v", ev.Namespace)
				}},
				{[]string{"setns-uts", "/proc/self/ns/uts"}, event.KindSetns, func(ev *event.Event) string {
					return want(strings.Contains(strings.Join(ev.Namespace.Flags, ","), "CLONE_NEWUTS"), "setns %+v", ev.Namespace)
				}},
				{[]string{"mprotect-exec"}, event.KindMprotect, func(ev *event.Event) string {
					if noVMATree(t) {
						// Compat objects forced on a kernel whose VMAs are
						// a maple tree (6.1+): they cannot tell; they are
						// only chosen for real on kernels with the rbtree.
						return want(ev.Memory.Prot == "r-x", "mprotect %+v", ev.Memory)
					}
					return want(ev.Memory.Anonymous && ev.Memory.Prot == "r-x", "mprotect %+v", ev.Memory)
				}},
				{[]string{"mmap-exec", w.actor}, event.KindMmap, func(ev *event.Event) string {
					return want(strings.HasSuffix(ev.Memory.Path, "/actor") && ev.Memory.Prot == "r-x", "mmap %+v", ev.Memory)
				}},
			}
			for _, c := range checks {
				mark, _, _, _ := w.run(t, c.args...)
				ev := waitFrom(t, mark, c.kind.String(), func(ev *event.Event) bool { return ev.Kind == c.kind && w.from(ev) })
				if msg := c.check(ev); msg != "" {
					t.Errorf("%s: %s", c.args[0], msg)
				}
			}
		})
	}
}

func want(ok bool, format string, args ...any) string {
	if ok {
		return ""
	}
	return fmt.Sprintf(format, args...)
}

// readTarget reads "PID ADDR" printed by the print-addr action.
func readTarget(t *testing.T, r *bufio.Reader) (string, string) {
	t.Helper()
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("read target pid: %v", err)
	}
	f := strings.Fields(line)
	if len(f) != 2 {
		t.Fatalf("target printed %q", line)
	}
	return f[0], f[1]
}

// An attempt a seccomp filter denies is still an attempt: podman's default
// profile refuses userfaultfd (and ptrace, unshare, mount in most setups)
// before the call runs, and the sensor, hooked at the syscall's exit, sees it
// fail with the filter's errno — from the container, with its identity.
func TestSeccompDeniedAttemptIsSeen(t *testing.T) {
	startSensor(t)
	testenv.RequirePodman(t)
	id := testenv.StartContainer(t, []string{"--network", "host", "-v", filepath.Dir(actorPath) + ":/t:ro"}, "sleep", "600")
	cg, err := containerCgroupID(id)
	if err != nil {
		t.Fatalf("container cgroup: %v", err)
	}
	w := &where{name: "container (default seccomp)", cgroupID: cg, ctrID: id, actor: "/t/actor", tmp: "/tmp"}
	mark, _, out, err := w.run(t, "userfaultfd")
	if err == nil || !strings.Contains(out, "operation not permitted") {
		t.Fatalf("userfaultfd under podman's default seccomp profile: %v %q — the profile no longer denies it", err, out)
	}
	ev := waitFrom(t, mark, "denied userfaultfd", func(ev *event.Event) bool { return ev.Kind == event.KindUserfaultfd && w.from(ev) })
	if ev.Result != -int64(unix.EPERM) || ev.Process.CgroupID != cg {
		t.Fatalf("denied userfaultfd: result %d (want -EPERM), cgroup %d (want %d)", ev.Result, ev.Process.CgroupID, cg)
	}
}

// A filter that kills the caller (SCMP_ACT_KILL_PROCESS) rolls the
// registers back before the exit hook runs, so the raw result would read
// as the syscall's own number — a success, to anyone reading it. The
// sensor reports the attempt as refused (EPERM), and the process's exit by
// SIGSYS follows.
func TestSeccompKilledAttemptIsAFailure(t *testing.T) {
	startSensor(t)
	testenv.RequirePodman(t)
	profile := filepath.Join(t.TempDir(), "kill-userfaultfd.json")
	if err := os.WriteFile(profile, []byte(`{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["userfaultfd"],"action":"SCMP_ACT_KILL_PROCESS"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	id := testenv.StartContainer(t, []string{"--network", "host", "--security-opt", "seccomp=" + profile,
		"-v", filepath.Dir(actorPath) + ":/t:ro"}, "sleep", "600")
	cg, err := containerCgroupID(id)
	if err != nil {
		t.Fatalf("container cgroup: %v", err)
	}
	w := &where{name: "container (killing seccomp)", cgroupID: cg, ctrID: id, actor: "/t/actor", tmp: "/tmp"}
	mark, _, out, err := w.run(t, "userfaultfd")
	if err == nil {
		t.Fatalf("userfaultfd under a killing seccomp profile succeeded: %q", out)
	}
	ev := waitFrom(t, mark, "killed userfaultfd", func(ev *event.Event) bool { return ev.Kind == event.KindUserfaultfd && w.from(ev) })
	if ev.Result != -int64(unix.EPERM) || ev.Error != "EPERM" {
		t.Errorf("killed userfaultfd: result %d %q, want -1 EPERM (never ran)", ev.Result, ev.Error)
	}
	exit := waitFrom(t, mark, "exit by SIGSYS", func(e *event.Event) bool {
		return e.Kind == event.KindExit && e.Process.PID == ev.Process.PID
	})
	if exit.Exit == nil || exit.Exit.Signal != int(unix.SIGSYS) {
		t.Errorf("exit of the killed process: %+v, want signal SIGSYS", exit.Exit)
	}
}

// An evasion attempt: a process blocks SIGSYS, queues one to its own
// thread — what a trapping seccomp filter leaves — and makes a call whose
// result equals its syscall number (process_vm_readv copying 310 bytes).
// Only seccomp's own dead mark turns such a result into a refusal, so the
// successful call is reported as the success it is.
func TestQueuedSIGSYSCannotDisguiseASuccess(t *testing.T) {
	startSensor(t)
	w := &where{name: "host", actor: actorPath, tmp: t.TempDir()}
	mark, _, out, err := w.run(t, "sigsys-readv")
	mustOK(t, err, out)
	if out != "310" {
		t.Fatalf("the actor copied %q bytes, want 310", out)
	}
	ev := waitFrom(t, mark, "process_vm_readv", func(ev *event.Event) bool {
		return ev.Kind == event.KindProcessVM && w.from(ev) && ev.Access.Op == "process_vm_readv"
	})
	if ev.Result != 310 || ev.Error != "" {
		t.Fatalf("process_vm_readv of 310 bytes reported as result %d %q", ev.Result, ev.Error)
	}
}

// TestUnixConnectNamesTheFileReached: a unix connect that succeeds says
// which socket file it reached (inode and device, as the kernel numbers
// them), whatever name it used: here a link with another name, as a
// container would see a socket bind-mounted under a name of its choosing.
func TestUnixConnectNamesTheFileReached(t *testing.T) {
	startSensor(t)
	dir := t.TempDir()
	real := filepath.Join(dir, "engine.sock")
	testenv.HangUp(t, "unix", real)
	other := filepath.Join(dir, "api.sock")
	if err := os.Symlink(real, other); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(real, &st); err != nil {
		t.Fatal(err)
	}
	host := &where{name: "host", actor: actorPath}
	mark, _, out, err := host.run(t, "connect-unix", other)
	mustOK(t, err, out)
	ev := waitFrom(t, mark, "unix connect", func(ev *event.Event) bool {
		return ev.Kind == event.KindConnect && host.from(ev) && ev.Net.SocketPath == other
	})
	if ev.Net.PeerInode != st.Ino || ev.Net.PeerDev != uint32(unix.Major(st.Dev))<<20|uint32(unix.Minor(st.Dev)) {
		t.Errorf("peer inode %d dev %#x, the socket file is %d on %#x", ev.Net.PeerInode, ev.Net.PeerDev, st.Ino, st.Dev)
	}
}

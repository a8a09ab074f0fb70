package proc

import (
	"context"

	"github.com/mamori-dev/mamori/internal/event"
	"os/exec"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A running process's /proc/PID/exe is hashed only if it is the very file
// the exec event named: the same inode number with other times (another
// file system's file, or the file rewritten) is refused, and so is the
// file at the path when it is not that file either.
func TestHashRefusesAnotherFileWithTheSameInode(t *testing.T) {
	tb := newTable(t, Options{})
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	time.Sleep(100 * time.Millisecond) // exec'd
	path, _ := exec.LookPath("sleep")
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	right := fileKey{dev: uint32(unix.Major(st.Dev))<<20 | uint32(unix.Minor(st.Dev)), ino: st.Ino, mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano()}
	job := hashJob{pid: uint32(cmd.Process.Pid), key: right, path: path}
	if _, err := tb.hash.hashExe(job); err != nil {
		t.Fatalf("the right image: %v", err)
	}
	for name, k := range map[string]fileKey{
		"other mtime": {dev: right.dev, ino: right.ino, mtime: right.mtime + 1, ctime: right.ctime},
		"other ctime": {dev: right.dev, ino: right.ino, mtime: right.mtime, ctime: right.ctime - 1},
	} {
		job.key = k
		if sum, err := tb.hash.hashExe(job); err == nil {
			t.Errorf("%s: hashed %s as the executed file", name, sum)
		}
	}
}

// A child forked before its image's hash landed takes the hash on its next
// event (a daemon that double-forks and whose parent exits).
func TestForkedChildTakesTheLateHash(t *testing.T) {
	tb := newTable(t, Options{})
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	time.Sleep(100 * time.Millisecond)
	path, _ := exec.LookPath("sleep")
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	pid := uint32(cmd.Process.Pid)
	tb.Apply(&event.Event{Kind: event.KindExec, Process: event.Process{PID: pid, StartNS: 1e9},
		Exec: &event.Exec{Path: path, Inode: st.Ino, Dev: uint32(unix.Major(st.Dev))<<20 | uint32(unix.Minor(st.Dev)),
			MTime: time.Unix(st.Mtim.Unix()), CTime: time.Unix(st.Ctim.Unix())}})
	tb.Apply(&event.Event{Kind: event.KindFork, Process: event.Process{PID: pid, StartNS: 1e9},
		Fork: &event.Fork{ChildPID: 999999, ChildTID: 999999, ChildStartNS: 2e9}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go tb.Run(ctx)
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end) && tb.Stats().HashDone == 0; time.Sleep(10 * time.Millisecond) {
	}
	child := &event.Event{Kind: event.KindOpen, Process: event.Process{PID: 999999, StartNS: 2e9}}
	tb.Apply(child)
	if child.Process.ExeSHA256 == "" {
		t.Fatalf("the child has no hash after its parent's landed: %+v", tb.Stats())
	}
}

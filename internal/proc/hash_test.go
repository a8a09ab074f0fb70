package proc

import (
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

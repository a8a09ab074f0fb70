package testenv

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// SmallDisk mounts a tmpfs of mib MiB on a fresh directory and returns it:
// a disk a test may fill without touching the machine's. It is unmounted
// when the test ends. Needs root.
func SmallDisk(t testing.TB, mib int) string {
	t.Helper()
	RequireRoot(t)
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%dm,mode=0700", mib), "mamori-test", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount a %d MiB tmpfs on %s: %v: %s", mib, dir, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// FillDisk writes a filler file under dir until the filesystem has at most
// leave bytes free (0: until a write fails for want of space), and returns
// a function that deletes it.
func FillDisk(t testing.TB, dir string, leave int64) (free func()) {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		var st syscall.Statfs_t
		if err := syscall.Statfs(dir, &st); err != nil {
			t.Fatal(err)
		}
		avail := int64(st.Bavail) * int64(st.Bsize)
		if leave > 0 && avail <= leave {
			break
		}
		n := int64(len(buf))
		if leave > 0 {
			n = min(n, avail-leave)
		}
		if _, err := f.Write(buf[:n]); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				break
			}
			t.Fatalf("fill %s: %v", dir, err)
		}
	}
	return func() {
		if err := os.Remove(path); err != nil {
			t.Errorf("free %s: %v", dir, err)
		}
	}
}

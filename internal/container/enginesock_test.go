package container

import (
	"net"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// An engine socket is known by its file: a glob's match, the Docker
// socket the table is given, and not a plain file or another socket.
func TestEngineSocketsByFile(t *testing.T) {
	dir := t.TempDir()
	listen := func(name string) (uint32, uint64) {
		t.Helper()
		p := filepath.Join(dir, name)
		ln, err := net.Listen("unix", p)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		return uint32(unix.Major(st.Dev))<<20 | uint32(unix.Minor(st.Dev)), st.Ino
	}
	dDev, dIno := listen("docker.sock")
	kDev, kIno := listen("k0s-containerd.sock")
	oDev, oIno := listen("app.sock")
	e := NewEngineSockets(Options{DockerSocket: filepath.Join(dir, "docker.sock")}, filepath.Join(dir, "k0s-*.sock"))
	if p, ok := e.Match(dDev, dIno); !ok || p != filepath.Join(dir, "docker.sock") {
		t.Errorf("the Docker socket: %q %v", p, ok)
	}
	if _, ok := e.Match(kDev, kIno); !ok {
		t.Error("a socket an extra glob names is not an engine's")
	}
	if p, ok := e.Match(oDev, oIno); ok {
		t.Errorf("an application's socket taken for an engine's: %q", p)
	}
	if _, ok := e.Match(dDev, 0); ok {
		t.Error("inode 0 matched")
	}
	// An engine started after the last look is found on its first miss
	// a second later.
	time.Sleep(1100 * time.Millisecond)
	lDev, lIno := listen("k0s-late.sock")
	if _, ok := e.Match(lDev, lIno); !ok {
		t.Error("an engine socket made after the first look is not known")
	}
}

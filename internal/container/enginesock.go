package container

import (
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// defaultEngineSockets are where container engines serve their APIs. Any
// of them reached from a container hands it the host: it can start a
// privileged container of its own.
var defaultEngineSockets = []string{
	"/var/run/docker.sock", "/run/docker.sock",
	"/run/containerd/containerd.sock", "/run/k3s/containerd/containerd.sock",
	"/run/podman/podman.sock", "/run/user/*/podman/podman.sock",
	"/var/run/crio/crio.sock", "/var/run/cri-dockerd.sock", "/var/run/dockershim.sock",
	"/run/buildkit/buildkitd.sock",
}

// EngineSockets tells the engine API sockets of the host by the file a
// unix connect reached (its inode and device, which the sensor reads in
// the kernel), so a socket bind-mounted into a container under another
// name, or reached through a link, is still known.
type EngineSockets struct {
	patterns []string
	every    time.Duration

	mu     sync.Mutex
	byFile map[[2]uint64]string // {kernel dev, inode} -> host path
	at     time.Time
}

// NewEngineSockets watches the default engine sockets, the Docker socket
// of opts, and extra paths (globs allowed), re-reading them every 10 s as
// they are asked about, and on a miss at most once a second (an engine
// started or restarted makes a new socket).
func NewEngineSockets(opts Options, extra ...string) *EngineSockets {
	opts.defaults()
	ps := append(append([]string{opts.DockerSocket}, defaultEngineSockets...), extra...)
	return &EngineSockets{patterns: ps, every: 10 * time.Second}
}

// Match returns the host path of the engine socket that is the file
// (kernel device numbering, inode), if it is one.
func (e *EngineSockets) Match(dev uint32, ino uint64) (string, bool) {
	if ino == 0 {
		return "", false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	now := time.Now()
	if e.byFile == nil || now.Sub(e.at) >= e.every {
		e.byFile, e.at = e.read(), now
	}
	k := [2]uint64{uint64(dev), ino}
	p, ok := e.byFile[k]
	if !ok && now.Sub(e.at) >= time.Second {
		// An engine started since the last look: look again, at most
		// once a second however many connects miss.
		e.byFile, e.at = e.read(), now
		p, ok = e.byFile[k]
	}
	return p, ok
}

func (e *EngineSockets) read() map[[2]uint64]string {
	m := map[[2]uint64]string{}
	for _, pat := range e.patterns {
		paths, _ := filepath.Glob(pat)
		for _, p := range paths {
			var st unix.Stat_t
			if unix.Stat(p, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
				continue
			}
			// The kernel's numbering (major << 20 | minor), as the sensor reads it.
			dev := uint64(unix.Major(st.Dev))<<20 | uint64(unix.Minor(st.Dev))
			m[[2]uint64{dev, st.Ino}] = p
		}
	}
	return m
}

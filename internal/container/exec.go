package container

import (
	"strings"

	"golang.org/x/sys/unix"

	"github.com/mamori-dev/mamori/internal/event"
)

// AnnotateExec marks an exec event whose executable the container created or
// changed: UpperLayer when the file sits in the container's writable overlay
// layer (it is not the image's), ModifiedAfterStart when its inode changed
// after the container started. The path comes from the kernel's walk in the
// container's mount namespace; a path with ".." is refused rather than
// joined, so that a hostile name cannot make the agent look outside the layer.
func AnnotateExec(ev *event.Event) {
	x, c := ev.Exec, ev.Container
	if x == nil || c == nil {
		return
	}
	if !c.StartedAt.IsZero() && (x.CTime.After(c.StartedAt) || x.MTime.After(c.StartedAt)) {
		x.ModifiedAfterStart = true
	}
	if !x.Memfd && InUpperLayer(c, x.Path) {
		x.UpperLayer = true
	}
}

// InUpperLayer reports whether path (as the container sees it) is a
// regular file in the container's writable layer. The layer is the
// container's to shape: no symbolic link in it is followed (one would lead
// the agent to the host's files), nor is any step out of it taken.
func InUpperLayer(c *event.Container, path string) bool {
	if c == nil || c.UpperDir == "" || !strings.HasPrefix(path, "/") {
		return false
	}
	dir, err := unix.Open(c.UpperDir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(dir)
	rel := strings.TrimLeft(path, "/")
	if rel == "" {
		return false
	}
	fd, err := unix.Openat2(dir, rel, &unix.OpenHow{Flags: unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV})
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	// Overlay whiteouts are character devices: a deleted image file, not ours.
	return unix.Fstat(fd, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG
}

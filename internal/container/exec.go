package container

import (
	"os"
	"path/filepath"
	"strings"

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
// regular file in the container's writable layer.
func InUpperLayer(c *event.Container, path string) bool {
	if c == nil || c.UpperDir == "" || !strings.HasPrefix(path, "/") || strings.Contains(path, "/../") ||
		strings.HasSuffix(path, "/..") {
		return false
	}
	fi, err := os.Lstat(filepath.Join(c.UpperDir, path))
	// Overlay whiteouts are character devices: a deleted image file, not ours.
	return err == nil && fi.Mode().IsRegular()
}

package container

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// On cgroup v2 a cgroup's id (bpf_get_current_cgroup_id, the cgroup_mkdir
// tracepoint's id) is the inode number of its directory in the v2
// hierarchy, so walking the hierarchy and stat'ing each directory builds the
// id → path map.

const maxScanDepth = 64

// cgroupInfo is one directory found by a scan.
type cgroupInfo struct {
	path  string // relative to the hierarchy root, starting with "/"
	mtime time.Time
}

var errScanLimit = errors.New("cgroup scan: entry limit reached")

// scanCgroups walks the v2 hierarchy under root. It stops at limit entries
// and returns what it has with errScanLimit, so a host with an absurd number
// of cgroups degrades to partial coverage instead of unbounded memory.
func scanCgroups(root string, limit int) (map[uint64]cgroupInfo, error) {
	out := make(map[uint64]cgroupInfo, 256)
	var walk func(rel string, depth int) error
	walk = func(rel string, depth int) error {
		if depth > maxScanDepth {
			return nil
		}
		abs := filepath.Join(root, rel)
		ino, mtime, err := statCgroup(abs)
		if err != nil {
			// Removed while we walked: not an error, it is simply gone.
			return nil
		}
		if len(out) >= limit {
			return errScanLimit
		}
		out[ino] = cgroupInfo{path: rel, mtime: mtime}
		ents, err := os.ReadDir(abs)
		if err != nil {
			return nil
		}
		for _, e := range ents {
			if !e.IsDir() {
				continue
			}
			child := rel + "/" + e.Name()
			if rel == "/" {
				child = "/" + e.Name()
			}
			if err := walk(child, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	err := walk("/", 0)
	return out, err
}

// statCgroup returns a cgroup directory's id and modification time; the
// latter is when the cgroup was created, as cgroupfs does not change it
// when processes move in.
func statCgroup(abs string) (uint64, time.Time, error) {
	st, err := os.Stat(abs)
	if err != nil {
		return 0, time.Time{}, err
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, time.Time{}, fmt.Errorf("stat %s: no inode", abs)
	}
	return sys.Ino, st.ModTime(), nil
}

// detectCgroup2Root finds the v2 mount from the given mountinfo file.
func detectCgroup2Root(mountinfo string) (string, error) {
	mounts, err := readMountinfo(mountinfo)
	if err != nil {
		return "", fmt.Errorf("detect cgroup v2 mount: %w", err)
	}
	root := cgroup2Root(mounts)
	if root == "" {
		return "", fmt.Errorf("detect cgroup v2 mount: no cgroup2 filesystem in %s", mountinfo)
	}
	return root, nil
}

// cleanCgroupPath normalises a path given by the sensor or a scan.
func cleanCgroupPath(p string) string {
	if p == "" {
		return "/"
	}
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	return filepath.Clean(p)
}

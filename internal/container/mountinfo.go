package container

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"strings"
)

// Limits on what we read from files other programs (or attackers inside
// containers) control.
const (
	maxMountinfo = 8 << 20
	maxJSONFile  = 16 << 20
	maxSmallFile = 64 << 10
)

// mount is one /proc/PID/mountinfo line, the fields we use.
type mount struct {
	root, point, fstype, source, super string
}

// readMountinfo parses a mountinfo file, skipping lines it cannot parse.
func readMountinfo(path string) ([]mount, error) {
	data, err := readBounded(path, maxMountinfo)
	if err != nil {
		return nil, err
	}
	return parseMountinfo(data), nil
}

func parseMountinfo(data []byte) []mount {
	var out []mount
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source super
		f := strings.Fields(sc.Text())
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+3 > len(f) {
			continue
		}
		m := mount{root: unescapeOctal(f[3]), point: unescapeOctal(f[4]), fstype: f[sep+1], source: unescapeOctal(f[sep+2])}
		if sep+3 < len(f) {
			m.super = f[sep+3]
		}
		out = append(out, m)
	}
	return out
}

// option returns an overlay (or other) super option's value, unescaped.
// The kernel octal-escapes commas inside values, so splitting on ',' is safe.
func (m mount) option(name string) string {
	for _, kv := range strings.Split(m.super, ",") {
		if v, ok := strings.CutPrefix(kv, name+"="); ok {
			return unescapeOctal(v)
		}
	}
	return ""
}

// unescapeOctal undoes the kernel's \ooo escaping of space, tab, newline,
// backslash and comma in mountinfo fields.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && s[i+1] >= '0' && s[i+1] <= '3' && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }

// cgroup2Root finds where the cgroup v2 hierarchy is mounted: the pure-v2
// /sys/fs/cgroup or the hybrid /sys/fs/cgroup/unified. With several v2
// mounts (a container runtime's bind mounts), the host-wide one whose root
// is "/" and which is shortest wins.
func cgroup2Root(mounts []mount) string {
	best := ""
	for _, m := range mounts {
		if m.fstype != "cgroup2" || m.root != "/" {
			continue
		}
		if best == "" || len(m.point) < len(best) {
			best = m.point
		}
	}
	return best
}

// upperDirAt returns the overlay upper dir of the mount at point, if that
// mount is an overlay.
func upperDirAt(mounts []mount, point string) string {
	up := ""
	for _, m := range mounts {
		// Later lines are mounted over earlier ones; the last one is visible.
		if m.point == point && m.fstype == "overlay" {
			up = m.option("upperdir")
		}
	}
	return up
}

// readBounded reads at most limit bytes of path; a longer file is an error
// rather than a silent truncation, because a cut JSON document is garbage.
func readBounded(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, &os.PathError{Op: "read", Path: path, Err: errTooLarge}
	}
	return data, nil
}

var errTooLarge = errors.New("file larger than the read limit")

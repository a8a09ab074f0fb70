package sensor

import (
	"fmt"
	"strings"
)

// Watch bits for the kernel's open filter (bpf/file.bpf.c, watch_paths).
const (
	WatchWrite uint32 = 1
	WatchRead  uint32 = 2
	// watchSecretDir marks the exact entry of a directory with a
	// read-watched path below it: a symlink made to it is learned as a
	// prefix (learn_link), so "ln -s /etc x; cat x/shadow" is seen.
	watchSecretDir uint32 = 8
)

// WatchRule is one path prefix the kernel reports opens of. The longest
// matching prefix decides, so an exact file can widen a directory's rule.
type WatchRule struct {
	Prefix string
	Bits   uint32
}

// DefaultWatch lists what the finding catalogue needs: writes to system,
// credential, persistence and log locations; writes under /proc and /sys
// (process memory, cgroup release_agent); reads of secrets.
var DefaultWatch = []WatchRule{
	{"/etc/", WatchWrite},
	{"/root/", WatchWrite},
	{"/home/", WatchWrite},
	{"/usr/", WatchWrite},
	{"/bin/", WatchWrite},
	{"/sbin/", WatchWrite},
	{"/lib/", WatchWrite},
	{"/lib64/", WatchWrite},
	{"/boot/", WatchWrite},
	{"/var/log", WatchWrite}, // the directory itself too (mv /var/log /tmp/x)
	{"/var/spool/cron", WatchWrite},
	{"/var/spool/at", WatchWrite},
	{"/proc/", WatchWrite},
	{"/sys/", WatchWrite},
	{"/run/systemd/system", WatchWrite},
	{"/etc/shadow", WatchWrite | WatchRead},
	{"/etc/gshadow", WatchWrite | WatchRead},
	{"/etc/sudoers", WatchWrite | WatchRead},
	{"/etc/ssh/ssh_host_", WatchWrite | WatchRead},
	{"/root/.ssh/", WatchWrite | WatchRead},
	{"/root/.aws/", WatchWrite | WatchRead},
	{"/root/.kube/", WatchWrite | WatchRead},
	{"/root/.docker/config.json", WatchWrite | WatchRead},
	{"/var/run/secrets/", WatchWrite | WatchRead},
	{"/run/secrets/", WatchWrite | WatchRead},
	{"/proc/kcore", WatchWrite | WatchRead},
}

const pathKeyMax = 128

type pathKey struct {
	PrefixLen uint32
	Data      [pathKeyMax]byte
}

// SetWatch replaces the kernel's open filter with rules.
func (s *Sensor) SetWatch(rules []WatchRule) error {
	for _, r := range rules {
		if !strings.HasPrefix(r.Prefix, "/") || len(r.Prefix) >= pathKeyMax || strings.IndexByte(r.Prefix, 0) >= 0 {
			return fmt.Errorf("watch prefix %q: must be absolute, without NUL and shorter than %d bytes", r.Prefix, pathKeyMax)
		}
	}
	m, ok := s.maps["watch_paths"]
	if !ok {
		return fmt.Errorf("watch_paths map not loaded (file hooks unavailable)")
	}
	// Clear, then insert: the map is small and this runs at start or reload.
	var k pathKey
	var keys []pathKey
	it := m.Iterate()
	var v uint32
	for it.Next(&k, &v) {
		keys = append(keys, k)
	}
	for i := range keys {
		_ = m.Delete(&keys[i])
	}
	given := rules
	rules = append(rules[:len(rules):len(rules)], secretDirs(rules)...)
	// The kernel skips the trie for paths whose first character after '/'
	// starts no rule (watch_roots); the set is written once the trie is.
	var roots [4]uint64
	for _, r := range rules {
		if len(r.Prefix) < 2 {
			roots = [4]uint64{^uint64(0), ^uint64(0), ^uint64(0), ^uint64(0)}
			continue
		}
		c := r.Prefix[1]
		roots[c>>6] |= 1 << (c & 63)
	}
	for _, r := range rules {
		var key pathKey
		key.PrefixLen = uint32(len(r.Prefix) * 8)
		copy(key.Data[:], r.Prefix)
		if err := m.Put(&key, r.Bits); err != nil {
			return fmt.Errorf("add watch %q: %w", r.Prefix, err)
		}
	}
	rm, ok := s.maps["watch_roots"]
	if !ok {
		return fmt.Errorf("watch_roots map not loaded")
	}
	if err := rm.Put(uint32(0), roots); err != nil {
		return fmt.Errorf("write watched roots: %w", err)
	}
	if s.inodes != nil {
		s.inodes.setRules(given)
	}
	return nil
}

// secretDirs are the exact entries (with their NUL) of every directory
// above a read-watched prefix — "/", "/etc" and "/etc/" for /etc/shadow —
// each with the bits the rules give it plus watchSecretDir, so a lookup of
// the directory itself answers as before. The root's entry ("/" and its
// NUL) needs the NUL's bit among the roots, which SetWatch sets from it.
func secretDirs(rules []WatchRule) []WatchRule {
	seen := map[string]bool{}
	var out []WatchRule
	add := func(dir string) {
		if seen[dir] || len(dir)+1 >= pathKeyMax {
			return
		}
		seen[dir] = true
		var bits uint32
		longest := -1
		for _, r := range rules {
			if strings.HasPrefix(dir, r.Prefix) && len(r.Prefix) > longest {
				bits, longest = r.Bits, len(r.Prefix)
			}
		}
		out = append(out, WatchRule{Prefix: dir + "\x00", Bits: bits | watchSecretDir})
	}
	for _, r := range rules {
		if r.Bits&WatchRead == 0 || !strings.HasPrefix(r.Prefix, "/") {
			continue
		}
		add("/")
		for i := 1; i < len(r.Prefix); i++ {
			if r.Prefix[i] == '/' {
				add(r.Prefix[:i])
				add(r.Prefix[:i+1])
			}
		}
	}
	return out
}

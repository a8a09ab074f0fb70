package sensor

import (
	"strings"
	"testing"
)

// TestSecretDirs: every directory above a read-watched prefix gets an
// exact entry marked as holding a secret, keeping the bits the rules give
// it; directories above write-only rules get none.
func TestSecretDirs(t *testing.T) {
	got := map[string]uint32{}
	for _, r := range secretDirs(DefaultWatch) {
		if !strings.HasSuffix(r.Prefix, "\x00") || r.Bits&watchSecretDir == 0 {
			t.Errorf("entry %q bits %d: want an exact entry marked watchSecretDir", r.Prefix, r.Bits)
		}
		got[strings.TrimSuffix(r.Prefix, "\x00")] = r.Bits &^ watchSecretDir
	}
	want := map[string]uint32{
		"/": 0, "/etc": 0, "/etc/": WatchWrite, "/etc/ssh": WatchWrite, "/etc/ssh/": WatchWrite,
		"/root/.ssh": WatchWrite, "/root/.ssh/": WatchWrite | WatchRead, "/var/run/secrets": 0,
		"/run/secrets/": WatchWrite | WatchRead, "/proc": 0, "/proc/": WatchWrite,
	}
	for dir, bits := range want {
		if b, ok := got[dir]; !ok || b != bits {
			t.Errorf("%s: bits %d (present %v), want %d", dir, b, ok, bits)
		}
	}
	for _, dir := range []string{"/usr", "/bin", "/home", "/var/log", "/etc/shadow"} {
		if _, ok := got[dir]; ok {
			t.Errorf("%s holds no read-watched path but got an entry", dir)
		}
	}
}

// TestSetWatchRefusesBadRules: a rule that is relative, too long or holds
// a NUL (which would forge an exact entry) is refused before the filter
// is touched.
func TestSetWatchRefusesBadRules(t *testing.T) {
	s := &Sensor{maps: nil}
	for _, bad := range []string{"etc/shadow", "/etc/shadow\x00", "/" + strings.Repeat("a", pathKeyMax)} {
		if err := s.SetWatch([]WatchRule{{bad, WatchRead}}); err == nil || !strings.Contains(err.Error(), "watch prefix") {
			t.Errorf("%q: %v, want the rule refused", bad, err)
		}
	}
}

package sensor

import "testing"

// The kernel walks a path from the leaf up ("name/parent/.../"); the
// decoder turns it around.
func TestReversePath(t *testing.T) {
	for walk, want := range map[string]string{
		"":                  "/",
		"/":                 "/",
		"bin/":              "/bin",
		"ls/bin/usr/":       "/usr/bin/ls",
		"ls/bin/usr":        "/usr/bin/ls",
		"b//a/":             "/a//b",
		"weird name/tmp/":   "/tmp/weird name",
		"x/y/z/w/v/u/t/s/r": "/r/s/t/u/v/w/z/y/x",
	} {
		if got := string(reversePath([]byte(walk))); got != want {
			t.Errorf("reversePath(%q) = %q, want %q", walk, got, want)
		}
	}
}

// Paths are made absolute and cleaned of dot-dot, so a path rule cannot be
// walked around ("/var/log/../../etc/sudoers.d/x" is a sudoers file).
func TestAbsPathCleans(t *testing.T) {
	for _, c := range []struct{ p, cwd, want string }{
		{"/var/log/../../etc/sudoers.d/x", "", "/etc/sudoers.d/x"},
		{"../etc/shadow", "/root", "/etc/shadow"},
		{"./x//y/", "/tmp", "/tmp/x/y"},
		{"rel", "", "rel"}, // no cwd: left as given
		{"", "/tmp", ""},
	} {
		if got := absPath(c.p, c.cwd); got != c.want {
			t.Errorf("absPath(%q, %q) = %q, want %q", c.p, c.cwd, got, c.want)
		}
	}
	// fchownat(fd, "", ..., AT_EMPTY_PATH) acts on the fd's own file.
	if got := emptyAt("", "/etc/sudoers"); got != "/etc/sudoers" {
		t.Errorf("emptyAt with no path = %q, want the fd's file", got)
	}
	if got := emptyAt("x", "/etc/cron.d"); got != "/etc/cron.d/x" {
		t.Errorf("emptyAt with a path = %q", got)
	}
}

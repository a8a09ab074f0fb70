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

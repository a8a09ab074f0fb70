package main

import "testing"

// TestProcLine: lineage lines name busybox applets and runc's stages, and
// say why a path is missing instead of printing "/" or nothing.
func TestProcLine(t *testing.T) {
	for _, c := range []struct {
		name, exe, more, want string
	}{
		{"cat", "/bin/busybox", ", uid 0", "/bin/busybox [cat] (pid 7, uid 0)"},
		{"bash", "/usr/bin/bash", "", "/usr/bin/bash (pid 7)"},
		{"unattended-upgr", "/usr/bin/unattended-upgrade", "", "/usr/bin/unattended-upgrade (pid 7)"},
		{"runc:[1:CHILD]", "/", "", "runc:[1:CHILD] (pid 7; executable on a detached mount, path unknown)"},
		{"process_api", "", "", "process_api (pid 7; executable path unreadable)"},
		{"x\x1b[2J", "/tmp/a\nb", "", `"/tmp/a\nb" ["x\x1b[2J"] (pid 7)`},
	} {
		if got := procLine(c.name, c.exe, 7, c.more); got != c.want {
			t.Errorf("procLine(%q, %q) = %q, want %q", c.name, c.exe, got, c.want)
		}
	}
}

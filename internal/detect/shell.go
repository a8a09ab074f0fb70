package detect

import (
	"path"
	"strings"

	"github.com/mamori-dev/mamori/internal/event"
)

// reverseShell correlates a socket duplicated onto a standard stream with
// a shell: either the shell itself wires its stdio to a socket (bash -i
// >& /dev/tcp/...), or a process does and then becomes, or starts, a
// shell (nc -e /bin/sh, python's dup2 + pty.spawn). State: the processes
// that dup'ed a socket onto stdio, bounded.
type reverseShell struct {
	base
	duped *lru[string] // process uuids with a socket on fd 0-2
	addr  map[string]string
}

func newReverseShell() Detector {
	return &reverseShell{
		base: base{name: "reverse-shell", scope: Both, kinds: []event.Kind{event.KindDup, event.KindExec, event.KindConnect},
			types: []string{"Execution:Runtime/ReverseShell"}},
		duped: newLRU[string](8192), addr: map[string]string{},
	}
}

func (d *reverseShell) Detect(ev *event.Event, hit func(Hit)) {
	p := &ev.Process
	switch ev.Kind {
	case event.KindConnect:
		// Where a process's connection went, for a shell it becomes.
		if n := ev.Net; n != nil && ev.Result == 0 && (n.Family == "inet" || n.Family == "inet6") && n.RemoteAddr != "" {
			d.remember(p.UUID, n.RemoteAddr)
		}
	case event.KindDup:
		// Only a network socket: a unix one on stdio is a service's
		// plumbing (socat between unix sockets, a supervisor).
		if n := ev.Net; ev.Result < 0 || n == nil || n.Family != "inet" && n.Family != "inet6" {
			return
		}
		if isShell(ev) && readsCommands(p.Args) {
			d.fire(ev, ev.Net, hit)
			return
		}
		d.duped.add(p.UUID)
		if r := remoteOf(ev.Net); r != "" {
			d.remember(p.UUID, r)
		}
	case event.KindExec:
		// A shell running a script or a -c command (a CGI, an inetd-style
		// service) is not taking its commands from the connection.
		if !isShell(ev) || !readsCommands(p.Args) {
			return
		}
		onNet := ev.Exec != nil && ev.Exec.StdioOnNetwork
		if !onNet && !d.duped.has(p.UUID) && (p.ParentUUID == "" || !d.duped.has(p.ParentUUID)) {
			return
		}
		n := &event.Net{RemoteAddr: d.addr[p.UUID]}
		if n.RemoteAddr == "" {
			n.RemoteAddr = d.addr[p.ParentUUID]
		}
		d.fire(ev, n, hit)
		d.duped.remove(p.UUID)
	}
}

func (d *reverseShell) remember(uuid, addr string) {
	if len(d.addr) > 8192 {
		d.addr = map[string]string{}
	}
	d.addr[uuid] = addr
}

// readsCommands reports whether a shell's arguments leave it reading its
// commands from its standard input: none but options, or -i / -s; not a
// script operand or -c.
func readsCommands(args []string) bool {
	if len(args) == 0 {
		return true
	}
	first := 1
	if b := path.Base(args[0]); (b == "busybox" || b == "toybox") && len(args) > 1 {
		first = 2 // busybox sh -i: the applet, then its arguments
	}
	for _, a := range args[first:] {
		switch {
		case a == "--":
			return false
		case strings.HasPrefix(a, "--"):
			continue // --norc, --login, ...
		case strings.HasPrefix(a, "-") || strings.HasPrefix(a, "+"):
			if strings.ContainsAny(a[1:], "is") {
				return true
			}
			if strings.Contains(a[1:], "c") {
				return false
			}
		default:
			return false // a script operand
		}
	}
	return true
}

func (d *reverseShell) fire(ev *event.Event, n *event.Net, hit func(Hit)) {
	ctx := map[string]any{"shell": ev.Process.Exe}
	key := ev.Process.Exe
	if r := remoteOf(n); r != "" {
		ctx["remoteAddress"] = r
		key = r // one finding per peer, not one per shell binary
	}
	hit(Hit{Type: "Execution:Runtime/ReverseShell", KeyActor: key, Context: ctx})
}

func remoteOf(n *event.Net) string {
	if n == nil || n.RemoteAddr == "" {
		return ""
	}
	return n.RemoteAddr
}

// shellFromService: a process that listens or accepted a connection
// starts an interactive shell (a web shell, a backdoored service). Login
// services exist to do exactly that and are excluded.
type shellFromService struct {
	base
	facing *lru[string]
}

var loginServices = map[string]bool{"sshd": true, "dropbear": true, "telnetd": true, "in.telnetd": true, "login": true,
	"agetty": true, "getty": true, "tmux": true, "screen": true, "xinetd": true, "systemd": true, "conmon": true, "containerd-shim": true,
	"containerd-shim-runc-v2": true, "runc": true, "podman": true}

func newShellFromService() Detector {
	return &shellFromService{
		base: base{name: "shell-from-service", scope: Both, kinds: []event.Kind{event.KindListen, event.KindAccept, event.KindExec},
			types: []string{"Execution:Runtime/SuspiciousShellCreated"}},
		facing: newLRU[string](8192),
	}
}

func (d *shellFromService) Detect(ev *event.Event, hit func(Hit)) {
	p := &ev.Process
	switch ev.Kind {
	case event.KindListen, event.KindAccept:
		if ev.Result >= 0 && !loginServices[path.Base(p.Exe)] && ev.Net != nil && ev.Net.Family != "unix" {
			d.facing.add(p.UUID)
		}
	case event.KindExec:
		if !isShell(ev) || !interactive(ev.Exec.Args) {
			return
		}
		if d.facing.has(p.UUID) || (p.ParentUUID != "" && d.facing.has(p.ParentUUID)) {
			parent := ""
			if len(p.Lineage) > 0 {
				parent = p.Lineage[0].Exe
			}
			hit(Hit{Type: "Execution:Runtime/SuspiciousShellCreated", KeyActor: parent + ">" + p.Exe,
				Context: map[string]any{"shell": p.Exe, "networkFacingProcess": parent}})
		}
	}
}

// interactive: a shell given no script to run.
func interactive(args []string) bool {
	for _, a := range args[1:] {
		if a == "-i" {
			return true
		}
		if len(a) > 1 && a[0] == '-' && a[1] != '-' {
			for _, c := range a[1:] {
				if c == 'c' {
					return false
				}
			}
			continue
		}
		return false // a script file
	}
	return true
}

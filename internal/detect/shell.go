package detect

import (
	"path"

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
		base:  base{name: "reverse-shell", scope: Both, kinds: []event.Kind{event.KindDup, event.KindExec}, types: []string{"Execution:Runtime/ReverseShell"}},
		duped: newLRU[string](8192), addr: map[string]string{},
	}
}

func (d *reverseShell) Detect(ev *event.Event, hit func(Hit)) {
	p := &ev.Process
	switch ev.Kind {
	case event.KindDup:
		if ev.Result < 0 || ev.Net == nil {
			return
		}
		if isShell(ev) {
			d.fire(ev, ev.Net, hit)
			return
		}
		d.duped.add(p.UUID)
		if len(d.addr) > 8192 {
			d.addr = map[string]string{}
		}
		d.addr[p.UUID] = remoteOf(ev.Net)
	case event.KindExec:
		if !isShell(ev) {
			return
		}
		if ev.Exec != nil && ev.Exec.StdioOnNetwork {
			// A shell whose input or output is a network connection from
			// its first instruction, with or without a dup we saw (a
			// close and a socket() that took the freed number).
			n := &event.Net{RemoteAddr: d.addr[p.UUID]}
			if n.RemoteAddr == "" {
				n.RemoteAddr = d.addr[p.ParentUUID]
			}
			d.fire(ev, n, hit)
			d.duped.remove(p.UUID)
			return
		}
		if d.duped.has(p.UUID) || (p.ParentUUID != "" && d.duped.has(p.ParentUUID)) {
			n := &event.Net{}
			if a := d.addr[p.UUID]; a != "" {
				n.RemoteAddr = a
			} else {
				n.RemoteAddr = d.addr[p.ParentUUID]
			}
			d.fire(ev, n, hit)
			d.duped.remove(p.UUID)
		}
	}
}

func (d *reverseShell) fire(ev *event.Event, n *event.Net, hit func(Hit)) {
	ctx := map[string]any{"shell": ev.Process.Exe}
	if r := remoteOf(n); r != "" {
		ctx["remoteAddress"] = r
	}
	hit(Hit{Type: "Execution:Runtime/ReverseShell", Context: ctx})
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

package event

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
)

// Summary is a one-line human description of the event for terminals.
// Every string in it is attacker-controlled, so non-printable characters
// are escaped: a process cannot rewrite the operator's terminal.
func (e *Event) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %-9s pid=%d", e.Time.Format("15:04:05.000"), e.Kind, e.Process.PID)
	if e.Container != nil {
		id := e.Container.ID
		if len(id) > 12 {
			id = id[:12]
		}
		fmt.Fprintf(&b, " ctr=%s", id)
	}
	fmt.Fprintf(&b, " %s", safe(e.Process.Comm))
	switch {
	case e.Exec != nil:
		fmt.Fprintf(&b, " exe=%s args=%s", safe(e.Exec.Path), safe(strings.Join(e.Exec.Args, " ")))
	case e.File != nil:
		fmt.Fprintf(&b, " path=%s", safe(e.File.Path))
		if e.File.NewPath != "" {
			fmt.Fprintf(&b, " new=%s", safe(e.File.NewPath))
		}
	case e.Net != nil:
		n := e.Net
		fmt.Fprintf(&b, " %s/%s", n.Family, n.Type)
		if n.RemoteAddr != "" || n.RemotePort != 0 {
			fmt.Fprintf(&b, " remote=%s:%d", n.RemoteAddr, n.RemotePort)
		}
		if n.LocalAddr != "" || n.LocalPort != 0 {
			fmt.Fprintf(&b, " local=%s:%d", n.LocalAddr, n.LocalPort)
		}
		if n.SocketPath != "" {
			fmt.Fprintf(&b, " path=%s", safe(n.SocketPath))
		}
	case e.DNS != nil:
		fmt.Fprintf(&b, " %s %s", e.DNS.Type, safe(e.DNS.Name))
		if e.DNS.Response {
			fmt.Fprintf(&b, " -> %s %s", e.DNS.RCode, safe(strings.Join(e.DNS.Answers, ",")))
		}
	case e.Mount != nil:
		fmt.Fprintf(&b, " %s on %s type %s", safe(e.Mount.Source), safe(e.Mount.Target), safe(e.Mount.FSType))
	case e.Access != nil:
		fmt.Fprintf(&b, " %s %s target=%d", e.Access.Op, e.Access.Request, e.Access.TargetPID)
	case e.Kind == KindExecHashed:
		fmt.Fprintf(&b, " %s sha256=%s", safe(e.Process.Exe), e.Process.ExeSHA256)
	case e.Container != nil && (e.Kind == KindContainerStart || e.Kind == KindContainerStop):
		fmt.Fprintf(&b, " name=%s image=%s", safe(e.Container.Name), safe(e.Container.Image))
	}
	if e.Result < 0 {
		fmt.Fprintf(&b, " = %s", e.Error)
	}
	return b.String()
}

// safe quotes s when it holds anything a terminal could interpret.
func safe(s string) string {
	for _, r := range s {
		if !unicode.IsPrint(r) || r == '"' {
			return strconv.Quote(s)
		}
	}
	if s == "" {
		return `""`
	}
	return s
}

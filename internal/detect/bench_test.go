package detect

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mamori-dev/mamori/internal/event"
	"github.com/mamori-dev/mamori/internal/finding"
)

// Engine throughput on one goroutine (the agent runs the engine on its
// dispatch goroutine): run with -cpu 1. The event mix follows what a busy
// node emits: opens dominate, execs are a few percent.

func benchEvents() []*event.Event {
	p := event.Process{PID: 10, UUID: "u", Exe: "/usr/bin/python3", Comm: "python3", Args: []string{"python3", "app.py"},
		Lineage: []event.Ancestor{{PID: 1, Name: "init", Exe: "/sbin/init"}, {PID: 5, Name: "sh", Exe: "/bin/sh"}}}
	c := &event.Container{ID: strings.Repeat("c", 64), Runtime: "containerd", Name: "app", Image: "registry.example/app:1"}
	var evs []*event.Event
	add := func(n int, ev event.Event) {
		for i := 0; i < n; i++ {
			e := ev
			e.Process, e.Container, e.Time = p, c, time.Unix(1, 0)
			evs = append(evs, &e)
		}
	}
	add(11, event.Event{Kind: event.KindOpen, File: &event.File{Path: "/usr/lib/python3/os.py"}})
	add(1, event.Event{Kind: event.KindExec, Exec: &event.Exec{Path: "/usr/bin/ls", Args: []string{"ls", "-la"}}})
	add(1, event.Event{Kind: event.KindFork, Fork: &event.Fork{ChildPID: 11}})
	add(1, event.Event{Kind: event.KindExit, Exit: &event.Exit{}})
	add(2, event.Event{Kind: event.KindConnect, Net: &event.Net{Family: "inet", RemoteAddr: "10.0.0.1", RemotePort: 5432}})
	add(1, event.Event{Kind: event.KindDNS, DNS: &event.DNS{Name: "db.internal.example", Type: "A"}})
	add(2, event.Event{Kind: event.KindMmap, Memory: &event.Memory{Path: "/usr/lib/libssl.so.3", Prot: "r-x"}})
	add(1, event.Event{Kind: event.KindSocket, Net: &event.Net{Family: "inet", Type: "stream"}})
	return evs
}

// rulesSrc makes 100 rules of the given style:
//   - listed: every rule lists its kinds;
//   - inferred: no kinds lists; conditions compare event.kind or read a part;
//   - process-only: conditions on the process alone, run on every event.
func rulesSrc(style string) string {
	var b strings.Builder
	b.WriteString("rules:\n")
	for i := 0; i < 100; i++ {
		fmt.Fprintf(&b, "  - id: r%d\n    type: Custom:Runtime/R%d\n", i, i)
		var cond string
		switch style {
		case "listed":
			b.WriteString("    kinds: [exec]\n")
			cond = fmt.Sprintf(`event.process.executablePath == "/opt/tool%d" && event.exec.args.size() > 1`, i)
		case "inferred":
			switch i % 4 {
			case 0:
				cond = fmt.Sprintf(`event.kind == "exec" && event.exec.args.exists(a, a == "--tool%d")`, i)
			case 1:
				cond = fmt.Sprintf(`event.dns.name.endsWith(".bad%d.example")`, i)
			case 2:
				cond = fmt.Sprintf(`event.kind in ["open", "rename"] && event.file.write && event.file.path.startsWith("/etc/app%d/")`, i)
			default:
				cond = fmt.Sprintf(`event.net.remotePort == %d && has(event.container)`, 40000+i)
			}
		default:
			cond = fmt.Sprintf(`event.process.name == "tool%d" && event.container.image.startsWith("registry.example/")`, i)
		}
		fmt.Fprintf(&b, "    condition: %q\n", cond)
	}
	return b.String()
}

func runEngineBench(b *testing.B, e *Engine) {
	evs := benchEvents()
	n := 0
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// A fresh event each time, as the pipeline delivers (no caching
		// across calls can help).
		ev := *evs[i%len(evs)]
		e.Process(&ev, func(*finding.Finding) { n++ })
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	if n != 0 {
		b.Fatalf("%d findings from a benign mix", n)
	}
}

func BenchmarkEngineBuiltin(b *testing.B) { runEngineBench(b, builtinEngine(b)) }

// BenchmarkEngineExec is the built-in detectors on an exec alone: what an
// exec storm costs the agent in detection.
func BenchmarkEngineExec(b *testing.B) {
	e := builtinEngine(b)
	ev := benchEvents()[11]
	if ev.Kind != event.KindExec {
		b.Fatalf("event 11 is %s", ev.Kind)
	}
	ev.Exec.Args = []string{"/usr/bin/python3", "/srv/app/main.py", "--port", "8080", "--workers", "4"}
	n := 0
	b.ReportAllocs()
	for b.Loop() {
		x := *ev
		e.Process(&x, func(*finding.Finding) { n++ })
	}
	if n != 0 {
		b.Fatalf("%d findings from a benign exec", n)
	}
}

func BenchmarkEngineWith100Rules(b *testing.B) {
	for _, style := range []string{"listed", "inferred", "process-only"} {
		b.Run(style, func(b *testing.B) {
			rs, err := ParseRules("bench.yaml", []byte(rulesSrc(style)))
			if err != nil {
				b.Fatal(err)
			}
			e := builtinEngine(b)
			for _, r := range rs {
				e.Add(r)
			}
			runEngineBench(b, e)
		})
	}
}

// BenchmarkEventMap is the per-event conversion rules pay once.
func BenchmarkEventMap(b *testing.B) {
	ev := benchEvents()[11] // the exec
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		EventMap(ev)
	}
}

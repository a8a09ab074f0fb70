// Package detect turns enriched events into findings. A Detector declares
// the event kinds it needs, its scope and the finding types it raises; the
// Engine routes each event only to the detectors that asked for its kind
// (a per-kind slice, built once), so a detector costs nothing on kinds it
// does not watch. Built-in detectors live one finding family per file;
// custom YAML rules with CEL conditions are detectors too (rules.go).
//
// The Engine is meant for one goroutine (the agent's dispatch goroutine):
// stateful detectors keep their bounded state without locks.
package detect

import (
	"log/slog"
	"path"
	"strings"
	"sync/atomic"

	"github.com/mamori-dev/mamori/internal/event"
	"github.com/mamori-dev/mamori/internal/finding"
)

// Scope says where a detector looks.
type Scope int

// Scopes.
const (
	Both Scope = iota
	ContainerOnly
	HostOnly
)

// Hit is what a detector reports; the engine turns it into a finding.
type Hit struct {
	Type string
	// KeyActor is the dedup key's actor (executable, domain, address,
	// file); empty means the acting executable.
	KeyActor string
	Context  map[string]any
	// Severity, Title and Description override the catalogue when set.
	Severity    float64
	Title       string
	Description string
	Evidence    []finding.ThreatIntel
	Rule        string
}

// Detector is one detection.
type Detector interface {
	Name() string
	Kinds() []event.Kind
	Scope() Scope
	// Types lists the finding types the detector may raise.
	Types() []string
	Detect(ev *event.Event, hit func(Hit))
}

const maxKind = 128

// Engine routes events to detectors.
type Engine struct {
	agent  finding.Agent
	log    *slog.Logger
	byKind [maxKind][]Detector
	all    []Detector

	events, hits atomic.Uint64
}

// NewEngine returns an engine over detectors, raising findings for agent.
func NewEngine(agent finding.Agent, log *slog.Logger, ds ...Detector) *Engine {
	if log == nil {
		log = slog.Default()
	}
	e := &Engine{agent: agent, log: log}
	for _, d := range ds {
		e.Add(d)
	}
	return e
}

// Add registers a detector.
func (e *Engine) Add(d Detector) {
	e.all = append(e.all, d)
	for _, k := range d.Kinds() {
		if int(k) < maxKind {
			e.byKind[k] = append(e.byKind[k], d)
		}
	}
}

// Detectors lists the registered detectors.
func (e *Engine) Detectors() []Detector { return e.all }

// Process runs the detectors that watch ev's kind and passes each finding
// to out.
func (e *Engine) Process(ev *event.Event, out func(*finding.Finding)) {
	e.events.Add(1)
	if int(ev.Kind) >= maxKind {
		return
	}
	ds := e.byKind[ev.Kind]
	if len(ds) == 0 {
		return
	}
	inCtr := ev.Container != nil
	if inCtr && isRuntimeInit(ev) {
		return
	}
	for _, d := range ds {
		switch d.Scope() {
		case ContainerOnly:
			if !inCtr {
				continue
			}
		case HostOnly:
			if inCtr {
				continue
			}
		}
		d.Detect(ev, func(h Hit) {
			e.hits.Add(1)
			out(e.build(d, ev, h))
		})
	}
}

// isRuntimeInit recognises the container runtime's own set-up process
// (runc init: mounts, pivot_root, /proc writes) before it executes the
// container's program. It needs both runc's process name and runc's image
// (runc runs from a sealed copy, which the kernel's path walk shows as "/"),
// so a container process renaming itself does not pass.
func isRuntimeInit(ev *event.Event) bool {
	p := &ev.Process
	if !strings.HasPrefix(p.Comm, "runc:[") {
		return false
	}
	return p.Exe == "/" || path.Base(p.Exe) == "runc" || strings.Contains(p.Exe, "runc_cloned")
}

func (e *Engine) build(d Detector, ev *event.Event, h Hit) *finding.Finding {
	f := finding.New(h.Type, ev, e.agent, h.KeyActor, h.Context)
	if h.Severity > 0 {
		f.Severity, f.SeverityLabel = h.Severity, finding.SeverityLabel(h.Severity)
	}
	if h.Title != "" {
		f.Title = h.Title
	}
	if h.Description != "" {
		f.Description = h.Description
	}
	if len(h.Evidence) > 0 {
		f.Service.Evidence = &finding.Evidence{ThreatIntelligenceDetails: h.Evidence}
	}
	if f.Service.Detector != nil {
		f.Service.Detector.Name = d.Name()
		f.Service.Detector.Rule = h.Rule
	}
	return f
}

// Stats are the engine's counters.
type Stats struct {
	Events uint64 `json:"events"`
	Hits   uint64 `json:"hits"`
}

// Stats returns the counters.
func (e *Engine) Stats() Stats { return Stats{Events: e.events.Load(), Hits: e.hits.Load()} }

// base carries the declarative parts of simple detectors.
type base struct {
	name  string
	kinds []event.Kind
	scope Scope
	types []string
}

func (b base) Name() string        { return b.name }
func (b base) Kinds() []event.Kind { return b.kinds }
func (b base) Scope() Scope        { return b.scope }
func (b base) Types() []string     { return b.types }

// fn is a stateless detector from a function.
type fn struct {
	base
	f func(ev *event.Event, hit func(Hit))
}

func (d fn) Detect(ev *event.Event, hit func(Hit)) { d.f(ev, hit) }

func newFn(name string, scope Scope, kinds []event.Kind, types []string, f func(*event.Event, func(Hit))) Detector {
	return fn{base: base{name: name, kinds: kinds, scope: scope, types: types}, f: f}
}

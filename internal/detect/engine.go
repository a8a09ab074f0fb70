// Package detect turns enriched events into findings.
//
// The contract for detector authors:
//
//   - A Detector declares the event kinds it needs (Kinds), where it looks
//     (Scope: containers, the host, or both) and the finding types it may
//     raise (Types). Severity, title, description, MITRE tactic and
//     technique and the allowed context keys of each type come from the
//     catalogue (finding.Catalogue, finding.Lookup): one place for
//     detectors, samples and the console.
//   - Detect gets each event of its kinds and scope and calls hit for each
//     finding: the type, the key actor that makes repeats "the same
//     activity" (finding.Key), context keyed as the catalogue declares,
//     and threat-intel evidence for intel types. Hit fields left empty
//     take the catalogue's values.
//   - Detectors may keep state across events (a reverse shell is a dup2
//     then an exec) but it must be bounded, with an eviction rule.
//   - Events are shared: a detector must not modify them or keep pointers
//     into them after Detect returns.
//
// The Engine routes each event only to the detectors that asked for its
// kind and scope (slices built once at Add; no reflection, maps or type
// switches per event). Custom YAML rules with CEL conditions (rules.go)
// are detectors too; the engine indexes them by the kinds their conditions
// can match, the event parts they need and the exact values, prefixes or
// suffixes they require, so a rule costs nothing on events it cannot
// match; SetRules and WatchRules replace them while the engine runs.
// Built-in detectors are listed in Builtin and live by behaviour family:
// intel.go (threat-intel IP, domain, hash), exec.go (new binaries,
// fileless, miners, tools, elevation), commands.go (the SuspiciousCommand
// families), shell.go (reverse and service shells), files.go (sensitive
// files, runc, release_agent, secrets), kernel.go (injection, modules,
// mounts, engine sockets, userfaultfd, libraries, raw sockets).
//
// An Engine is meant for one goroutine (the agent's dispatch goroutine):
// stateful detectors keep their state without locks. Stats may be read
// from any goroutine.
package detect

import (
	"fmt"
	"log/slog"
	"path"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/mamori-dev/mamori/internal/event"
	"github.com/mamori-dev/mamori/internal/finding"
)

// Scope says where a detector looks.
type Scope int

// Scopes.
const (
	Both          Scope = iota // containers and the host
	ContainerOnly              // events with a container
	HostOnly                   // events without one
)

func (s Scope) String() string {
	switch s {
	case ContainerOnly:
		return "container"
	case HostOnly:
		return "host"
	}
	return "both"
}

// Hit is what a detector reports; the engine turns it into a finding.
type Hit struct {
	// Type is one of the detector's Types.
	Type string
	// KeyActor is the dedup key's actor (executable, domain, address,
	// file); empty means the acting executable. See finding.Key.
	KeyActor string
	// Context is service.runtimeDetails.context, keyed as the catalogue
	// declares for Type (finding.Kind.Context plus finding.CommonContext).
	Context map[string]any
	// Severity, Title and Description override the catalogue when set.
	Severity    float64
	Title       string
	Description string
	// Evidence is the threat intel that matched, for intel types.
	Evidence []finding.ThreatIntel
	// Rule is the custom rule's id when a rule raised the hit.
	Rule string
}

// Detector is one detection; see the package comment for the contract.
type Detector interface {
	// Name identifies the detector in findings (service.detector.name),
	// logs and stats.
	Name() string
	// Kinds are the event kinds Detect is called for.
	Kinds() []event.Kind
	// Scope limits Detect to container or host events.
	Scope() Scope
	// Types lists the finding types the detector may raise; each is a
	// catalogue type or Custom:Runtime/<Name>.
	Types() []string
	// Detect examines one event and calls hit for each finding.
	Detect(ev *event.Event, hit func(Hit))
}

// maxKind bounds the kinds the engine routes (event kinds are below 128).
const maxKind = 128

// Engine routes events to detectors.
type Engine struct {
	agent finding.Agent
	log   *slog.Logger
	// host and ctr are the detectors per kind for host and container
	// events, scope already applied.
	host, ctr [maxKind][]*entry
	all       []*entry

	// Custom rules, each in one bucket: by the value of an indexed field
	// when its condition requires one; else by kind for rules with a kind
	// constraint or no part requirement; else by the first part they need.
	rulesByKind  [maxKind][]*Rule
	rulesByPart  [16][]*Rule
	rulesByValue []*valueIndex // per indexedFields entry
	rules        []*Rule
	scratch      []*Rule   // candidates from the value index, reused
	input        ruleInput // the rules' view of the current event, reused

	cur     current
	onHit   func(Hit)
	pending atomic.Pointer[[]*Rule] // a rule set handed over by SetRules
	snap    atomic.Pointer[[]*Rule] // the current rules, for Stats from other goroutines

	events, hits, panics atomic.Uint64
}

// entry is a registered detector with its own counters.
type entry struct {
	d          Detector
	hits       atomic.Uint64
	panics     atomic.Uint64
	panicShown atomic.Bool
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

// Add registers a detector. It is not safe to call during Process.
func (e *Engine) Add(d Detector) {
	if r, ok := d.(*Rule); ok {
		e.addRule(r)
		return
	}
	en := &entry{d: d}
	e.all = append(e.all, en)
	sc := d.Scope()
	for _, k := range dedupKinds(d.Kinds()) {
		if int(k) >= maxKind {
			continue
		}
		if sc != ContainerOnly {
			e.host[k] = append(e.host[k], en)
		}
		if sc != HostOnly {
			e.ctr[k] = append(e.ctr[k], en)
		}
	}
}

func dedupKinds(ks []event.Kind) []event.Kind {
	seen := map[event.Kind]bool{}
	var out []event.Kind
	for _, k := range ks {
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	return out
}

func (e *Engine) addRule(r *Rule) {
	e.rules = append(e.rules, r)
	snap := append([]*Rule(nil), e.rules...)
	e.snap.Store(&snap)
	if r.index >= 0 {
		if e.rulesByValue == nil {
			e.rulesByValue = make([]*valueIndex, len(indexedFields))
		}
		if e.rulesByValue[r.index] == nil {
			e.rulesByValue[r.index] = &valueIndex{}
		}
		e.rulesByValue[r.index].add(r)
		return
	}
	if p := firstPayload(r.needs); r.kinds.isAll() && p >= 0 {
		e.rulesByPart[p] = append(e.rulesByPart[p], r)
		return
	}
	for k := event.Kind(0); k < maxKind; k++ {
		if r.kinds.has(k) {
			e.rulesByKind[k] = append(e.rulesByKind[k], r)
		}
	}
}

// Detectors lists the registered detectors, rules last.
func (e *Engine) Detectors() []Detector {
	out := make([]Detector, 0, len(e.all)+len(e.rules))
	for _, en := range e.all {
		out = append(out, en.d)
	}
	for _, r := range e.rules {
		out = append(out, r)
	}
	return out
}

// SetRules replaces the engine's custom rules with rs. It is safe to call
// from any goroutine while another runs Process: the new set takes effect
// at the next event, and the built-in detectors are untouched.
func (e *Engine) SetRules(rs []*Rule) {
	c := append([]*Rule(nil), rs...)
	e.pending.Store(&c)
}

func (e *Engine) replaceRules(rs []*Rule) {
	e.rules, e.rulesByValue = nil, nil
	e.snap.Store(&[]*Rule{})
	e.rulesByKind = [maxKind][]*Rule{}
	e.rulesByPart = [16][]*Rule{}
	for _, r := range rs {
		e.addRule(r)
	}
}

// Rules lists the registered custom rules.
func (e *Engine) Rules() []*Rule { return e.rules }

// Process runs the detectors and rules that watch ev's kind and scope and
// passes each finding to out (which must not call Process again). A
// detector that panics is contained: the panic is counted and logged once
// per detector, and the others still run.
func (e *Engine) Process(ev *event.Event, out func(*finding.Finding)) {
	e.events.Add(1)
	if rs := e.pending.Swap(nil); rs != nil {
		e.replaceRules(*rs)
	}
	k := ev.Kind
	if int(k) >= maxKind {
		return
	}
	inCtr := ev.Container != nil
	if inCtr && isRuntimeInit(ev) {
		return
	}
	ds := e.host[k]
	if inCtr {
		ds = e.ctr[k]
	}
	if e.onHit == nil {
		e.onHit = e.hit
	}
	e.cur = current{ev: ev, out: out}
	for _, en := range ds {
		e.run(en)
	}
	e.runRules()
	e.cur = current{}
}

// current is what the hit callback needs; kept in the engine so that the
// callback is one method value bound once, not a closure per call.
type current struct {
	ev  *event.Event
	out func(*finding.Finding)
	en  *entry // the detector running, or nil for a rule
	r   *Rule
}

func (e *Engine) hit(h Hit) {
	e.hits.Add(1)
	name := ""
	if en := e.cur.en; en != nil {
		en.hits.Add(1)
		name = en.d.Name()
	} else if e.cur.r != nil {
		name = e.cur.r.Name()
	}
	e.cur.out(e.build(name, e.cur.ev, h))
}

func (e *Engine) run(en *entry) {
	defer e.contain(en.d.Name, en)
	e.cur.en, e.cur.r = en, nil
	en.d.Detect(e.cur.ev, e.onHit)
}

// contain turns a detector's or rule's panic into a counted, logged skip.
func (e *Engine) contain(name func() string, en *entry) {
	if p := recover(); p != nil {
		e.panics.Add(1)
		if en != nil {
			en.panics.Add(1)
			if en.panicShown.Swap(true) {
				return
			}
		}
		e.log.Error("detector panicked; event skipped", "detector", name(), "kind", e.cur.ev.Kind.String(), "panic", fmt.Sprint(p))
	}
}

func (e *Engine) runRules() {
	ev := e.cur.ev
	byKind := e.rulesByKind[ev.Kind]
	if len(byKind) == 0 && len(e.rules) == len(byKind) {
		return
	}
	defer e.contain(func() string { return "custom rules" }, nil)
	present := partsOf(ev)
	in := &e.input
	in.reset(ev)
	emit := func(r *Rule) {
		e.cur.en, e.cur.r = nil, r
		r.eval(in, present, e.onHit)
	}
	for _, r := range byKind {
		emit(r)
	}
	for p := present &^ containerPart; p != 0; p &= p - 1 {
		for _, r := range e.rulesByPart[firstPayload(p)] {
			if r.kinds.has(ev.Kind) {
				emit(r)
			}
		}
	}
	for i, vi := range e.rulesByValue {
		if vi == nil {
			continue
		}
		cands := e.scratch[:0]
		add := func(r *Rule) {
			// A rule can be reached through two of its values
			// (prefixes /etc/ and /etc/ssh/, two args): it runs once.
			if r.kinds.has(ev.Kind) && !slices.Contains(cands, r) {
				cands = append(cands, r)
			}
		}
		if f := indexedFields[i]; f.list != nil {
			vs, _ := f.list(ev)
			for _, v := range vs {
				vi.lookup(v, add)
			}
		} else if v, ok := f.get(ev); ok {
			vi.lookup(v, add)
		}
		for _, r := range cands {
			emit(r)
		}
		e.scratch = cands[:0]
	}
	in.reset(nil)
}

// valueIndex finds the rules whose exact value, prefix or suffix fits a
// field's value: a map probe per distinct prefix or suffix length.
type valueIndex struct {
	exact, prefix, suffix  map[string][]*Rule
	prefixLens, suffixLens []int
}

func (vi *valueIndex) add(r *Rule) {
	m, lens := &vi.exact, (*[]int)(nil)
	switch r.cons.mode {
	case prefix:
		m, lens = &vi.prefix, &vi.prefixLens
	case suffix:
		m, lens = &vi.suffix, &vi.suffixLens
	}
	if *m == nil {
		*m = map[string][]*Rule{}
	}
	for _, v := range r.cons.vals {
		(*m)[v] = append((*m)[v], r)
		if lens != nil && !slices.Contains(*lens, len(v)) {
			*lens = append(*lens, len(v))
			slices.Sort(*lens)
		}
	}
}

func (vi *valueIndex) lookup(v string, f func(*Rule)) {
	for _, r := range vi.exact[v] {
		f(r)
	}
	for _, n := range vi.prefixLens {
		if n > len(v) {
			break
		}
		for _, r := range vi.prefix[v[:n]] {
			f(r)
		}
	}
	for _, n := range vi.suffixLens {
		if n > len(v) {
			break
		}
		for _, r := range vi.suffix[v[len(v)-n:]] {
			f(r)
		}
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

func (e *Engine) build(name string, ev *event.Event, h Hit) *finding.Finding {
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
		f.Service.Detector.Name = name
		f.Service.Detector.Rule = h.Rule
	}
	return f
}

// Stats are the engine's counters.
type Stats struct {
	Events    uint64          `json:"events"`
	Hits      uint64          `json:"hits"`
	Panics    uint64          `json:"panics"`
	Detectors []DetectorStats `json:"detectors"`
}

// DetectorStats are one detector's or rule's counters.
type DetectorStats struct {
	Name   string     `json:"name"`
	Hits   uint64     `json:"hits"`
	Panics uint64     `json:"panics,omitempty"`
	Rule   *RuleStats `json:"rule,omitempty"`
}

// Stats returns the counters.
func (e *Engine) Stats() Stats {
	s := Stats{Events: e.events.Load(), Hits: e.hits.Load(), Panics: e.panics.Load()}
	for _, en := range e.all {
		s.Detectors = append(s.Detectors, DetectorStats{Name: en.d.Name(), Hits: en.hits.Load(), Panics: en.panics.Load()})
	}
	var rules []*Rule
	if p := e.snap.Load(); p != nil {
		rules = *p
	}
	for _, r := range rules {
		rs := r.Stats()
		s.Detectors = append(s.Detectors, DetectorStats{Name: r.Name(), Hits: rs.Matches, Rule: &rs})
	}
	return s
}

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

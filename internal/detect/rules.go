package detect

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync/atomic"
	"text/template"
	"unicode"
	"unicode/utf8"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/checker"
	"github.com/google/cel-go/interpreter"
	"gopkg.in/yaml.v3"

	"github.com/mamori-dev/mamori/internal/event"
	"github.com/mamori-dev/mamori/internal/finding"
)

// Custom rules are YAML files of CEL conditions over the event, as its
// JSON looks in `mamori events --json` (see EventMap for the details):
//
//	rules:
//	  - id: netcat-listener                      # unique in its file
//	    type: Custom:Runtime/NetcatListener      # or a catalogue type
//	    severity: Medium                         # Low|Medium|High or 0.1-10; default: the type's
//	    title: "netcat listening in {{.container.name}}"
//	    description: "{{.process.executablePath}} listens on port {{.net.localPort}}"
//	    dedupKey: "{{.net.localPort}}"           # optional: what makes two matches the same finding
//	    kinds: [listen]                          # optional: evaluate only on these kinds
//	    condition: event.process.name in ["nc", "ncat"]
//	    disabled: false
//
// A rule that lists exec and reads event.process.executableSha256 also
// runs on exec_hashed, the event carrying a hash known only after the exec
// went out (a binary that exited before it was hashed).
//
// Titles, descriptions and dedup keys are text/template over the same
// map; a part the event lacks renders empty. Rendered text is attacker
// data: control characters are escaped. They may test and pick values
// (if, with, eq, index, len, print...), not loop or call sub-templates
// (ruletemplate.go); a condition's worst-case cost is bounded at load.
//
// Cost: a rule runs only on the kinds it can match — `kinds:` when given,
// narrowed by the condition's comparisons of event.kind — and only when
// the event has the parts the condition cannot match without (a condition
// reading event.dns.name skips every event without a DNS part, before the
// event is converted). A condition that requires an exact value, a prefix
// or a suffix of the process name or executable, the file path, the
// domain or the image (`event.process.name in ["nc", "ncat"] && ...`,
// `event.dns.name.endsWith(".example")`) is indexed by it: it runs only on
// events whose value fits. The event is converted lazily, once for all rules.
//
// A malformed rule is refused with its file, line and reason; the other
// rules of the file keep loading.

var ruleKeys = []string{"id", "type", "severity", "title", "description", "dedupKey", "kinds", "condition", "disabled"}

type ruleSpec struct {
	ID          string   `yaml:"id"`
	Type        string   `yaml:"type"`
	Severity    string   `yaml:"severity"`
	Title       string   `yaml:"title"`
	Description string   `yaml:"description"`
	DedupKey    string   `yaml:"dedupKey"`
	Kinds       []string `yaml:"kinds"`
	Condition   string   `yaml:"condition"`
	Disabled    bool     `yaml:"disabled"`
}

// Rule is a compiled custom rule. It is a Detector; an Engine indexes it
// by kind and required parts instead of routing it like other detectors.
type Rule struct {
	spec     ruleSpec
	file     string
	line     int
	kinds    kindSet
	kindList []event.Kind
	needs    part       // parts the condition cannot match without
	index    int        // indexedFields position the rule is indexed on, or -1
	cons     constraint // what the indexed field must meet
	intel    bool       // the type is a threat-intel type: findings carry evidence
	severity float64
	prg      cel.Program
	title    *template.Template
	desc     *template.Template
	dedup    *template.Template

	evals, matches, errs atomic.Uint64
	lastErr              atomic.Pointer[string]
}

var celEnv = func() *cel.Env {
	env, err := cel.NewEnv(
		cel.Variable("event", cel.MapType(cel.StringType, cel.DynType)),
		cel.ParserExpressionSizeLimit(16<<10),
	)
	if err != nil {
		panic(fmt.Sprintf("CEL environment: %v", err)) // static declaration; cannot fail at run time
	}
	return env
}()

// maxRuleCost bounds a condition's worst-case CEL cost, estimated at load
// with sizeBounds: a rule runs on the agent's one dispatch goroutine and
// must not be able to stall it. The estimate is pessimistic (every string
// at its cap, argv at its most elements): one loop over args with string
// tests passes; loops nested over args are refused. It is the only bound:
// cel-go's run-time cost limit tracks lists at a cost quadratic in their
// length (10,000 args: 415 ms against 1.8 ms without it).
const maxRuleCost = 1_000_000_000

// sizeBounds gives the cost estimator the largest sizes event values take:
// lineage is capped by the process table, argv by the sensor's buffer
// (4,096 bytes, so up to 4,096 empty arguments).
type sizeBounds struct{}

func (sizeBounds) EstimateSize(n checker.AstNode) *checker.SizeEstimate {
	max := uint64(4096) // strings, argv, and anything else
	if p := n.Path(); len(p) > 0 {
		switch p[len(p)-1] {
		case "lineage":
			max = 16
		case "answers", "flags", "labels":
			max = 512
		}
	}
	return &checker.SizeEstimate{Min: 0, Max: max}
}

func (sizeBounds) EstimateCallCost(string, string, *checker.AstNode, []checker.AstNode) *checker.CallEstimate {
	return nil
}

// ParseRules compiles the rules in data; name is the file name used in
// errors, which read "name:line: rule "id": reason".
func ParseRules(name string, data []byte) ([]*Rule, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
		return nil, nil // empty file
	} else if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	// A second document would be dropped without a word.
	for {
		var more yaml.Node
		err := dec.Decode(&more)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if len(more.Content) > 0 && more.Content[0].Tag != "!!null" {
			return nil, fmt.Errorf("%s:%d: one YAML document per rules file (found another after \"---\")", name, more.Content[0].Line)
		}
	}
	if len(doc.Content) == 0 {
		return nil, nil // empty file
	}
	top := doc.Content[0]
	if top.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s:%d: want a mapping with a rules: list", name, top.Line)
	}
	var list *yaml.Node
	for i := 0; i+1 < len(top.Content); i += 2 {
		if k := top.Content[i]; k.Value == "rules" {
			if list != nil {
				return nil, fmt.Errorf("%s:%d: rules: given twice (the first list would be dropped)", name, k.Line)
			}
			list = top.Content[i+1]
		} else {
			return nil, fmt.Errorf("%s:%d: unknown key %q (want rules:)", name, k.Line, clip(k.Value))
		}
	}
	if list == nil || list.Tag == "!!null" {
		return nil, nil
	}
	if list.Kind != yaml.SequenceNode {
		return nil, fmt.Errorf("%s:%d: rules: want a list", name, list.Line)
	}
	var out []*Rule
	var errs []error
	ids := map[string]int{}
	for _, n := range list.Content {
		r, err := parseRule(name, n, ids)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if r != nil {
			out = append(out, r)
		}
	}
	return out, errors.Join(errs...)
}

// parseRule compiles one rule node; it returns nil, nil for a disabled rule.
func parseRule(file string, n *yaml.Node, ids map[string]int) (*Rule, error) {
	where := func(line int) string { return file + ":" + strconv.Itoa(line) }
	if n.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s: a rule must be a mapping", where(n.Line))
	}
	var s ruleSpec
	if err := n.Decode(&s); err != nil {
		return nil, fmt.Errorf("%s: %w", where(n.Line), err)
	}
	fail := func(line int, format string, args ...any) error {
		return fmt.Errorf("%s: rule %q: %s", where(line), clip(s.ID), fmt.Sprintf(format, args...))
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := n.Content[i]; !contains(ruleKeys, k.Value) {
			return nil, fail(k.Line, "unknown key %q (known: %s)", clip(k.Value), strings.Join(ruleKeys, ", "))
		}
	}
	if s.ID == "" {
		return nil, fail(n.Line, "id is required")
	}
	if prev, dup := ids[s.ID]; dup {
		return nil, fail(n.Line, "id already used at line %d", prev)
	}
	ids[s.ID] = n.Line
	if s.Disabled {
		return nil, nil
	}
	r, line, err := compileRule(s, keyLine(n))
	if err != nil {
		return nil, fail(line, "%v", err)
	}
	r.file, r.line = file, n.Line
	return r, nil
}

// keyLine returns the line of a key's value in a rule, or the rule's
// line; for a block scalar (condition: |) the line its text starts on.
func keyLine(n *yaml.Node) func(key string) int {
	return func(key string) int {
		for i := 0; i+1 < len(n.Content); i += 2 {
			if v := n.Content[i+1]; n.Content[i].Value == key {
				if v.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 {
					return v.Line + 1
				}
				return v.Line
			}
		}
		return n.Line
	}
}

func compileRule(s ruleSpec, line func(string) int) (*Rule, int, error) {
	if _, known := finding.Lookup(s.Type); !known && !validCustomType(s.Type) {
		return nil, line("type"), fmt.Errorf("type %q is neither a catalogue type nor Custom:Runtime/<Name>", clip(s.Type))
	}
	r := &Rule{spec: s}
	if k, ok := finding.Lookup(s.Type); ok {
		r.intel = k.Intel
	}
	sev, err := parseSeverity(s.Severity, s.Type)
	if err != nil {
		return nil, line("severity"), err
	}
	r.severity = sev
	listed := allKinds()
	if len(s.Kinds) > 0 {
		listed = kindSet{}
		for _, k := range s.Kinds {
			kind, err := event.ParseKind(k)
			if err != nil {
				return nil, line("kinds"), fmt.Errorf("kinds: %w", err)
			}
			listed.add(kind)
		}
	}
	if strings.TrimSpace(s.Condition) == "" {
		return nil, line("condition"), errors.New("condition is required")
	}
	ast, iss := celEnv.Compile(s.Condition)
	if iss != nil && iss.Err() != nil {
		// Point at the condition's own line and column in the file.
		e := iss.Errors()[0]
		l, col := line("condition"), 0
		if loc := e.Location; loc != nil && loc.Line() > 0 {
			l, col = l+loc.Line()-1, loc.Column()+1
		}
		more := ""
		if n := len(iss.Errors()); n > 1 {
			more = fmt.Sprintf(" (and %d more)", n-1)
		}
		return nil, l, fmt.Errorf("condition, column %d: %s%s", col, e.Message, more)
	}
	if t := ast.OutputType(); t != cel.BoolType && t != cel.DynType {
		return nil, line("condition"), fmt.Errorf("condition yields %s, want bool", t)
	}
	root := ast.NativeRep().Expr()
	if err := checkFields(root, false); err != nil {
		return nil, line("condition"), fmt.Errorf("condition: %w", err)
	}
	f, err := analyse(root)
	if err != nil {
		return nil, line("condition"), fmt.Errorf("condition: %w", err)
	}
	r.kinds = listed.and(f.kinds)
	// A hash rule listing exec must also see the late hash of an exec
	// (exec_hashed): a binary gone before it was hashed is known only then.
	if len(s.Kinds) > 0 && listed.has(event.KindExec) && f.kinds.has(event.KindExecHashed) && readsExeHash(root) {
		r.kinds.add(event.KindExecHashed)
	}
	r.kindList = r.kinds.known()
	if len(r.kindList) == 0 {
		return nil, line("condition"), errors.New("condition can never be true on the kinds the rule lists")
	}
	r.needs = f.notTrue
	r.index = -1
	for i := range indexedFields {
		c, ok := f.idx[i]
		if !ok {
			continue
		}
		if c.mode == exact && len(c.vals) == 0 {
			return nil, line("condition"), fmt.Errorf("condition can never be true: event.%s cannot equal all the values it is compared with",
				indexedFields[i].path)
		}
		if r.index < 0 || c.mode < r.cons.mode {
			r.index, r.cons = i, c
		}
	}
	if est, err := celEnv.EstimateCost(ast, sizeBounds{}); err == nil && est.Max > maxRuleCost {
		return nil, line("condition"), fmt.Errorf("condition's worst-case cost %d exceeds %d: loops nested over event lists?", est.Max, maxRuleCost)
	}
	if r.prg, err = celEnv.Program(ast, cel.EvalOptions(cel.OptOptimize)); err != nil {
		return nil, line("condition"), fmt.Errorf("condition: %w", err)
	}
	if s.Title == "" {
		s.Title = s.ID
	}
	for _, t := range []struct {
		key, src string
		dst      **template.Template
	}{{"title", s.Title, &r.title}, {"description", s.Description, &r.desc}, {"dedupKey", s.DedupKey, &r.dedup}} {
		if *t.dst, err = parseRuleTemplate(t.key, t.src); err != nil {
			return nil, line(t.key), fmt.Errorf("%s template: %w", t.key, err)
		}
	}
	r.spec = s
	return r, 0, nil
}

func parseSeverity(s, typ string) (float64, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "":
		if k, ok := finding.Lookup(typ); ok {
			return k.Severity, nil
		}
		return finding.Medium, nil
	case "low":
		return finding.Low, nil
	case "medium":
		return finding.Medium, nil
	case "high":
		return finding.High, nil
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || v < 0.1 || v > 10 {
		return 0, fmt.Errorf("severity %q: want Low, Medium, High or a number in 0.1-10", clip(s))
	}
	return v, nil
}

// validCustomType: Custom:Runtime/ and a name of letters, digits, '.',
// '_', '-' or '!'.
func validCustomType(t string) bool {
	name, ok := strings.CutPrefix(t, "Custom:Runtime/")
	if !ok || name == "" || len(name) > 128 {
		return false
	}
	for _, c := range name {
		if !(unicode.IsLetter(c) || unicode.IsDigit(c) || strings.ContainsRune("._-!", c)) {
			return false
		}
	}
	return true
}

// Name implements Detector.
func (r *Rule) Name() string { return "rule:" + r.spec.ID }

// Kinds implements Detector: the kinds the rule can match.
func (r *Rule) Kinds() []event.Kind { return r.kindList }

// Scope implements Detector: conditions test event.container themselves.
func (r *Rule) Scope() Scope { return Both }

// Types implements Detector.
func (r *Rule) Types() []string { return []string{r.spec.Type} }

// ID is the rule's id.
func (r *Rule) ID() string { return r.spec.ID }

// Where is the rule's file:line.
func (r *Rule) Where() string { return r.file + ":" + strconv.Itoa(r.line) }

// Index describes the rule's index: the field, how it is matched
// ("exact", "prefix" or "suffix") and the values; "" when not indexed.
func (r *Rule) Index() (field, mode string, values []string) {
	if r.index < 0 {
		return "", "", nil
	}
	return indexedFields[r.index].path, [...]string{"exact", "prefix", "suffix"}[r.cons.mode], r.cons.vals
}

// Needs names the event parts the rule cannot match without.
func (r *Rule) Needs() []string {
	var out []string
	for i, n := range partNames {
		if r.needs&(1<<i) != 0 {
			out = append(out, n)
		}
	}
	return out
}

// Detect implements Detector, for a rule used on its own; an Engine
// evaluates rules through its index instead.
func (r *Rule) Detect(ev *event.Event, hit func(Hit)) {
	if r.kinds.has(ev.Kind) {
		r.eval(&ruleInput{ev: ev}, partsOf(ev), hit)
	}
}

// Evaluate reports whether the rule matches ev.
func (r *Rule) Evaluate(ev *event.Event) bool {
	matched := false
	r.Detect(ev, func(Hit) { matched = true })
	return matched
}

// RuleStats are a rule's counters.
type RuleStats struct {
	Evaluations uint64 `json:"evaluations"`
	Matches     uint64 `json:"matches"`
	// Errors counts evaluations that failed, most often a field the
	// event lacks (a pod on a plain container); LastError says which.
	Errors    uint64 `json:"errors"`
	LastError string `json:"lastError,omitempty"`
}

// Stats returns the rule's counters.
func (r *Rule) Stats() RuleStats {
	s := RuleStats{Evaluations: r.evals.Load(), Matches: r.matches.Load(), Errors: r.errs.Load()}
	if p := r.lastErr.Load(); p != nil {
		s.LastError = *p
	}
	return s
}

// ruleInput is one event's view for rules, shared by every rule that runs
// on the event: the CEL activation, whose `event` converts parts on first
// use, and the whole map for templates when a rule matches.
type ruleInput struct {
	ev   *event.Event
	m    map[string]any
	lazy *lazyEvent
}

// reset points the input at a new event, keeping its allocations.
func (in *ruleInput) reset(ev *event.Event) {
	in.ev, in.m = ev, nil
	if in.lazy != nil {
		in.lazy.ev = ev
		clear(in.lazy.parts)
		in.lazy.full = nil
	}
}

func (in *ruleInput) eventMap() map[string]any {
	if in.m == nil {
		in.m = EventMap(in.ev)
	}
	return in.m
}

// ResolveName implements interpreter.Activation.
func (in *ruleInput) ResolveName(name string) (any, bool) {
	if name == "event" {
		if in.lazy == nil {
			in.lazy = newLazyEvent(in.ev)
		}
		return in.lazy, true
	}
	return nil, false
}

// Parent implements interpreter.Activation.
func (in *ruleInput) Parent() interpreter.Activation { return nil }

func (r *Rule) eval(in *ruleInput, present part, hit func(Hit)) {
	if present&r.needs != r.needs {
		return
	}
	r.evals.Add(1)
	out, _, err := r.prg.Eval(in)
	if err != nil {
		r.errs.Add(1)
		msg := err.Error()
		r.lastErr.Store(&msg)
		return
	}
	if ok, _ := out.Value().(bool); !ok {
		return
	}
	r.matches.Add(1)
	m := in.eventMap()
	data := templateData(m)
	h := Hit{Type: r.spec.Type, Severity: r.severity, Rule: r.spec.ID,
		Title: render(r.title, data), Description: render(r.desc, data), KeyActor: render(r.dedup, data),
		Context: map[string]any{"ruleId": r.spec.ID}}
	// What the event was about (the file, address, query...): the process
	// and container are in the finding already.
	matched := map[string]any{"kind": m["kind"]}
	for _, p := range partNames {
		if v, ok := m[p]; ok && p != "container" {
			matched[p] = v
		}
	}
	h.Context["event"] = matched
	if h.Title == "" {
		h.Title = r.spec.ID
	}
	if h.Description == "" {
		h.Description = "Custom rule " + r.spec.ID + " matched."
	}
	if r.intel {
		// A rule naming a threat-intel type is the user's own list.
		h.Evidence = []finding.ThreatIntel{{ThreatListName: "rule:" + r.spec.ID, ThreatNames: []string{h.Title}, Indicator: h.KeyActor}}
	}
	hit(h)
}

// templateData adds empty maps for the parts the event lacks, so that
// {{.container.name}} renders empty on the host instead of failing.
func templateData(m map[string]any) map[string]any {
	d := make(map[string]any, len(m)+len(partNames))
	for _, n := range partNames {
		d[n] = map[string]any{}
	}
	for k, v := range m {
		d[k] = v
	}
	return d
}

const maxRendered = 1024

// escapeControl quotes control characters and invalid UTF-8 (runtime
// strings are attacker data and titles end up in terminals) and clips to
// max bytes.
func escapeControl(s string, max int) string {
	var b strings.Builder
	for i, c := range s {
		if b.Len() >= max {
			b.WriteString("…")
			break
		}
		switch {
		case c == utf8.RuneError && !strings.HasPrefix(s[i:], "\uFFFD"):
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case unicode.IsControl(c) || c == '\u2028' || c == '\u2029' || unicode.Is(unicode.Bidi_Control, c):
			q := strconv.QuoteRune(c)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteRune(c)
		}
	}
	return b.String()
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

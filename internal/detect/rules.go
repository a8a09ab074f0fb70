package detect

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/template"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/interpreter"
	"gopkg.in/yaml.v3"

	"github.com/mamori-dev/mamori/internal/event"
	"github.com/mamori-dev/mamori/internal/finding"
)

// Custom rules are YAML files of CEL conditions over the event, as its
// JSON looks in `mamori events --json`:
//
//	rules:
//	  - id: netcat-listener
//	    type: Custom:Runtime/NetcatListener     # or a catalogue type
//	    severity: Medium                         # Low|Medium|High or 0.1-10
//	    title: "netcat listening in {{.container.name}}"
//	    description: "{{.process.executablePath}} listens on port {{.net.localPort}}"
//	    kinds: [listen]                          # optional: evaluate only on these kinds
//	    condition: event.process.name in ["nc", "ncat"]
//
// A malformed rule is refused with its file, line and reason; the others
// keep loading.

type ruleFile struct {
	Rules []yaml.Node `yaml:"rules"`
}

type ruleSpec struct {
	ID          string   `yaml:"id"`
	Type        string   `yaml:"type"`
	Severity    string   `yaml:"severity"`
	Title       string   `yaml:"title"`
	Description string   `yaml:"description"`
	Kinds       []string `yaml:"kinds"`
	Condition   string   `yaml:"condition"`
	Disabled    bool     `yaml:"disabled"`
}

// Rule is a compiled custom rule; it is a Detector.
type Rule struct {
	spec     ruleSpec
	where    string
	kinds    []event.Kind
	severity float64
	prg      cel.Program
	title    *template.Template
	desc     *template.Template
	cache    *eventCache
}

// eventCache converts each event to its map once for all the rules of a
// file. Rules run on the engine's one goroutine; holding the event
// pointer keeps its address from being reused by a later event.
type eventCache struct {
	ev  *event.Event
	m   map[string]any
	act interpreter.Activation
}

func (c *eventCache) get(ev *event.Event) (map[string]any, interpreter.Activation) {
	if c.ev != ev {
		c.ev, c.m, c.act = ev, eventMap(ev), nil
		if c.m != nil {
			c.act, _ = interpreter.NewActivation(map[string]any{"event": c.m})
		}
	}
	return c.m, c.act
}

var celEnv = func() *cel.Env {
	env, err := cel.NewEnv(cel.Variable("event", cel.MapType(cel.StringType, cel.DynType)))
	if err != nil {
		panic(fmt.Sprintf("CEL environment: %v", err)) // static declaration; cannot fail at run time
	}
	return env
}()

// LoadRulesDir loads every *.yaml/*.yml file in dir. It returns the rules
// that compiled and an error listing those that did not.
func LoadRulesDir(dir string) ([]Detector, error) {
	var files []string
	for _, pat := range []string{"*.yaml", "*.yml"} {
		m, _ := filepath.Glob(filepath.Join(dir, pat))
		files = append(files, m...)
	}
	sort.Strings(files)
	var out []Detector
	var errs []error
	for _, f := range files {
		rs, err := LoadRulesFile(f)
		for _, r := range rs {
			out = append(out, r)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return out, errors.Join(errs...)
}

// LoadRulesFile loads one rules file.
func LoadRulesFile(path string) ([]*Rule, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read rules: %w", err)
	}
	if len(b) > 4<<20 {
		return nil, fmt.Errorf("%s: rules file larger than 4 MiB", path)
	}
	return ParseRules(path, b)
}

// ParseRules compiles the rules in data; name is used in errors.
func ParseRules(name string, data []byte) ([]*Rule, error) {
	var rf ruleFile
	if err := yaml.Unmarshal(data, &rf); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	var out []*Rule
	var errs []error
	ids := map[string]int{}
	cache := &eventCache{}
	for _, n := range rf.Rules {
		where := fmt.Sprintf("%s:%d", name, n.Line)
		var s ruleSpec
		if err := n.Decode(&s); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
			continue
		}
		if prev, dup := ids[s.ID]; dup && s.ID != "" {
			errs = append(errs, fmt.Errorf("%s: rule %q: id already used at line %d", where, s.ID, prev))
			continue
		}
		ids[s.ID] = n.Line
		if s.Disabled {
			continue
		}
		r, err := compileRule(s, where, conditionLine(&n))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		r.cache = cache
		out = append(out, r)
	}
	return out, errors.Join(errs...)
}

func conditionLine(n *yaml.Node) int {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == "condition" {
			return n.Content[i+1].Line
		}
	}
	return n.Line
}

func compileRule(s ruleSpec, where string, condLine int) (*Rule, error) {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%s: rule %q: %s", where, s.ID, fmt.Sprintf(format, args...))
	}
	if s.ID == "" {
		return nil, fail("id is required")
	}
	if _, known := finding.Lookup(s.Type); !known && !strings.HasPrefix(s.Type, "Custom:Runtime/") {
		return nil, fail("type %q is neither a catalogue type nor Custom:Runtime/<Name>", s.Type)
	}
	r := &Rule{spec: s, where: where}
	switch strings.ToLower(s.Severity) {
	case "":
		if k, ok := finding.Lookup(s.Type); ok {
			r.severity = k.Severity
		} else {
			r.severity = finding.Medium
		}
	case "low":
		r.severity = finding.Low
	case "medium":
		r.severity = finding.Medium
	case "high":
		r.severity = finding.High
	default:
		var v float64
		if _, err := fmt.Sscanf(s.Severity, "%g", &v); err != nil || v < 0.1 || v > 10 {
			return nil, fail("severity %q: want Low, Medium, High or a number in 0.1-10", s.Severity)
		}
		r.severity = v
	}
	for _, k := range s.Kinds {
		kind, err := event.ParseKind(k)
		if err != nil {
			return nil, fail("kinds: %v", err)
		}
		r.kinds = append(r.kinds, kind)
	}
	if len(r.kinds) == 0 {
		for _, n := range event.KindNames() {
			k, _ := event.ParseKind(n)
			r.kinds = append(r.kinds, k)
		}
	}
	if strings.TrimSpace(s.Condition) == "" {
		return nil, fail("condition is required")
	}
	ast, iss := celEnv.Compile(s.Condition)
	if iss != nil && iss.Err() != nil {
		return nil, fmt.Errorf("%s:%d: rule %q: condition: %s", strings.Split(where, ":")[0], condLine, s.ID,
			strings.ReplaceAll(iss.Err().Error(), "\n", " "))
	}
	if ast.OutputType() != cel.BoolType && ast.OutputType() != cel.DynType {
		return nil, fail("condition yields %s, want bool", ast.OutputType())
	}
	prg, err := celEnv.Program(ast, cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return nil, fail("condition: %v", err)
	}
	r.prg = prg
	if s.Title == "" {
		s.Title = s.ID
	}
	if r.title, err = template.New("title").Option("missingkey=zero").Parse(s.Title); err != nil {
		return nil, fail("title template: %v", err)
	}
	if r.desc, err = template.New("description").Option("missingkey=zero").Parse(s.Description); err != nil {
		return nil, fail("description template: %v", err)
	}
	return r, nil
}

// Name implements Detector.
func (r *Rule) Name() string { return "rule:" + r.spec.ID }

// Kinds implements Detector.
func (r *Rule) Kinds() []event.Kind { return r.kinds }

// Scope implements Detector: conditions test event.container themselves.
func (r *Rule) Scope() Scope { return Both }

// Types implements Detector.
func (r *Rule) Types() []string { return []string{r.spec.Type} }

// Detect implements Detector.
func (r *Rule) Detect(ev *event.Event, hit func(Hit)) {
	m, act := r.cache.get(ev)
	if m == nil || act == nil {
		return
	}
	out, _, err := r.prg.Eval(act)
	if err != nil {
		return // a missing field is "no match", not an error
	}
	if ok, _ := out.Value().(bool); !ok {
		return
	}
	h := Hit{Type: r.spec.Type, Severity: r.severity, Rule: r.spec.ID,
		Title: render(r.title, m), Description: render(r.desc, m),
		Context: map[string]any{"ruleId": r.spec.ID}}
	if h.Description == "" {
		h.Description = "Custom rule " + r.spec.ID + " matched."
	}
	hit(h)
}

// Evaluate reports whether the rule matches ev, for `mamori rules test`.
func (r *Rule) Evaluate(ev *event.Event) bool {
	matched := false
	for _, k := range r.kinds {
		if k == ev.Kind {
			r.Detect(ev, func(Hit) { matched = true })
			break
		}
	}
	return matched
}

// ID is the rule's id.
func (r *Rule) ID() string { return r.spec.ID }

// eventMap is the event as its JSON shows it: rules are written against
// `mamori events --json` output.
func eventMap(ev *event.Event) map[string]any {
	b, err := json.Marshal(ev)
	if err != nil {
		return nil
	}
	var m map[string]any
	if json.Unmarshal(b, &m) != nil {
		return nil
	}
	return m
}

func render(t *template.Template, m map[string]any) string {
	var b bytes.Buffer
	if err := t.Execute(&b, m); err != nil {
		return ""
	}
	s := b.String()
	if len(s) > 1024 {
		s = s[:1024]
	}
	return strings.ReplaceAll(s, "<no value>", "")
}

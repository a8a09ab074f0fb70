package detect

import (
	"fmt"
	"math/bits"
	"reflect"
	"sort"
	"strings"
	"time"

	celast "github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/types"

	"github.com/mamori-dev/mamori/internal/event"
)

// Static analysis of rule conditions, done once at load time so that a
// rule costs nothing on events it cannot match:
//   - the kinds it can match, from comparisons of event.kind (`event.kind
//     == "exec"`, `event.kind in ["open", "rename"]`) through && and ||;
//   - the event parts it cannot match without (reading event.exec.args
//     needs event.exec), checked with a nil test before anything is built;
//   - field names, so `event.exec.arg` is refused at load with the fields
//     that do exist, rather than silently never matching.

// kindSet is a set of event kinds (kinds are below maxKind).
type kindSet [maxKind / 64]uint64

func allKinds() kindSet {
	var s kindSet
	for i := range s {
		s[i] = ^uint64(0)
	}
	return s
}

func (s *kindSet) add(k event.Kind) { s[k/64] |= 1 << (k % 64) }
func (s kindSet) has(k event.Kind) bool {
	return int(k) < maxKind && s[k/64]&(1<<(k%64)) != 0
}
func (s kindSet) and(o kindSet) kindSet {
	for i := range s {
		s[i] &= o[i]
	}
	return s
}
func (s kindSet) or(o kindSet) kindSet {
	for i := range s {
		s[i] |= o[i]
	}
	return s
}
func (s kindSet) isAll() bool { return s == allKinds() }

// known keeps only the kinds the event model names.
func (s kindSet) known() []event.Kind {
	var out []event.Kind
	for _, n := range event.KindNames() {
		if k, _ := event.ParseKind(n); s.has(k) {
			out = append(out, k)
		}
	}
	return out
}

// part is a bit per optional part of an event (the pointer fields).
type part uint32

var partNames = []string{"container", "exec", "exit", "fork", "file", "net", "dns", "mount", "module", "access",
	"memory", "cred", "namespace", "bpf", "cgroup"}

var partBit = func() map[string]part {
	m := map[string]part{}
	for i, n := range partNames {
		m[n] = 1 << i
	}
	return m
}()

const containerPart part = 1

// partsOf is the set of parts ev carries.
func partsOf(ev *event.Event) part {
	var p part
	set := func(ok bool, i int) {
		if ok {
			p |= 1 << i
		}
	}
	set(ev.Container != nil, 0)
	set(ev.Exec != nil, 1)
	set(ev.Exit != nil, 2)
	set(ev.Fork != nil, 3)
	set(ev.File != nil, 4)
	set(ev.Net != nil, 5)
	set(ev.DNS != nil, 6)
	set(ev.Mount != nil, 7)
	set(ev.Module != nil, 8)
	set(ev.Access != nil, 9)
	set(ev.Memory != nil, 10)
	set(ev.Cred != nil, 11)
	set(ev.Namespace != nil, 12)
	set(ev.BPF != nil, 13)
	set(ev.Cgroup != nil, 14)
	return p
}

// firstPayload is the lowest kind-specific part of p (container aside),
// or -1.
func firstPayload(p part) int {
	p &^= containerPart
	if p == 0 {
		return -1
	}
	return bits.TrailingZeros32(uint32(p))
}

// facts about an expression: kinds where it can be true; parts whose
// absence makes it an error (err) or at least not true (notTrue); and for
// indexed fields, a constraint the field's value must meet for it to be
// true (a field not in idx is unconstrained).
type facts struct {
	kinds        kindSet
	err, notTrue part
	idx          map[int]constraint
}

// match modes of a constraint, from strongest.
const (
	exact  = iota // the value is one of vals
	prefix        // the value starts with one of vals
	suffix        // the value ends with one of vals
)

// constraint on an indexed field's value.
type constraint struct {
	mode int
	vals []string
}

// indexedFields are the string fields rules are indexed on when their
// condition requires an exact value, a prefix or a suffix
// (event.process.name == "nc", event.file.path.startsWith("/etc/"),
// event.dns.name.endsWith(".example")): a hundred such rules cost a few
// map lookups per event, not a hundred evaluations. get reads the field
// straight from the event.
var indexedFields = []struct {
	path string
	get  func(*event.Event) (string, bool)
	// list fields (argv) are matched element by element: a rule indexed
	// on one needs some element to fit (args.exists(a, a == "-e")).
	list func(*event.Event) ([]string, bool)
}{
	{"process.executablePath", func(ev *event.Event) (string, bool) { return ev.Process.Exe, true }, nil},
	{"process.name", func(ev *event.Event) (string, bool) { return ev.Process.Comm, true }, nil},
	{"exec.executablePath", func(ev *event.Event) (string, bool) {
		if ev.Exec == nil {
			return "", false
		}
		return ev.Exec.Path, true
	}, nil},
	{"file.path", func(ev *event.Event) (string, bool) {
		if ev.File == nil {
			return "", false
		}
		return ev.File.Path, true
	}, nil},
	{"dns.name", func(ev *event.Event) (string, bool) {
		if ev.DNS == nil {
			return "", false
		}
		return ev.DNS.Name, true
	}, nil},
	{"container.image", func(ev *event.Event) (string, bool) {
		if ev.Container == nil {
			return "", false
		}
		return ev.Container.Image, true
	}, nil},
	{"exec.args", nil, func(ev *event.Event) ([]string, bool) {
		if ev.Exec == nil {
			return nil, false
		}
		return ev.Exec.Args, true
	}},
	{"process.args", nil, func(ev *event.Event) ([]string, bool) { return ev.Process.Args, true }},
}

// andIdx: both sides must hold; each is a valid necessary condition, so
// keep the stronger per field (exact sets intersect).
func andIdx(a, b map[int]constraint) map[int]constraint {
	if len(a) == 0 {
		return b
	}
	if len(b) == 0 {
		return a
	}
	out := map[int]constraint{}
	for f, ca := range a {
		out[f] = ca
	}
	for f, cb := range b {
		ca, ok := out[f]
		switch {
		case !ok || cb.mode < ca.mode:
			out[f] = cb
		case ca.mode == exact && cb.mode == exact:
			var both []string
			for _, v := range ca.vals {
				if contains(cb.vals, v) {
					both = append(both, v)
				}
			}
			out[f] = constraint{exact, both}
		}
	}
	return out
}

// orIdx: either side may hold, so only fields both constrain in a
// compatible way survive, with the values either allows (an exact value
// is its own prefix and suffix).
func orIdx(a, b map[int]constraint) map[int]constraint {
	var out map[int]constraint
	for f, ca := range a {
		cb, ok := b[f]
		if !ok {
			continue
		}
		mode := max(ca.mode, cb.mode)
		if ca.mode != exact && cb.mode != exact && ca.mode != cb.mode {
			continue // a prefix or a suffix: no common index
		}
		u := append([]string(nil), ca.vals...)
		for _, v := range cb.vals {
			if !contains(u, v) {
				u = append(u, v)
			}
		}
		if out == nil {
			out = map[int]constraint{}
		}
		out[f] = constraint{mode, u}
	}
	return out
}

// idxComparison recognises event.F == "v" (either side), event.F in
// ["v", ...], event.F.startsWith("v") and event.F.endsWith("v") for an
// indexed scalar field F, and "v" in event.L for a list field L.
func idxComparison(c celast.CallExpr) map[int]constraint {
	if a := c.Args(); c.FunctionName() == "@in" && len(a) == 2 {
		if fi := fieldIndex(a[1]); fi >= 0 && indexedFields[fi].list != nil {
			if v, ok := stringLit(a[0]); ok {
				return map[int]constraint{fi: {exact, []string{v}}}
			}
			return nil
		}
	}
	return compareIdx(c, func(e celast.Expr) int {
		if fi := fieldIndex(e); fi >= 0 && indexedFields[fi].get != nil {
			return fi
		}
		return -1
	})
}

// compareIdx recognises a comparison of what field resolves (an event
// field, or an element of a list field) with string literals.
func compareIdx(c celast.CallExpr, field func(celast.Expr) int) map[int]constraint {
	a := c.Args()
	fi := -1
	var vals []celast.Expr
	mode := exact
	switch {
	case c.IsMemberFunction() && len(a) == 1 && (c.FunctionName() == "startsWith" || c.FunctionName() == "endsWith"):
		fi, vals = field(c.Target()), a
		mode = prefix
		if c.FunctionName() == "endsWith" {
			mode = suffix
		}
	case len(a) != 2:
		return nil
	case c.FunctionName() == "_==_" && field(a[0]) >= 0:
		fi, vals = field(a[0]), []celast.Expr{a[1]}
	case c.FunctionName() == "_==_" && field(a[1]) >= 0:
		fi, vals = field(a[1]), []celast.Expr{a[0]}
	case c.FunctionName() == "@in" && field(a[0]) >= 0 && a[1].Kind() == celast.ListKind:
		fi, vals = field(a[0]), a[1].AsList().Elements()
	}
	if fi < 0 {
		return nil
	}
	var out []string
	for _, v := range vals {
		s, ok := stringLit(v)
		if !ok {
			return nil
		}
		if !contains(out, s) {
			out = append(out, s)
		}
	}
	return map[int]constraint{fi: {mode, out}}
}

func stringLit(e celast.Expr) (string, bool) {
	if e.Kind() != celast.LiteralKind {
		return "", false
	}
	s, ok := e.AsLiteral().Value().(string)
	return s, ok
}

// existsIdx recognises L.exists(x, P(x)) over a list field L, where P
// constrains x as compareIdx does (through || and &&): true means some
// element meets the constraint. It matches the exists macro's expansion
// exactly (accumulator false, step accu || P, result accu); all() and
// exists_one() expand differently and are not indexed.
func existsIdx(cp celast.ComprehensionExpr) map[int]constraint {
	fi := fieldIndex(cp.IterRange())
	if fi < 0 || indexedFields[fi].list == nil || cp.IterVar2() != "" {
		return nil
	}
	init, step, res := cp.AccuInit(), cp.LoopStep(), cp.Result()
	if init.Kind() != celast.LiteralKind || init.AsLiteral() != types.False ||
		res.Kind() != celast.IdentKind || res.AsIdent() != cp.AccuVar() || step.Kind() != celast.CallKind {
		return nil
	}
	sc := step.AsCall()
	if sc.FunctionName() != "_||_" || len(sc.Args()) != 2 || sc.Args()[0].Kind() != celast.IdentKind ||
		sc.Args()[0].AsIdent() != cp.AccuVar() {
		return nil
	}
	elem := func(e celast.Expr) int {
		if e.Kind() == celast.IdentKind && e.AsIdent() == cp.IterVar() {
			return fi
		}
		return -1
	}
	var pred func(e celast.Expr) map[int]constraint
	pred = func(e celast.Expr) map[int]constraint {
		if e.Kind() != celast.CallKind {
			return nil
		}
		c := e.AsCall()
		switch c.FunctionName() {
		case "_||_":
			return orIdx(pred(c.Args()[0]), pred(c.Args()[1]))
		case "_&&_":
			return andIdx(pred(c.Args()[0]), pred(c.Args()[1]))
		}
		return compareIdx(c, elem)
	}
	return pred(sc.Args()[1])
}

// fieldIndex is the indexedFields position of event.a.b, or -1.
func fieldIndex(e celast.Expr) int {
	var path []string
	for e.Kind() == celast.SelectKind {
		s := e.AsSelect()
		if s.IsTestOnly() {
			return -1
		}
		path = append([]string{s.FieldName()}, path...)
		e = s.Operand()
	}
	if e.Kind() != celast.IdentKind || e.AsIdent() != "event" {
		return -1
	}
	p := strings.Join(path, ".")
	for i, f := range indexedFields {
		if f.path == p {
			return i
		}
	}
	return -1
}

func neutral() facts { return facts{kinds: allKinds()} }

// strict: an expression that errors when any operand errors.
func strict(fs ...facts) facts {
	out := neutral()
	for _, f := range fs {
		out.err |= f.err
	}
	out.notTrue = out.err
	return out
}

// analyse computes facts for e. CEL's && and || absorb errors when the
// other side decides; every other function is strict in its arguments.
func analyse(e celast.Expr) (facts, error) {
	switch e.Kind() {
	case celast.SelectKind:
		s := e.AsSelect()
		if op := s.Operand(); op.Kind() == celast.IdentKind && op.AsIdent() == "event" {
			b := partBit[s.FieldName()]
			if s.IsTestOnly() {
				return facts{kinds: allKinds(), notTrue: b}, nil
			}
			return facts{kinds: allKinds(), err: b, notTrue: b}, nil
		}
		f, err := analyse(s.Operand())
		return strict(f), err
	case celast.CallKind:
		return analyseCall(e.AsCall())
	case celast.ListKind:
		var fs []facts
		for _, x := range e.AsList().Elements() {
			f, err := analyse(x)
			if err != nil {
				return f, err
			}
			fs = append(fs, f)
		}
		return strict(fs...), nil
	case celast.MapKind:
		var fs []facts
		for _, en := range e.AsMap().Entries() {
			me := en.AsMapEntry()
			for _, x := range []celast.Expr{me.Key(), me.Value()} {
				f, err := analyse(x)
				if err != nil {
					return f, err
				}
				fs = append(fs, f)
			}
		}
		return strict(fs...), nil
	case celast.ComprehensionKind:
		// The range is evaluated first and strictly; the loop may absorb
		// errors, so nothing else is concluded from it, except what an
		// exists() requires of some element.
		f, err := analyse(e.AsComprehension().IterRange())
		out := strict(f)
		out.idx = existsIdx(e.AsComprehension())
		return out, err
	}
	return neutral(), nil
}

func analyseCall(c celast.CallExpr) (facts, error) {
	var args []facts
	if c.IsMemberFunction() {
		f, err := analyse(c.Target())
		if err != nil {
			return f, err
		}
		args = append(args, f)
	}
	for _, a := range c.Args() {
		f, err := analyse(a)
		if err != nil {
			return f, err
		}
		args = append(args, f)
	}
	switch c.FunctionName() {
	case "_&&_":
		a, b := args[0], args[1]
		return facts{kinds: a.kinds.and(b.kinds), err: a.err & b.err, notTrue: a.notTrue | b.notTrue, idx: andIdx(a.idx, b.idx)}, nil
	case "_||_":
		a, b := args[0], args[1]
		return facts{kinds: a.kinds.or(b.kinds), err: a.err & b.err, notTrue: a.notTrue & b.notTrue, idx: orIdx(a.idx, b.idx)}, nil
	case "!_":
		return facts{kinds: allKinds(), err: args[0].err, notTrue: args[0].err}, nil
	case "_?_:_":
		cnd, a, b := args[0], args[1], args[2]
		// True through the first branch means the condition held too.
		return facts{kinds: cnd.kinds.and(a.kinds).or(b.kinds), err: cnd.err | (a.err & b.err),
			notTrue: cnd.err | ((cnd.notTrue | a.notTrue) & b.notTrue), idx: orIdx(andIdx(cnd.idx, a.idx), b.idx)}, nil
	case "_[_]":
		// event["exec"] is event.exec.
		if t, k := c.Args()[0], c.Args()[1]; t.Kind() == celast.IdentKind && t.AsIdent() == "event" && k.Kind() == celast.LiteralKind {
			if s, ok := k.AsLiteral().Value().(string); ok {
				b := partBit[s]
				return facts{kinds: allKinds(), err: b, notTrue: b}, nil
			}
		}
	case "_==_", "@in":
		ks, ok, err := kindComparison(c)
		if err != nil {
			return neutral(), err
		}
		if ok {
			f := strict(args...)
			f.kinds = ks
			return f, nil
		}
	case "startsWith", "endsWith":
	default:
		return strict(args...), nil
	}
	if idx := idxComparison(c); idx != nil {
		f := strict(args...)
		f.idx = idx
		return f, nil
	}
	return strict(args...), nil
}

// kindComparison recognises event.kind == "exec" (either side) and
// event.kind in ["exec", ...].
func kindComparison(c celast.CallExpr) (kindSet, bool, error) {
	a := c.Args()
	if len(a) != 2 {
		return kindSet{}, false, nil
	}
	var names []celast.Expr
	switch {
	case c.FunctionName() == "_==_" && isEventKind(a[0]):
		names = []celast.Expr{a[1]}
	case c.FunctionName() == "_==_" && isEventKind(a[1]):
		names = []celast.Expr{a[0]}
	case c.FunctionName() == "@in" && isEventKind(a[0]) && a[1].Kind() == celast.ListKind:
		names = a[1].AsList().Elements()
	default:
		return kindSet{}, false, nil
	}
	var s kindSet
	for _, n := range names {
		if n.Kind() != celast.LiteralKind {
			return kindSet{}, false, nil
		}
		str, ok := n.AsLiteral().Value().(string)
		if !ok {
			return kindSet{}, false, nil
		}
		k, err := event.ParseKind(str)
		if err != nil {
			return kindSet{}, false, err
		}
		s.add(k)
	}
	return s, true, nil
}

func isEventKind(e celast.Expr) bool {
	if e.Kind() != celast.SelectKind {
		return false
	}
	s := e.AsSelect()
	return !s.IsTestOnly() && s.FieldName() == "kind" && s.Operand().Kind() == celast.IdentKind && s.Operand().AsIdent() == "event"
}

// fieldNode is the shape of EventMap: the field names rules may use.
type fieldNode struct {
	fields map[string]*fieldNode
	elem   *fieldNode // lists of objects (lineage)
	open   bool       // maps with any keys (labels)
}

var eventFields = shapeOf(EventMap(fullEvent()))

func shapeOf(v any) *fieldNode {
	switch x := v.(type) {
	case map[string]any:
		n := &fieldNode{fields: map[string]*fieldNode{}}
		for k, sub := range x {
			n.fields[k] = shapeOf(sub)
		}
		return n
	case map[string]string:
		return &fieldNode{open: true}
	case []any:
		if len(x) > 0 {
			if el := shapeOf(x[0]); el != nil {
				return &fieldNode{elem: el}
			}
		}
	}
	return nil
}

// checkFields refuses a select chain rooted at `event` that names a field
// the event model does not have. Inside a comprehension whose variable is
// called event, the name is not the event and is not checked.
func checkFields(e celast.Expr, shadowed bool) error {
	switch e.Kind() {
	case celast.SelectKind:
		if !shadowed {
			if err := checkChain(e); err != nil {
				return err
			}
		}
		return checkFields(e.AsSelect().Operand(), shadowed)
	case celast.CallKind:
		c := e.AsCall()
		if c.FunctionName() == "_[_]" && !shadowed {
			if err := checkChain(e); err != nil {
				return err
			}
		}
		if c.IsMemberFunction() {
			if err := checkFields(c.Target(), shadowed); err != nil {
				return err
			}
		}
		for _, a := range c.Args() {
			if err := checkFields(a, shadowed); err != nil {
				return err
			}
		}
	case celast.ListKind:
		for _, x := range e.AsList().Elements() {
			if err := checkFields(x, shadowed); err != nil {
				return err
			}
		}
	case celast.MapKind:
		for _, en := range e.AsMap().Entries() {
			me := en.AsMapEntry()
			if err := checkFields(me.Key(), shadowed); err != nil {
				return err
			}
			if err := checkFields(me.Value(), shadowed); err != nil {
				return err
			}
		}
	case celast.ComprehensionKind:
		cp := e.AsComprehension()
		if err := checkFields(cp.IterRange(), shadowed); err != nil {
			return err
		}
		inner := shadowed || cp.IterVar() == "event" || cp.IterVar2() == "event" || cp.AccuVar() == "event"
		for _, x := range []celast.Expr{cp.AccuInit(), cp.LoopCondition(), cp.LoopStep(), cp.Result()} {
			if err := checkFields(x, inner); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkChain walks event.a.b[0].c against the event's shape.
func checkChain(e celast.Expr) error {
	var path []string // innermost last
	for {
		switch e.Kind() {
		case celast.SelectKind:
			s := e.AsSelect()
			path = append(path, s.FieldName())
			e = s.Operand()
			continue
		case celast.CallKind:
			c := e.AsCall()
			if c.FunctionName() != "_[_]" || len(c.Args()) != 2 {
				return nil
			}
			if k := c.Args()[1]; k.Kind() == celast.LiteralKind {
				if s, ok := k.AsLiteral().Value().(string); ok {
					path = append(path, s)
				} else {
					path = append(path, "[]")
				}
			} else {
				path = append(path, "[]")
			}
			e = c.Args()[0]
			continue
		case celast.IdentKind:
			if e.AsIdent() != "event" {
				return nil
			}
		default:
			return nil
		}
		break
	}
	n, where := eventFields, "event"
	for i := len(path) - 1; i >= 0 && n != nil; i-- {
		f := path[i]
		switch {
		case n.open:
			return nil
		case f == "[]":
			if n.elem == nil {
				return nil // indexing a list of strings, or a map by a computed key
			}
			n, where = n.elem, where+"[]"
		case n.fields != nil:
			sub, ok := n.fields[f]
			if !ok {
				return fmt.Errorf("%s has no field %q (it has: %s)", where, f, strings.Join(sortedKeys(n.fields), ", "))
			}
			n, where = sub, where+"."+f
		default:
			return nil
		}
	}
	return nil
}

func sortedKeys(m map[string]*fieldNode) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// fullEvent is an exec event with every field of the event model set to a
// non-zero value and every optional part present. It is the reference
// shape rules are checked against, and what tests compare EventMap with
// the JSON on. Built by reflection, once.
func fullEvent() *event.Event {
	ev := &event.Event{}
	fill(reflect.ValueOf(ev).Elem())
	ev.Kind = event.KindExec
	return ev
}

func fill(v reflect.Value) {
	switch v.Kind() {
	case reflect.Struct:
		if v.Type() == reflect.TypeOf(time.Time{}) {
			v.Set(reflect.ValueOf(time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)))
			return
		}
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i))
			}
		}
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem())
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 1, 1)
		fill(s.Index(0))
		v.Set(s)
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		fill(k)
		fill(e)
		m.SetMapIndex(k, e)
		v.Set(m)
	case reflect.String:
		v.SetString("x")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(7)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(7)
	case reflect.Float32, reflect.Float64:
		v.SetFloat(7)
	}
}

// readsExeHash reports whether the condition reads
// event.process.executableSha256.
func readsExeHash(root celast.Expr) bool {
	found := false
	celast.PreOrderVisit(root, celast.NewExprVisitor(func(e celast.Expr) {
		if e.Kind() != celast.SelectKind || e.AsSelect().FieldName() != "executableSha256" {
			return
		}
		p := e.AsSelect().Operand()
		if p.Kind() == celast.SelectKind && p.AsSelect().FieldName() == "process" {
			if o := p.AsSelect().Operand(); o.Kind() == celast.IdentKind && o.AsIdent() == "event" {
				found = true
			}
		}
	}))
	return found
}

package store

import (
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"
)

// Op is a criterion's comparison.
type Op string

// Ops.
const (
	OpEq      Op = "eq"
	OpNeq     Op = "neq"
	OpGt      Op = "gt"
	OpLt      Op = "lt"
	OpMatches Op = "matches"
)

// Limits on criteria, so a saved rule or a list query stays cheap.
const (
	MaxCriteria     = 32
	maxFieldLen     = 256
	maxFieldDepth   = 16
	maxValueLen     = 1024
	maxValueMagnitu = 1e15
)

// Criterion is one condition over a finding field.
//
// Field is the field's JSON path in the finding, segments joined by dots
// ("service.count", "resource.containerDetails.image"), or one of the
// record's own fields "cluster", "suppressedBy", "revision". A path through
// an array applies to each element ("service.runtimeDetails.process.lineage.name"
// is every ancestor's name), and a value that is an array stands for its
// elements: the criterion holds when any of them satisfies it.
//
// Value is a string, number or boolean. Comparisons are typed: a string
// never equals a number. The time fields createdAt, updatedAt,
// service.eventFirstSeen and service.eventLastSeen compare as times (Value
// in RFC 3339) at microsecond precision; other strings compare bytewise.
//
//   - eq: some value equals Value.
//   - neq: no value equals Value (so a missing field is "not equal").
//   - gt, lt: some value is greater / less than Value (numbers, strings, times).
//   - matches: some string value matches the wildcard pattern Value, where
//     "*" stands for any run of characters (also none) and "?" for exactly
//     one; everything else is literal and case matters.
type Criterion struct {
	Field string `json:"field"`
	Op    Op     `json:"op"`
	Value any    `json:"value"`
}

var segmentPattern = regexp.MustCompile(`^[A-Za-z0-9_]{1,64}$`)

// timeFields compare as times.
var timeFields = map[string]bool{
	"createdAt": true, "updatedAt": true, "service.eventFirstSeen": true, "service.eventLastSeen": true,
}

// Normalize checks c and returns it with Value in canonical form (numbers
// as float64, times as RFC 3339 in UTC). Errors wrap ErrInvalid.
func (c Criterion) Normalize() (Criterion, error) {
	bad := func(format string, args ...any) (Criterion, error) {
		return c, fmt.Errorf("%w: criterion %q: %s", ErrInvalid, c.Field, fmt.Sprintf(format, args...))
	}
	if len(c.Field) == 0 || len(c.Field) > maxFieldLen {
		return bad("field must be 1-%d characters", maxFieldLen)
	}
	segs := strings.Split(c.Field, ".")
	if len(segs) > maxFieldDepth {
		return bad("field is deeper than %d", maxFieldDepth)
	}
	for _, s := range segs {
		if !segmentPattern.MatchString(s) {
			return bad("field segment %q is not [A-Za-z0-9_]", s)
		}
	}
	switch v := c.Value.(type) {
	case string:
		if len(v) > maxValueLen || !utf8.ValidString(v) || strings.ContainsRune(v, 0) {
			return bad("string value must be valid UTF-8 without NUL, at most %d bytes", maxValueLen)
		}
	case bool:
	case float64:
	case float32:
		c.Value = float64(v)
	case int:
		c.Value = float64(v)
	case int64:
		c.Value = float64(v)
	case json.Number:
		f, err := v.Float64()
		if err != nil {
			return bad("number %q: %v", v, err)
		}
		c.Value = f
	default:
		return bad("value must be a string, number or boolean, not %T", c.Value)
	}
	if f, ok := c.Value.(float64); ok && (math.IsNaN(f) || math.Abs(f) > maxValueMagnitu) {
		return bad("number out of range")
	}
	kind, err := FieldKindOf(c.Field)
	if err != nil {
		return bad("%v", err)
	}
	if err := kindAccepts(kind, c); err != nil {
		return bad("%v", err)
	}
	switch c.Op {
	case OpEq, OpNeq:
	case OpGt, OpLt:
		if _, ok := c.Value.(bool); ok {
			return bad("%s needs a number, string or time, not a boolean", c.Op)
		}
	case OpMatches:
		if _, ok := c.Value.(string); !ok {
			return bad("matches needs a string pattern")
		}
	default:
		return bad("unknown op %q (want eq, neq, gt, lt or matches)", c.Op)
	}
	if timeFields[c.Field] && c.Op != OpMatches {
		s, ok := c.Value.(string)
		if !ok {
			return bad("%s is a time: give an RFC 3339 string", c.Field)
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return bad("%s is a time: %v", c.Field, err)
		}
		c.Value = t.UTC().Format(time.RFC3339Nano)
	}
	return c, nil
}

// kindAccepts refuses a value or op that can never hold on a field of
// this kind (a word against a number, a pattern against a boolean).
func kindAccepts(kind FieldKind, c Criterion) error {
	if kind == FieldAny {
		return nil
	}
	if c.Op == OpMatches && kind != FieldString && kind != FieldTime {
		return fmt.Errorf("matches compares text; %s is %s", c.Field, kind)
	}
	ok := true
	switch c.Value.(type) {
	case string:
		ok = kind == FieldString || kind == FieldTime
	case float64:
		ok = kind == FieldNumber
	case bool:
		ok = kind == FieldBool
	}
	if !ok {
		hint := ""
		if kind == FieldString {
			hint = " (quote it to compare as text)"
		}
		return fmt.Errorf("%s is %s; %v is not%s", c.Field, kind, c.Value, hint)
	}
	return nil
}

// NormalizeAll normalizes a list of criteria, refusing more than MaxCriteria.
func NormalizeAll(cs []Criterion) ([]Criterion, error) {
	if len(cs) > MaxCriteria {
		return nil, fmt.Errorf("%w: %d criteria, at most %d", ErrInvalid, len(cs), MaxCriteria)
	}
	out := make([]Criterion, len(cs))
	for i, c := range cs {
		n, err := c.Normalize()
		if err != nil {
			return nil, err
		}
		out[i] = n
	}
	return out, nil
}

// Match reports whether doc (a record decoded from JSON into
// map[string]any, see Doc) satisfies c. c must be normalized.
func (c Criterion) Match(doc map[string]any) bool {
	vals := lookup(doc, strings.Split(c.Field, "."))
	hit := false
	for _, v := range vals {
		if c.holds(v) {
			hit = true
			break
		}
	}
	if c.Op == OpNeq {
		return !hit
	}
	return hit
}

// MatchAll reports whether doc satisfies every criterion (true for none).
func MatchAll(cs []Criterion, doc map[string]any) bool {
	for _, c := range cs {
		if !c.Match(doc) {
			return false
		}
	}
	return true
}

// holds evaluates the positive form of c's op (neq as eq) on one value.
func (c Criterion) holds(v any) bool {
	if c.Op == OpMatches {
		s, ok := v.(string)
		return ok && globMatch(c.Value.(string), s)
	}
	cmp, ok := compare(c.Field, v, c.Value)
	if !ok {
		return false
	}
	switch c.Op {
	case OpEq, OpNeq:
		return cmp == 0
	case OpGt:
		return cmp > 0
	case OpLt:
		return cmp < 0
	}
	return false
}

// compare orders v against want when both have the same type.
func compare(field string, v, want any) (int, bool) {
	switch w := want.(type) {
	case string:
		s, ok := v.(string)
		if !ok {
			return 0, false
		}
		if timeFields[field] {
			a, err1 := time.Parse(time.RFC3339Nano, s)
			b, err2 := time.Parse(time.RFC3339Nano, w)
			if err1 != nil || err2 != nil {
				return 0, false
			}
			return cmpInt(a.UnixMicro(), b.UnixMicro()), true
		}
		return strings.Compare(s, w), true
	case float64:
		f, ok := v.(float64)
		if !ok {
			return 0, false
		}
		switch {
		case f < w:
			return -1, true
		case f > w:
			return 1, true
		}
		return 0, true
	case bool:
		b, ok := v.(bool)
		if !ok || b != w {
			return 1, ok
		}
		return 0, true
	}
	return 0, false
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// lookup returns the values at path, stepping into each element of an
// array met on the way (one level, as SQL/JSON lax mode does) and
// expanding an array found at the end into its elements.
func lookup(v any, path []string) []any {
	cur := []any{v}
	for _, seg := range path {
		var next []any
		for _, x := range cur {
			switch t := x.(type) {
			case map[string]any:
				if y, ok := t[seg]; ok {
					next = append(next, y)
				}
			case []any:
				for _, el := range t {
					if m, ok := el.(map[string]any); ok {
						if y, ok := m[seg]; ok {
							next = append(next, y)
						}
					}
				}
			}
		}
		cur = next
		if len(cur) == 0 {
			return nil
		}
	}
	var out []any
	for _, x := range cur {
		if arr, ok := x.([]any); ok {
			out = append(out, arr...)
		} else {
			out = append(out, x)
		}
	}
	return out
}

// globMatch reports whether s matches pattern, where '*' matches any run of
// runes and '?' exactly one. Linear backtracking on the last star keeps it
// O(len(pattern)*len(s)) at worst, whatever the input.
func globMatch(pattern, s string) bool {
	p := []rune(pattern)
	r := []rune(s)
	pi, si := 0, 0
	star, mark := -1, 0
	for si < len(r) {
		switch {
		case pi < len(p) && (p[pi] == '?' || (p[pi] != '*' && p[pi] == r[si])):
			pi++
			si++
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, si
			pi++
		case star >= 0:
			pi = star + 1
			mark++
			si = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

// Doc is the document criteria are evaluated against: the record's JSON
// decoded into generic values.
func Doc(r *Record) (map[string]any, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode record: %w", err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("decode record: %w", err)
	}
	return m, nil
}

package store

import (
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"
)

// FieldKind is what a criterion's field holds, read off the finding's Go
// type: a criterion on a field no finding has, or comparing a number field
// with a word, can never hold — as a suppression rule it would silently
// archive every finding (neq) or none, so such criteria are refused.
type FieldKind int

// Field kinds.
const (
	FieldUnknown FieldKind = iota
	FieldString
	FieldNumber
	FieldBool
	FieldTime
	// FieldAny is a free-form part of the finding (a type-specific context
	// value, a label): anything below it is accepted.
	FieldAny
)

func (k FieldKind) String() string {
	switch k {
	case FieldString:
		return "a string"
	case FieldNumber:
		return "a number"
	case FieldBool:
		return "a boolean"
	case FieldTime:
		return "a time"
	case FieldAny:
		return "free-form"
	}
	return "unknown"
}

var (
	recordType  = reflect.TypeFor[Record]()
	timeType    = reflect.TypeFor[time.Time]()
	rawJSONType = reflect.TypeFor[json.RawMessage]()
)

// FieldKindOf resolves a dotted field path against a stored finding's JSON
// shape (arrays are walked through, map keys are free). The error names the
// first segment that does not exist and the fields that do.
func FieldKindOf(path string) (FieldKind, error) {
	t := recordType
	segs := strings.Split(path, ".")
	for i, seg := range segs {
		t = deref(t)
		at := strings.Join(segs[:i], ".")
		switch {
		case t == timeType || t.Kind() != reflect.Struct && t.Kind() != reflect.Map && t.Kind() != reflect.Interface:
			return FieldUnknown, fmt.Errorf("%s is %s and has no field %q", at, leafKind(t), seg)
		case t.Kind() == reflect.Interface:
			return FieldAny, nil
		case t.Kind() == reflect.Map:
			if t.Key().Kind() != reflect.String {
				return FieldUnknown, fmt.Errorf("%s has no field %q", at, seg)
			}
			t = t.Elem()
			continue
		}
		fields := jsonFields(t)
		ft, ok := fields[seg]
		if !ok {
			where := "a finding"
			if at != "" {
				where = at
			}
			return FieldUnknown, fmt.Errorf("%s has no field %q (its fields: %s)", where, seg,
				strings.Join(slices.Sorted(maps.Keys(fields)), ", "))
		}
		t = ft
	}
	t = deref(t)
	switch k := leafKind(t); k {
	case FieldUnknown:
		names := "its fields"
		if t.Kind() == reflect.Struct {
			names = strings.Join(slices.Sorted(maps.Keys(jsonFields(t))), ", ")
		}
		return FieldUnknown, fmt.Errorf("%s is an object: name one of its fields (%s)", path, names)
	default:
		return k, nil
	}
}

// deref steps through pointers and arrays: a path through an array applies
// to each element.
func deref(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Pointer || (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) && t != rawJSONType {
		t = t.Elem()
	}
	return t
}

func leafKind(t reflect.Type) FieldKind {
	if t == timeType {
		return FieldTime
	}
	if t == rawJSONType {
		return FieldAny
	}
	switch t.Kind() {
	case reflect.String:
		return FieldString
	case reflect.Bool:
		return FieldBool
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return FieldNumber
	case reflect.Interface:
		return FieldAny
	case reflect.Map:
		if t.Elem().Kind() == reflect.Interface {
			return FieldUnknown // an object: name a key below it
		}
	}
	return FieldUnknown
}

// jsonFields maps a struct's JSON member names to their types, with the
// members of embedded structs promoted as encoding/json does.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for f := range t.Fields() {
		tag := f.Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		if name == "-" || !f.IsExported() && !f.Anonymous {
			continue
		}
		if f.Anonymous && name == "" {
			et := f.Type
			if et.Kind() == reflect.Pointer {
				et = et.Elem()
			}
			if et.Kind() == reflect.Struct {
				for n, ft := range jsonFields(et) {
					if _, shadowed := out[n]; !shadowed {
						out[n] = ft
					}
				}
				continue
			}
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

package store_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/mamori-dev/mamori/internal/server/store"
)

func TestFieldKindOf(t *testing.T) {
	for path, want := range map[string]store.FieldKind{
		"type":                                 store.FieldString,
		"severity":                             store.FieldNumber,
		"service.count":                        store.FieldNumber,
		"service.archived":                     store.FieldBool,
		"createdAt":                            store.FieldTime,
		"cluster":                              store.FieldString, // the record's own
		"revision":                             store.FieldNumber,
		"resource.containerDetails.image":      store.FieldString,
		"resource.containerDetails.labels.app": store.FieldString, // any key of a map
		"service.runtimeDetails.process.lineage.name":   store.FieldString, // through an array
		"service.runtimeDetails.process.args":           store.FieldString, // an array of strings
		"service.runtimeDetails.context.anything.below": store.FieldAny,
	} {
		got, err := store.FieldKindOf(path)
		if err != nil || got != want {
			t.Errorf("FieldKindOf(%q) = %v, %v; want %v", path, got, err, want)
		}
	}
	for path, wantErr := range map[string]string{
		"resource.containerDetails.imagee": `resource.containerDetails has no field "imagee" (its fields: `,
		"bogus":                            `a finding has no field "bogus"`,
		"resource.containerDetails":        "is an object: name one of its fields (",
		"service.count.x":                  `service.count is a number and has no field "x"`,
		"service.runtimeDetails.context":   "is an object",
	} {
		_, err := store.FieldKindOf(path)
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("FieldKindOf(%q) = %v, want an error with %q", path, err, wantErr)
		}
	}
}

// TestCriteriaThatCannotHoldAreRefused: a typo in a suppression rule's
// field made it archive every new finding (neq on a field nobody has); a
// word compared with a number matched nothing, silently.
func TestCriteriaThatCannotHoldAreRefused(t *testing.T) {
	for _, c := range []store.Criterion{
		{Field: "resource.containerDetails.imagee", Op: store.OpNeq, Value: "trusted/app"},
		{Field: "service.count", Op: store.OpGt, Value: "abc"},
		{Field: "service.archived", Op: store.OpEq, Value: "yes"},
		{Field: "type", Op: store.OpEq, Value: 3.0},
		{Field: "severity", Op: store.OpMatches, Value: "8*"},
		{Field: "service.archived", Op: store.OpGt, Value: true},
	} {
		if _, err := c.Normalize(); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("%+v: %v, want ErrInvalid", c, err)
		}
	}
	for _, c := range []store.Criterion{
		{Field: "resource.containerDetails.image", Op: store.OpNeq, Value: "trusted/app"},
		{Field: "service.count", Op: store.OpGt, Value: 10.0},
		{Field: "service.archived", Op: store.OpEq, Value: false},
		{Field: "createdAt", Op: store.OpGt, Value: "2026-01-02T03:04:05Z"},
		{Field: "service.runtimeDetails.context.port", Op: store.OpEq, Value: 4444.0},
		{Field: "resource.containerDetails.labels.team", Op: store.OpMatches, Value: "pay*"},
	} {
		if _, err := c.Normalize(); err != nil {
			t.Errorf("%+v: %v", c, err)
		}
	}
}

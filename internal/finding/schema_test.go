package finding

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestSamplesMatchTheSchema(t *testing.T) {
	for _, f := range Samples(agent) {
		b, err := json.Marshal(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := ValidateJSON(b); err != nil {
			t.Errorf("%s: %v", f.Type, err)
		}
	}
}

// The schema names every field the Go types emit: a finding with every
// field set (then made semantically valid) passes, so a field added to
// the types without the schema fails here.
func TestSchemaCoversEveryField(t *testing.T) {
	var f Finding
	fill(reflect.ValueOf(&f).Elem())
	f.ID, f.Type, f.Severity, f.SeverityLabel, f.SchemaVersion = strings.Repeat("ab", 16), "Custom:Runtime/Full", 5, "Medium", SchemaVersion
	f.Resource.ResourceType = "ECSCluster"
	f.Service.FeatureName, f.Service.Count = "RuntimeMonitoring", 3
	f.Service.RuntimeDetails.Process.ExecutableSha256 = strings.Repeat("0", 64)
	f.Service.RuntimeDetails.Context = map[string]any{"anything": []any{1, "x"}}
	b, err := json.Marshal(&f)
	if err != nil {
		t.Fatal(err)
	}
	if err := ValidateJSON(b); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
}

func TestSchemaRejects(t *testing.T) {
	good, _ := json.Marshal(Samples(agent)[0])
	for what, mutate := range map[string]func(m map[string]any){
		"unknown top-level field": func(m map[string]any) { m["severityScore"] = 3 },
		"count zero":              func(m map[string]any) { m["service"].(map[string]any)["count"] = 0 },
		"bad time":                func(m map[string]any) { m["createdAt"] = "yesterday" },
		"missing resource type":   func(m map[string]any) { delete(m["resource"].(map[string]any), "resourceType") },
		"EKS without kubernetes": func(m map[string]any) {
			r := m["resource"].(map[string]any)
			r["resourceType"] = "EKSCluster"
			delete(r, "kubernetesDetails")
		},
		"empty evidence": func(m map[string]any) {
			m["service"].(map[string]any)["evidence"] = map[string]any{"threatIntelligenceDetails": []any{}}
		},
	} {
		var m map[string]any
		if err := json.Unmarshal(good, &m); err != nil {
			t.Fatal(err)
		}
		mutate(m)
		b, _ := json.Marshal(m)
		if err := ValidateJSON(b); err == nil {
			t.Errorf("%s: accepted", what)
		}
	}
	if err := ValidateJSON(good); err != nil {
		t.Fatalf("the unmutated sample fails: %v", err)
	}
}

func fill(v reflect.Value) {
	switch v.Kind() {
	case reflect.Struct:
		if v.Type() == reflect.TypeOf(time.Time{}) {
			v.Set(reflect.ValueOf(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)))
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
		if e.Kind() != reflect.Interface {
			fill(e)
		}
		m.SetMapIndex(k, e)
		v.Set(m)
	case reflect.String:
		v.SetString("x")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int32, reflect.Int64:
		v.SetInt(7)
	case reflect.Uint, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(7)
	case reflect.Float64:
		v.SetFloat(7)
	}
}

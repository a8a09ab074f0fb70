package export

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mamori-dev/mamori/internal/finding"
)

var update = flag.Bool("update", false, "rewrite the golden files")

var testOptions = Options{Cluster: "prod-eu", ProductVersion: "0.1.0", AwsAccountID: "123456789012", Region: "eu-west-1"}

func TestFixturesValid(t *testing.T) {
	for name, f := range fixtures() {
		if err := finding.Validate(f); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestGolden compares every format's encoding of every fixture with the
// files in testdata (go test -update rewrites them after a deliberate
// change).
func TestGolden(t *testing.T) {
	for name, f := range fixtures() {
		for _, format := range Formats {
			for _, isNew := range []bool{true, false} {
				if !isNew && format != FormatOCSF {
					continue // only OCSF encodes the difference
				}
				enc, err := NewEncoder(format, testOptions)
				if err != nil {
					t.Fatal(err)
				}
				b, err := enc.Encode(f, isNew)
				if err != nil {
					t.Fatalf("%s %s: %v", name, format, err)
				}
				var pretty bytes.Buffer
				if err := json.Indent(&pretty, b, "", "  "); err != nil {
					t.Fatalf("%s %s: output is not JSON: %v", name, format, err)
				}
				pretty.WriteByte('\n')
				file := filepath.Join("testdata", name+"."+string(format)+".json")
				if !isNew {
					file = filepath.Join("testdata", name+"."+string(format)+".update.json")
				}
				if *update {
					if err := os.WriteFile(file, pretty.Bytes(), 0o644); err != nil {
						t.Fatal(err)
					}
					continue
				}
				want, err := os.ReadFile(file)
				if err != nil {
					t.Fatalf("%v (run go test -update to create)", err)
				}
				if !bytes.Equal(pretty.Bytes(), want) {
					t.Errorf("%s differs from the golden file; got:\n%s", file, pretty.String())
				}
			}
		}
	}
}

func decode(t *testing.T, format Format, f *finding.Finding, isNew bool) map[string]any {
	t.Helper()
	enc, err := NewEncoder(format, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	b, err := enc.Encode(f, isNew)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// get walks a dotted path through decoded JSON; numeric parts index arrays.
func get(m any, path string) (any, bool) {
	cur := m
	for _, p := range strings.Split(path, ".") {
		switch c := cur.(type) {
		case map[string]any:
			v, ok := c[p]
			if !ok {
				return nil, false
			}
			cur = v
		case []any:
			i := 0
			for _, r := range p {
				if r < '0' || r > '9' {
					return nil, false
				}
				i = i*10 + int(r-'0')
			}
			if i >= len(c) {
				return nil, false
			}
			cur = c[i]
		default:
			return nil, false
		}
	}
	return cur, true
}

func requireFields(t *testing.T, name string, m map[string]any, paths ...string) {
	t.Helper()
	for _, p := range paths {
		v, ok := get(m, p)
		if !ok || v == nil || v == "" {
			t.Errorf("%s: required field %s missing or empty", name, p)
		}
	}
}

// TestOCSFRequired checks the attributes OCSF 1.3 marks required for a
// Detection Finding and its objects, and the enum values used.
func TestOCSFRequired(t *testing.T) {
	for name, f := range fixtures() {
		for _, isNew := range []bool{true, false} {
			m := decode(t, FormatOCSF, f, isNew)
			requireFields(t, name, m, "activity_id", "category_uid", "class_uid", "type_uid", "time", "severity_id",
				"metadata.version", "metadata.product.name", "finding_info.uid", "finding_info.title",
				"finding_info.created_time", "finding_info.first_seen_time", "finding_info.last_seen_time",
				"device.type_id", "evidences.0", "resources.0.uid")
			num := func(p string) float64 { v, _ := get(m, p); n, _ := v.(float64); return n }
			if num("class_uid") != 2004 || num("category_uid") != 2 {
				t.Errorf("%s: class %v category %v", name, num("class_uid"), num("category_uid"))
			}
			wantAct := 2.0
			if isNew {
				wantAct = 1
			}
			if num("activity_id") != wantAct || num("type_uid") != 2004*100+wantAct {
				t.Errorf("%s new=%v: activity %v type_uid %v", name, isNew, num("activity_id"), num("type_uid"))
			}
			wantSev := map[string]float64{"Low": 2, "Medium": 3, "High": 4, "Critical": 5}[f.SeverityLabel]
			if num("severity_id") != wantSev {
				t.Errorf("%s: severity_id %v for %s", name, num("severity_id"), f.SeverityLabel)
			}
			if num("finding_info.last_seen_time") != float64(f.Service.EventLastSeen.UnixMilli()) {
				t.Errorf("%s: last_seen_time %v", name, num("finding_info.last_seen_time"))
			}
			if v, _ := get(m, "finding_info.types.0"); v != f.Type {
				t.Errorf("%s: types[0] %v", name, v)
			}
			// Evidence needs at least one artifact; a process needs its
			// file's name and type.
			ev, _ := get(m, "evidences.0")
			if len(ev.(map[string]any)) == 0 {
				t.Errorf("%s: empty evidence", name)
			}
			if f.Service.RuntimeDetails.Process != nil {
				requireFields(t, name, m, "evidences.0.process.pid", "evidences.0.process.file.name", "evidences.0.process.file.type_id")
			}
			if f.Resource.ContainerDetails != nil {
				requireFields(t, name, m, "evidences.0.container.uid", "evidences.0.process.container.uid")
			}
			if hashes, ok := get(m, "evidences.0.process.file.hashes"); ok {
				for _, h := range hashes.([]any) {
					requireFields(t, name, h.(map[string]any), "algorithm_id", "value")
				}
			}
		}
	}
}

var asffTimeRE = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`)

// TestASFFRequired checks the fields BatchImportFindings requires and the
// limits it enforces.
func TestASFFRequired(t *testing.T) {
	for name, f := range fixtures() {
		m := decode(t, FormatASFF, f, true)
		requireFields(t, name, m, "SchemaVersion", "Id", "ProductArn", "GeneratorId", "AwsAccountId", "Types.0",
			"CreatedAt", "UpdatedAt", "Severity.Label", "Title", "Description", "Resources.0.Type", "Resources.0.Id")
		if m["SchemaVersion"] != "2018-10-08" {
			t.Errorf("%s: SchemaVersion %v", name, m["SchemaVersion"])
		}
		for _, k := range []string{"CreatedAt", "UpdatedAt", "FirstObservedAt", "LastObservedAt"} {
			if s, _ := m[k].(string); !asffTimeRE.MatchString(s) {
				t.Errorf("%s: %s %q is not ISO 8601 with milliseconds", name, k, s)
			}
		}
		typ := m["Types"].([]any)[0].(string)
		ns := strings.SplitN(typ, "/", 3)
		if len(ns) != 3 || !slices.Contains([]string{"Software and Configuration Checks", "TTPs", "Effects", "Unusual Behaviors", "Sensitive Data Identifications"}, ns[0]) {
			t.Errorf("%s: type %q is not namespace/category/classifier", name, typ)
		}
		sev := m["Severity"].(map[string]any)
		n := sev["Normalized"].(float64)
		label := "INFORMATIONAL"
		switch {
		case n >= 90:
			label = "CRITICAL"
		case n >= 70:
			label = "HIGH"
		case n >= 40:
			label = "MEDIUM"
		case n >= 1:
			label = "LOW"
		}
		if sev["Label"] != label {
			t.Errorf("%s: label %v does not match normalized %v (Security Hub's bands)", name, sev["Label"], n)
		}
		if len(m["Title"].(string)) > 256 || len(m["Description"].(string)) > 1024 {
			t.Errorf("%s: title or description over the limit", name)
		}
		if pf := m["ProductFields"].(map[string]any); len(pf) > 50 {
			t.Errorf("%s: %d product fields", name, len(pf))
		}
		wantState := "ACTIVE"
		if f.Service.Archived {
			wantState = "ARCHIVED"
		}
		if m["RecordState"] != wantState {
			t.Errorf("%s: RecordState %v", name, m["RecordState"])
		}
	}
}

func TestASFFLimits(t *testing.T) {
	f := fixtures()["custom-rule"]
	f.Title = strings.Repeat("é", 300)
	f.Description = strings.Repeat("x", 5000)
	for i := range 100 {
		f.Service.RuntimeDetails.Context[strings.Repeat("k", i+1)] = strings.Repeat("v", 3000)
	}
	a := ASFF(f, testOptions)
	if len(a.Title) > asffTitleMax || len(a.Description) > asffDescriptionMax || len(a.ProductFields) > asffProductFieldsMax {
		t.Fatalf("limits not applied: title %d description %d fields %d", len(a.Title), len(a.Description), len(a.ProductFields))
	}
	if !strings.HasSuffix(a.Title, "…") || !json.Valid([]byte(`"`+a.Title+`"`)) {
		t.Errorf("title not cut on a rune boundary: %q", a.Title[len(a.Title)-8:])
	}
	for k, v := range a.ProductFields {
		if len(v) > asffFieldValueMax {
			t.Errorf("product field %s is %d bytes", k, len(v))
		}
	}
}

func TestEventBusEnvelope(t *testing.T) {
	for name, f := range fixtures() {
		m := decode(t, FormatEventBus, f, true)
		requireFields(t, name, m, "version", "id", "detail-type", "source", "account", "time", "region", "detail.id")
		if m["detail-type"] != "Mamori Finding" || m["source"] != "mamori" || m["account"] != "prod-eu" || m["region"] != "node-7f3a" {
			t.Errorf("%s: envelope %v %v %v %v", name, m["detail-type"], m["source"], m["account"], m["region"])
		}
		// The detail is the finding, unchanged.
		var back finding.Finding
		b, _ := json.Marshal(m["detail"])
		if err := json.Unmarshal(b, &back); err != nil || back.ID != f.ID || back.Service.Count != f.Service.Count {
			t.Errorf("%s: detail does not round-trip: %v", name, err)
		}
		if _, err := time.Parse(time.RFC3339, m["time"].(string)); err != nil {
			t.Errorf("%s: time: %v", name, err)
		}
	}
}

func TestRecordID(t *testing.T) {
	f := fixtures()["reverse-shell"]
	a := RecordID(f)
	if !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(a) {
		t.Fatalf("record id %q is not UUID-shaped", a)
	}
	if RecordID(f) != a {
		t.Fatal("record id not stable")
	}
	f.Service.Count++
	if RecordID(f) == a {
		t.Fatal("a new revision kept the record id")
	}
}

func TestFalcoAlert(t *testing.T) {
	for name, f := range fixtures() {
		m := decode(t, FormatFalco, f, true)
		requireFields(t, name, m, "output", "priority", "rule", "time", "output_fields", "source", "tags", "hostname")
		if !slices.Contains([]string{"Emergency", "Alert", "Critical", "Error", "Warning", "Notice", "Informational", "Debug"}, m["priority"].(string)) {
			t.Errorf("%s: priority %v is not a Falco priority", name, m["priority"])
		}
		if _, err := time.Parse(time.RFC3339Nano, m["time"].(string)); err != nil {
			t.Errorf("%s: time %v", name, err)
		}
		out := m["output"].(string)
		if strings.ContainsAny(out, "\n\x1b") {
			t.Errorf("%s: output carries control characters: %q", name, out)
		}
		if !strings.Contains(out, " "+m["priority"].(string)+" ") {
			t.Errorf("%s: output %q lacks the priority", name, out)
		}
		fields := m["output_fields"].(map[string]any)
		if c := f.Resource.ContainerDetails; c != nil && fields["container.id"] != c.ID[:12] {
			t.Errorf("%s: container.id %v", name, fields["container.id"])
		}
	}
}

func TestParse(t *testing.T) {
	for _, f := range Formats {
		if g, err := ParseFormat(string(f)); err != nil || g != f {
			t.Errorf("ParseFormat(%s) = %v, %v", f, g, err)
		}
	}
	if _, err := ParseFormat("xml"); err == nil {
		t.Error("xml accepted")
	}
	for _, s := range []string{"15m", "1h", "6h"} {
		if _, err := ParseUpdateFrequency(s); err != nil {
			t.Error(err)
		}
	}
	for _, s := range []string{"10m", "", "1d"} {
		if _, err := ParseUpdateFrequency(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
}

package ingest_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/mamori-dev/mamori/internal/finding"
	"github.com/mamori-dev/mamori/internal/server/ingest"
)

// FuzzDecodeFinding feeds arbitrary payloads to the finding decoder: no
// panic, and whatever it accepts is a valid finding of the sender that
// survives a re-encode.
func FuzzDecodeFinding(f *testing.F) {
	for _, s := range finding.Samples(finding.Agent{NodeID: "n1", Hostname: "h", Version: "1"}) {
		b, _ := json.Marshal(s)
		f.Add(b)
	}
	b, _ := json.Marshal(validFinding("n1"))
	f.Add(b)
	f.Add([]byte(`{"id":"0123456789abcdef0123456789abcdef"}`))
	f.Add([]byte(`{"service":{"runtimeDetails":{"context":{"a":[[[[[[[{}]]]]]]]}}}}`))
	f.Add([]byte("\x00\xff{"))
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := ingest.DecodeFinding(data, 64<<10, "n1", now)
		if err != nil {
			return
		}
		if err := finding.Validate(got); err != nil {
			t.Fatalf("accepted an invalid finding: %v", err)
		}
		if got.Resource.InstanceDetails == nil || got.Resource.InstanceDetails.NodeID != "n1" {
			t.Fatal("accepted a finding of another node")
		}
		again, err := json.Marshal(got)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if _, err := ingest.DecodeFinding(again, 1<<20, "n1", now); err != nil {
			t.Fatalf("re-encoded finding refused: %v", err)
		}
	})
}

package coverage_test

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/mamori-dev/mamori/internal/server/coverage"
)

// FuzzDecodeHeartbeat feeds arbitrary bytes to the heartbeat decoder: it
// must never panic, everything it accepts must be valid, and re-encoding
// an accepted heartbeat must decode to the same document.
func FuzzDecodeHeartbeat(f *testing.F) {
	good, _ := json.Marshal(healthy("n1", time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)))
	f.Add(good)
	f.Add([]byte(`{"nodeId":"n","agentVersion":"1","btf":true,"time":"2026-03-01T12:00:00Z"}`))
	f.Add([]byte(`{"nodeId":"n","time":"2026-03-01T12:00:00Z","exit":{"code":-1,"reason":"\u0000"}}`))
	f.Add([]byte(`{"nodeId":"n","time":"2026-03-01T12:00:00Z","drops":{"kernel":18446744073709551615}}`))
	f.Add([]byte(`{"nodeId":"n","time":"2026-03-01T12:00:00Z"} {}`))
	f.Add([]byte(`{"nodeId":"n","time":"2026-03-01T12:00:00Z","extra":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := coverage.Decode(data)
		if err != nil {
			return
		}
		if err := h.Validate(); err != nil {
			t.Fatalf("accepted an invalid heartbeat: %v", err)
		}
		b, err := json.Marshal(h)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		h2, err := coverage.Decode(b)
		if err != nil {
			t.Fatalf("re-encoded heartbeat refused: %v\n%s", err, b)
		}
		b2, _ := json.Marshal(h2)
		if !bytes.Equal(b, b2) {
			t.Fatalf("round trip differs:\n%s\n%s", b, b2)
		}
	})
}

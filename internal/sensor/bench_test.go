package sensor

import (
	"os"
	"testing"

	"github.com/mamori-dev/mamori/internal/event"
)

// The records in testdata were read off the ring buffer of a loaded sensor
// on kernel 6.18: exec.rec is `/bin/true --mamori-bench "recorded exec"`
// run from /tmp with a three-variable environment; connect-unix.rec is
// bash's failed connect to /var/run/nscd/socket.
func loadRecord(b *testing.B, name string, kind event.Kind) []byte {
	b.Helper()
	rec, err := os.ReadFile("testdata/" + name)
	if err != nil {
		b.Fatal(err)
	}
	ev, err := NewDecoder().Decode(rec)
	if err != nil {
		b.Fatalf("%s: %v", name, err)
	}
	if ev.Kind != kind {
		b.Fatalf("%s: kind %s, want %s", name, ev.Kind, kind)
	}
	return rec
}

// BenchmarkDecodeExec decodes a real exec record: path walk reversal,
// argv and environment split, LD_* extraction.
func BenchmarkDecodeExec(b *testing.B) {
	rec := loadRecord(b, "exec.rec", event.KindExec)
	d := NewDecoder()
	b.ReportAllocs()
	b.SetBytes(int64(len(rec)))
	for b.Loop() {
		ev, err := d.Decode(rec)
		if err != nil || ev.Exec == nil || ev.Exec.LDLibPath != "/opt/lib" {
			b.Fatalf("decode: %v %+v", err, ev)
		}
	}
}

// BenchmarkDecodeConnect decodes a real failed unix connect record, the
// kind the agent's throughput benchmark floods with.
func BenchmarkDecodeConnect(b *testing.B) {
	rec := loadRecord(b, "connect-unix.rec", event.KindConnect)
	d := NewDecoder()
	b.ReportAllocs()
	b.SetBytes(int64(len(rec)))
	for b.Loop() {
		ev, err := d.Decode(rec)
		if err != nil || ev.Net == nil || ev.Error == "" {
			b.Fatalf("decode: %v %+v", err, ev)
		}
	}
}

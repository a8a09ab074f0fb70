package transport

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// DefaultStreamMaxBytes bounds the MAMORI stream: ~60,000 agent messages,
// tens of seconds of what a server replica stores. Past it the stream
// refuses for now and agents back off into their spools (see pacer): under
// overload a small bound keeps the server's intake near what it can store —
// at 10,000 + 5,000 messages/s offered on the 2-vCPU bench host a server
// stored ~2,100 messages/s with this bound (agents backing off) and 616
// with 1 GiB — and the backlog waits on the nodes, not in the server's
// memory.
const DefaultStreamMaxBytes = 64 << 20

// StreamOptions sizes the MAMORI stream. Zero values take the defaults.
type StreamOptions struct {
	Replicas   int           // 1; use 3 on an external cluster
	MaxBytes   int64         // DefaultStreamMaxBytes
	MaxAge     time.Duration // 7 days
	Duplicates time.Duration // de-duplication window, 2 minutes (see EnsureStream)
	// PausedSince, when set, keeps a DiskGuard's pause in force since then:
	// the bound stays at one byte until the guard lifts it.
	PausedSince time.Time
}

// EnsureStream creates or updates the MAMORI stream: a file-backed work
// queue (each message is removed once one server replica acks it) over the
// agents' three subjects, with Nats-Msg-Id de-duplication. When full it
// refuses new messages rather than dropping stored ones, so agents spool
// (and count) instead of the server losing data silently.
//
// The de-duplication window is short on purpose: JetStream keeps every
// message id of the window in memory, so at 3,000 messages/s a 2-hour window
// holds ~20 million ids (gigabytes). It covers a publisher's resend after an
// ack timeout; older replays are refused by the store's applied-message
// record (kept 48 h) and the consumer's replay cache.
func EnsureStream(ctx context.Context, js jetstream.JetStream, o StreamOptions) (jetstream.Stream, error) {
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultStreamMaxBytes
	}
	if o.MaxAge <= 0 {
		o.MaxAge = 7 * 24 * time.Hour
	}
	if o.Duplicates <= 0 {
		o.Duplicates = 2 * time.Minute
	}
	var md map[string]string
	if !o.PausedSince.IsZero() {
		o.MaxBytes = 1
		md = map[string]string{refusingSinceKey: o.PausedSince.UTC().Format(time.RFC3339Nano)}
	}
	st, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        StreamName,
		Description: "mamori agent findings, heartbeats and events",
		Subjects:    StreamSubjects(),
		Retention:   jetstream.WorkQueuePolicy,
		Discard:     jetstream.DiscardNew,
		MaxBytes:    o.MaxBytes,
		MaxAge:      o.MaxAge,
		MaxMsgSize:  MaxEnvelopeBytes + 4096,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
		Duplicates:  o.Duplicates,
		DenyDelete:  true,
		Metadata:    md,
	})
	if err != nil {
		return nil, fmt.Errorf("ensure stream %s: %w", StreamName, err)
	}
	return st, nil
}

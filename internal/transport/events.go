package transport

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The server's own event stream: what the control plane announces to
// integrators (coverage status transitions), kept for a week. Agents cannot
// publish or read here.
const (
	EventStreamName = "MAMORI_EVENTS"
	eventSubjects   = "mamori.events.>"
)

// CoverageEventSubject is where a node's coverage transitions are published.
func CoverageEventSubject(nodeID string) string { return "mamori.events.coverage." + nodeID }

// EventPublisher publishes control-plane events. Every replica publishes
// every event it learns of with the same message id, and the stream's
// de-duplication keeps one: an event is out once whichever replica saw it.
type EventPublisher struct{ js jetstream.JetStream }

// NewEventPublisher creates or updates the event stream.
func NewEventPublisher(ctx context.Context, js jetstream.JetStream, replicas int) (*EventPublisher, error) {
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        EventStreamName,
		Description: "mamori control-plane events: coverage status transitions",
		Subjects:    []string{eventSubjects},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      7 * 24 * time.Hour,
		MaxBytes:    256 << 20,
		Storage:     jetstream.FileStorage,
		Replicas:    max(replicas, 1),
		Duplicates:  2 * time.Hour,
	})
	if err != nil {
		return nil, fmt.Errorf("ensure stream %s: %w", EventStreamName, err)
	}
	return &EventPublisher{js: js}, nil
}

// Publish sends v as JSON on subject with message id id.
func (p *EventPublisher) Publish(ctx context.Context, subject, id string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("publish event: %w", err)
	}
	msg := nats.NewMsg(subject)
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, id)
	msg.Header.Set("Content-Type", "application/json")
	if _, err := p.js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("publish event %s: %w", id, err)
	}
	return nil
}

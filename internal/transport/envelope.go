package transport

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// EnvelopeVersion is the only envelope version this build reads and writes.
const EnvelopeVersion = 1

// MaxEnvelopeBytes bounds one encoded envelope. The stream, the agents' NATS
// user and the decoder all enforce it.
const MaxEnvelopeBytes = 512 << 10

// Envelope is the versioned wrapper around everything an agent publishes.
// Payload is the kind's own JSON document (a finding, a heartbeat, an event);
// the transport does not interpret it.
type Envelope struct {
	V       int             `json:"v"`
	Kind    Kind            `json:"kind"`
	NodeID  string          `json:"nodeId"`
	MsgID   string          `json:"msgId"`
	SentAt  time.Time       `json:"sentAt"`
	Payload json.RawMessage `json:"payload"`
}

// Reject reasons: the label of mamori_transport_rejected_total and the Reason
// of a RejectError.
const (
	ReasonOversized    = "oversized"
	ReasonMalformed    = "malformed"
	ReasonVersion      = "version"
	ReasonKind         = "kind"
	ReasonNodeID       = "node_id"
	ReasonMsgID        = "msg_id"
	ReasonSentAt       = "sent_at"
	ReasonPayload      = "payload"
	ReasonSubject      = "subject"
	ReasonNodeMismatch = "node_mismatch"
	ReasonKindMismatch = "kind_mismatch"
	ReasonHeader       = "msg_id_header"
	ReasonStale        = "stale"
	ReasonFuture       = "future"
	ReasonReplay       = "replay"
)

// RejectError says why an incoming message was refused.
type RejectError struct {
	Reason string // one of the Reason constants
	Detail string
}

func (e *RejectError) Error() string { return "rejected (" + e.Reason + "): " + e.Detail }

func reject(reason, format string, args ...any) error {
	return &RejectError{Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// RejectReason returns the reason of a RejectError in err's chain, or "".
func RejectReason(err error) string {
	var re *RejectError
	if errors.As(err, &re) {
		return re.Reason
	}
	return ""
}

// NewMsgID returns a fresh random 128-bit message id (32 hex digits). It is
// unguessable, so one node cannot pre-empt another's de-duplication ids.
func NewMsgID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux
	return hex.EncodeToString(b[:])
}

// ValidMsgID reports whether id is 16 to 64 of [A-Za-z0-9_-].
func ValidMsgID(id string) bool {
	return len(id) >= 16 && ValidNodeID(id)
}

// NewEnvelope wraps payload (any JSON-marshalable value, or json.RawMessage)
// for nodeID with a fresh msgId and the current time.
func NewEnvelope(nodeID string, kind Kind, payload any) (*Envelope, error) {
	raw, given := payload.(json.RawMessage)
	if !given {
		var err error
		if raw, err = json.Marshal(payload); err != nil {
			return nil, fmt.Errorf("encode %s payload: %w", kind, err)
		}
	}
	e := &Envelope{V: EnvelopeVersion, Kind: kind, NodeID: nodeID, MsgID: NewMsgID(),
		SentAt: time.Now().UTC().Truncate(time.Microsecond), Payload: raw}
	check := e.Validate
	if !given {
		check = e.validateFields // json.Marshal made it: valid JSON
	}
	if err := check(); err != nil {
		return nil, err
	}
	return e, nil
}

// Encode validates e and returns its JSON form, refusing anything over MaxEnvelopeBytes.
func (e *Envelope) Encode() ([]byte, error) {
	if err := e.validateFields(); err != nil {
		return nil, err
	}
	// The marshal checks the payload is valid JSON as it copies it.
	b, err := jsonv2.Marshal(e)
	if err != nil {
		return nil, reject(ReasonPayload, "encode envelope: %v", err)
	}
	if len(b) > MaxEnvelopeBytes {
		return nil, reject(ReasonOversized, "envelope is %d bytes, limit %d", len(b), MaxEnvelopeBytes)
	}
	return b, nil
}

// Validate checks every field: version, kind, ids, time and that the payload
// is a JSON object.
func (e *Envelope) Validate() error {
	if err := e.validateFields(); err != nil {
		return err
	}
	if !json.Valid(e.Payload) {
		return reject(ReasonPayload, "payload is not a JSON object")
	}
	return nil
}

// validateFields is Validate short of parsing the payload, for a payload
// already parsed.
func (e *Envelope) validateFields() error {
	if e.V != EnvelopeVersion {
		return reject(ReasonVersion, "unsupported envelope version %d", e.V)
	}
	if !e.Kind.Valid() {
		return reject(ReasonKind, "unknown kind %q", e.Kind)
	}
	if !ValidNodeID(e.NodeID) {
		return reject(ReasonNodeID, "invalid node id %q", e.NodeID)
	}
	if !ValidMsgID(e.MsgID) {
		return reject(ReasonMsgID, "invalid msg id %q", e.MsgID)
	}
	if e.SentAt.IsZero() {
		return reject(ReasonSentAt, "sentAt missing")
	}
	p := bytes.TrimLeft(e.Payload, " \t\r\n")
	if len(p) == 0 || p[0] != '{' {
		return reject(ReasonPayload, "payload is not a JSON object")
	}
	return nil
}

// DecodeEnvelope parses and validates one envelope, refusing input over
// limit bytes (MaxEnvelopeBytes when limit <= 0). It is strict where the
// standard decoder is lenient: field names must match exactly, a field may
// appear once, unknown fields and trailing data are errors. Errors are
// *RejectError.
func DecodeEnvelope(data []byte, limit int) (*Envelope, error) {
	if limit <= 0 {
		limit = MaxEnvelopeBytes
	}
	if len(data) > limit {
		return nil, reject(ReasonOversized, "message is %d bytes, limit %d", len(data), limit)
	}
	// One pass of a strict decoder: names match exactly, a name appears
	// once, unknown names, invalid UTF-8 and trailing data are errors. The
	// payload is checked as JSON by that same pass.
	var w wireEnvelope
	if err := jsonv2.Unmarshal(data, &w, jsonv2.RejectUnknownMembers(true)); err != nil {
		return nil, reject(ReasonMalformed, "%v", err)
	}
	for i, present := range [...]bool{w.V != nil, w.Kind != nil, w.NodeID != nil, w.MsgID != nil, w.SentAt != nil, w.Payload != nil} {
		if !present {
			return nil, reject(ReasonMalformed, "missing or null field %q", envelopeFields[i])
		}
	}
	e := Envelope{V: *w.V, Kind: *w.Kind, NodeID: *w.NodeID, MsgID: *w.MsgID, SentAt: *w.SentAt, Payload: json.RawMessage(w.Payload)}
	if err := e.validateFields(); err != nil {
		return nil, err
	}
	return &e, nil
}

var envelopeFields = [...]string{"v", "kind", "nodeId", "msgId", "sentAt", "payload"}

// wireEnvelope is an Envelope as decoded: nil marks an absent field.
type wireEnvelope struct {
	V       *int           `json:"v"`
	Kind    *Kind          `json:"kind"`
	NodeID  *string        `json:"nodeId"`
	MsgID   *string        `json:"msgId"`
	SentAt  *time.Time     `json:"sentAt"`
	Payload jsontext.Value `json:"payload"`
}

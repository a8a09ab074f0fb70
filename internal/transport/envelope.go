package transport

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
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
	raw, ok := payload.(json.RawMessage)
	if !ok {
		var err error
		if raw, err = json.Marshal(payload); err != nil {
			return nil, fmt.Errorf("encode %s payload: %w", kind, err)
		}
	}
	e := &Envelope{V: EnvelopeVersion, Kind: kind, NodeID: nodeID, MsgID: NewMsgID(),
		SentAt: time.Now().UTC().Truncate(time.Microsecond), Payload: raw}
	if err := e.Validate(); err != nil {
		return nil, err
	}
	return e, nil
}

// Encode validates e and returns its JSON form, refusing anything over MaxEnvelopeBytes.
func (e *Envelope) Encode() ([]byte, error) {
	if err := e.Validate(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("encode envelope: %w", err)
	}
	if len(b) > MaxEnvelopeBytes {
		return nil, reject(ReasonOversized, "envelope is %d bytes, limit %d", len(b), MaxEnvelopeBytes)
	}
	return b, nil
}

// Validate checks every field: version, kind, ids, time and that the payload
// is a JSON object.
func (e *Envelope) Validate() error {
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
	if len(p) == 0 || p[0] != '{' || !json.Valid(p) {
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
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, reject(ReasonMalformed, "not a JSON object")
	}
	var e Envelope
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, reject(ReasonMalformed, "bad key: %v", err)
		}
		key, _ := tok.(string)
		if seen[key] {
			return nil, reject(ReasonMalformed, "duplicate field %q", key)
		}
		seen[key] = true
		var target any
		switch key {
		case "v":
			target = &e.V
		case "kind":
			target = &e.Kind
		case "nodeId":
			target = &e.NodeID
		case "msgId":
			target = &e.MsgID
		case "sentAt":
			target = &e.SentAt
		case "payload":
			target = &e.Payload
		default:
			return nil, reject(ReasonMalformed, "unknown field %q", key)
		}
		if err := dec.Decode(target); err != nil {
			return nil, reject(ReasonMalformed, "field %q: %v", key, err)
		}
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return nil, reject(ReasonMalformed, "unterminated object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, reject(ReasonMalformed, "trailing data after envelope")
	}
	for _, f := range []string{"v", "kind", "nodeId", "msgId", "sentAt", "payload"} {
		if !seen[f] {
			return nil, reject(ReasonMalformed, "missing field %q", f)
		}
	}
	if err := e.Validate(); err != nil {
		return nil, err
	}
	return &e, nil
}

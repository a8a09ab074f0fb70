package transport

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

// Kind says what an envelope carries. Each kind has its own subject, its own
// spool priority and its own metric label.
type Kind string

// The kinds an agent publishes.
const (
	KindFinding   Kind = "finding"
	KindHeartbeat Kind = "heartbeat"
	KindEvent     Kind = "event"
)

// Kinds lists every kind, in spool preference order: the first is kept longest.
var Kinds = []Kind{KindFinding, KindEvent, KindHeartbeat}

// subjectSuffix is the last subject token for each kind.
var subjectSuffix = map[Kind]string{
	KindFinding:   "findings",
	KindHeartbeat: "heartbeat",
	KindEvent:     "events",
}

// Valid reports whether k is one of the known kinds.
func (k Kind) Valid() bool {
	_, ok := subjectSuffix[k]
	return ok
}

// Subject names used on the bus.
const (
	// SubjectPrefix starts every subject an agent publishes on.
	SubjectPrefix = "mamori.agent."
	// StreamName is the JetStream stream holding agent messages.
	StreamName = "MAMORI"
	// DefaultDurable is the durable pull consumer shared by server replicas.
	DefaultDurable = "mamori-ingest"
	// ControlAllSubject is where the server broadcasts to every agent
	// (rules, intel, policies); agents may subscribe to it.
	ControlAllSubject = "mamori.control.all.>"
	// inboxRoot prefixes each agent's private inbox; an agent may only
	// subscribe below its own inbox, so it cannot read others' acks.
	inboxRoot = "_INBOX_MAMORI."
)

// maxNodeIDLen bounds node ids so that subjects, headers and file names stay small.
const maxNodeIDLen = 64

// ValidNodeID reports whether id can be used as a node id: 1 to 64 of
// [A-Za-z0-9_-]. Dots and wildcards are excluded because the id is a subject token.
func ValidNodeID(id string) bool {
	if len(id) == 0 || len(id) > maxNodeIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if !idChar(id[i]) {
			return false
		}
	}
	return true
}

func idChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// NodeIDFor turns a host or Kubernetes node name into a valid node id. Names
// that are already valid come back unchanged; others have invalid bytes replaced
// and a short hash of the original appended, so "a.b" and "a_b" stay distinct.
func NodeIDFor(name string) string {
	if ValidNodeID(name) {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	suffix := "-" + hex.EncodeToString(sum[:4])
	var b strings.Builder
	for i := 0; i < len(name) && b.Len() < maxNodeIDLen-len(suffix); i++ {
		if idChar(name[i]) {
			b.WriteByte(name[i])
		} else {
			b.WriteByte('_')
		}
	}
	return b.String() + suffix
}

// SubjectFor is the subject node nodeID publishes kind on, e.g.
// mamori.agent.node-1.findings.
func SubjectFor(nodeID string, kind Kind) string {
	return SubjectPrefix + nodeID + "." + subjectSuffix[kind]
}

// StreamSubjects are the subjects the MAMORI stream captures. Anything else an
// agent could publish finds no stream and is never stored.
func StreamSubjects() []string {
	out := make([]string, 0, len(Kinds))
	for _, k := range Kinds {
		out = append(out, SubjectPrefix+"*."+subjectSuffix[k])
	}
	return out
}

// AgentPublishSubjects are the only subjects node nodeID may publish on.
func AgentPublishSubjects(nodeID string) []string {
	out := make([]string, 0, len(Kinds))
	for _, k := range Kinds {
		out = append(out, SubjectFor(nodeID, k))
	}
	return out
}

// AgentInboxPrefix is node nodeID's private inbox prefix (JetStream acks arrive there).
func AgentInboxPrefix(nodeID string) string { return inboxRoot + nodeID }

// AgentControlSubject is where the server addresses one node.
func AgentControlSubject(nodeID string) string { return "mamori.control.node." + nodeID + ".>" }

// ParseSubject splits an agent subject into node id and kind.
func ParseSubject(subject string) (nodeID string, kind Kind, err error) {
	rest, ok := strings.CutPrefix(subject, SubjectPrefix)
	if !ok {
		return "", "", fmt.Errorf("subject %q is not under %s", subject, SubjectPrefix)
	}
	nodeID, suffix, ok := strings.Cut(rest, ".")
	if !ok || !ValidNodeID(nodeID) {
		return "", "", fmt.Errorf("subject %q has no valid node id", subject)
	}
	for k, s := range subjectSuffix {
		if s == suffix {
			return nodeID, k, nil
		}
	}
	return "", "", fmt.Errorf("subject %q has unknown kind %q", subject, suffix)
}

// msgIDHeader is the JetStream de-duplication id of a message: node id and
// envelope msgId, so ids from different nodes never collide.
func msgIDHeader(nodeID, msgID string) string { return nodeID + ":" + msgID }

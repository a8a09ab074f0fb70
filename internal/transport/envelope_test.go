package transport

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestEnvelopeRoundTrip(t *testing.T) {
	env, err := NewEnvelope("node-1", KindFinding, map[string]any{"type": "Execution:Runtime/NewBinaryExecuted", "n": 3})
	if err != nil {
		t.Fatal(err)
	}
	data, err := env.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeEnvelope(data, 0)
	if err != nil {
		t.Fatalf("decode own encoding: %v", err)
	}
	if got.NodeID != env.NodeID || got.MsgID != env.MsgID || got.Kind != env.Kind || !got.SentAt.Equal(env.SentAt) ||
		!bytes.Equal(got.Payload, env.Payload) || got.V != EnvelopeVersion {
		t.Fatalf("round trip changed the envelope:\n got %+v\nwant %+v", got, env)
	}
	if a, b := NewMsgID(), NewMsgID(); a == b || !ValidMsgID(a) {
		t.Fatalf("msg ids %q %q", a, b)
	}
}

// validEnvelope returns the JSON of a valid envelope with field overrides
// spliced in as raw JSON text.
func validEnvelope(over map[string]string) string {
	fields := []struct{ k, v string }{
		{"v", "1"}, {"kind", `"finding"`}, {"nodeId", `"node-1"`},
		{"msgId", `"0123456789abcdef0123456789abcdef"`}, {"sentAt", `"2026-01-02T03:04:05Z"`},
		{"payload", `{"type":"X"}`},
	}
	var parts []string
	for _, f := range fields {
		v, ok := over[f.k]
		if !ok {
			v = f.v
		}
		if v == "<omit>" {
			continue
		}
		parts = append(parts, `"`+f.k+`":`+v)
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func TestDecodeEnvelopeRejectsHostileInput(t *testing.T) {
	if _, err := DecodeEnvelope([]byte(validEnvelope(nil)), 0); err != nil {
		t.Fatalf("baseline envelope rejected: %v", err)
	}
	cases := []struct {
		name, in, reason string
	}{
		{"empty", ``, ReasonMalformed},
		{"not json", `hello`, ReasonMalformed},
		{"array", `[1,2]`, ReasonMalformed},
		{"truncated", validEnvelope(nil)[:40], ReasonMalformed},
		{"trailing data", validEnvelope(nil) + `{}`, ReasonMalformed},
		{"unknown field", strings.Replace(validEnvelope(nil), `{`, `{"extra":1,`, 1), ReasonMalformed},
		{"duplicate field", strings.Replace(validEnvelope(nil), `{`, `{"nodeId":"node-2",`, 1), ReasonMalformed},
		{"case-folded field", strings.Replace(validEnvelope(nil), `"nodeId"`, `"NODEID"`, 1), ReasonMalformed},
		{"missing payload", validEnvelope(map[string]string{"payload": "<omit>"}), ReasonMalformed},
		{"missing msgId", validEnvelope(map[string]string{"msgId": "<omit>"}), ReasonMalformed},
		{"version 2", validEnvelope(map[string]string{"v": "2"}), ReasonVersion},
		{"version string", validEnvelope(map[string]string{"v": `"1"`}), ReasonMalformed},
		{"version float", validEnvelope(map[string]string{"v": "1.5"}), ReasonMalformed},
		{"unknown kind", validEnvelope(map[string]string{"kind": `"secrets"`}), ReasonKind},
		{"node id with dot", validEnvelope(map[string]string{"nodeId": `"a.b"`}), ReasonNodeID},
		{"node id wildcard", validEnvelope(map[string]string{"nodeId": `"*"`}), ReasonNodeID},
		{"node id too long", validEnvelope(map[string]string{"nodeId": `"` + strings.Repeat("a", 65) + `"`}), ReasonNodeID},
		{"node id null", validEnvelope(map[string]string{"nodeId": `null`}), ReasonMalformed},
		{"short msg id", validEnvelope(map[string]string{"msgId": `"abc"`}), ReasonMsgID},
		{"msg id with colon", validEnvelope(map[string]string{"msgId": `"0123456789abcdef:0123"`}), ReasonMsgID},
		{"bad time", validEnvelope(map[string]string{"sentAt": `"yesterday"`}), ReasonMalformed},
		{"zero time", validEnvelope(map[string]string{"sentAt": `"0001-01-01T00:00:00Z"`}), ReasonSentAt},
		{"payload string", validEnvelope(map[string]string{"payload": `"x"`}), ReasonPayload},
		{"payload null", validEnvelope(map[string]string{"payload": `null`}), ReasonPayload},
		{"payload array", validEnvelope(map[string]string{"payload": `[1]`}), ReasonPayload},
		{"oversized", validEnvelope(map[string]string{"payload": `{"x":"` + strings.Repeat("a", MaxEnvelopeBytes) + `"}`}), ReasonOversized},
		{"deep nesting", validEnvelope(map[string]string{"payload": strings.Repeat(`{"a":`, 20000) + "1" + strings.Repeat("}", 20000)}), ReasonMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			env, err := DecodeEnvelope([]byte(c.in), 0)
			if err == nil {
				t.Fatalf("accepted: %+v", env)
			}
			if got := RejectReason(err); got != c.reason {
				t.Fatalf("reason %q (%v), want %q", got, err, c.reason)
			}
		})
	}
}

func TestEncodeRefusesOversizedAndInvalid(t *testing.T) {
	big := map[string]string{"x": strings.Repeat("a", MaxEnvelopeBytes)}
	env, err := NewEnvelope("n1", KindEvent, big)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.Encode(); RejectReason(err) != ReasonOversized {
		t.Fatalf("encode of oversized envelope: %v", err)
	}
	if _, err := NewEnvelope("n.1", KindEvent, map[string]int{}); RejectReason(err) != ReasonNodeID {
		t.Fatalf("invalid node id accepted: %v", err)
	}
	if _, err := NewEnvelope("n1", KindEvent, []int{1}); RejectReason(err) != ReasonPayload {
		t.Fatalf("array payload accepted: %v", err)
	}
}

func TestSubjects(t *testing.T) {
	for _, k := range Kinds {
		s := SubjectFor("node-7", k)
		id, kind, err := ParseSubject(s)
		if err != nil || id != "node-7" || kind != k {
			t.Fatalf("ParseSubject(%q) = %q %q %v", s, id, kind, err)
		}
	}
	for _, bad := range []string{"", "mamori.agent.", "mamori.agent.n1", "mamori.agent.n1.secrets",
		"mamori.agent.n1.findings.extra", "other.agent.n1.findings", "mamori.agent.*.findings"} {
		if _, _, err := ParseSubject(bad); err == nil {
			t.Errorf("ParseSubject(%q) accepted", bad)
		}
	}
	for name, want := range map[string]bool{"ip-10-0-0-1": true, "a.b": false, "": false, "x y": false} {
		if ValidNodeID(name) != want {
			t.Errorf("ValidNodeID(%q) != %v", name, want)
		}
	}
	a, b := NodeIDFor("ip-10-0-0-1.ec2.internal"), NodeIDFor("ip-10-0-0-1_ec2_internal")
	if !ValidNodeID(a) || a == b {
		t.Fatalf("NodeIDFor: %q vs %q", a, b)
	}
	if long := NodeIDFor(strings.Repeat("x.", 200)); !ValidNodeID(long) {
		t.Fatalf("NodeIDFor of a long name: %q", long)
	}
}

// FuzzDecodeEnvelope: the decoder never panics, and whatever it accepts is
// valid and survives a re-encode unchanged.
func FuzzDecodeEnvelope(f *testing.F) {
	f.Add([]byte(validEnvelope(nil)))
	f.Add([]byte(validEnvelope(map[string]string{"kind": `"heartbeat"`, "payload": `{"a":[1,2,{"b":null}]}`})))
	f.Add([]byte(`{"v":1}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		env, err := DecodeEnvelope(data, 4096)
		if err != nil {
			if RejectReason(err) == "" {
				t.Fatalf("error without a reason: %v", err)
			}
			return
		}
		if err := env.Validate(); err != nil {
			t.Fatalf("accepted an invalid envelope: %v", err)
		}
		out, err := env.Encode()
		if err != nil {
			t.Fatalf("cannot re-encode an accepted envelope: %v", err)
		}
		again, err := DecodeEnvelope(out, len(out))
		if err != nil {
			t.Fatalf("re-encoded envelope rejected: %v", err)
		}
		var p1, p2 any
		_ = json.Unmarshal(env.Payload, &p1)
		_ = json.Unmarshal(again.Payload, &p2)
		if again.NodeID != env.NodeID || again.MsgID != env.MsgID || again.Kind != env.Kind ||
			!again.SentAt.Equal(env.SentAt) || !jsonEqual(p1, p2) {
			t.Fatalf("re-encode changed the envelope")
		}
	})
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

package dnsmsg

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// build packs a message with the given answers using the library's builder,
// so the tests check our reading against an independent writer.
func build(t testing.TB, id uint16, resp bool, rcode dnsmessage.RCode, name string, qtype dnsmessage.Type, answers ...any) []byte {
	t.Helper()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, Response: resp, RCode: rcode})
	b.EnableCompression()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	n := dnsmessage.MustNewName(name)
	must(b.StartQuestions())
	must(b.Question(dnsmessage.Question{Name: n, Type: qtype, Class: dnsmessage.ClassINET}))
	must(b.StartAnswers())
	for _, a := range answers {
		h := dnsmessage.ResourceHeader{Name: n, Class: dnsmessage.ClassINET, TTL: 60}
		switch a := a.(type) {
		case netip.Addr:
			if a.Is4() {
				must(b.AResource(h, dnsmessage.AResource{A: a.As4()}))
			} else {
				must(b.AAAAResource(h, dnsmessage.AAAAResource{AAAA: a.As16()}))
			}
		case string:
			must(b.CNAMEResource(h, dnsmessage.CNAMEResource{CNAME: dnsmessage.MustNewName(a)}))
		case []string:
			must(b.TXTResource(h, dnsmessage.TXTResource{TXT: a}))
		}
	}
	out, err := b.Finish()
	must(err)
	return out
}

func TestParse(t *testing.T) {
	v4 := netip.MustParseAddr("10.1.2.3")
	v6 := netip.MustParseAddr("2001:db8::7")
	cases := []struct {
		name string
		msg  []byte
		want Message
	}{
		{"query", build(t, 0x1234, false, 0, "c2.test.example.", dnsmessage.TypeA),
			Message{ID: 0x1234, RCode: "NOERROR", Questions: 1, Name: "c2.test.example", Type: "A"}},
		{"A answer", build(t, 7, true, 0, "c2.test.example.", dnsmessage.TypeA, v4),
			Message{ID: 7, Response: true, RCode: "NOERROR", Questions: 1, Name: "c2.test.example", Type: "A", Answers: []string{"10.1.2.3"}}},
		{"cname chain, txt skipped", build(t, 8, true, 0, "www.test.example.", dnsmessage.TypeAAAA, "edge.cdn.example.", []string{"x"}, v6),
			Message{ID: 8, Response: true, RCode: "NOERROR", Questions: 1, Name: "www.test.example", Type: "AAAA", Answers: []string{"edge.cdn.example", "2001:db8::7"}}},
		{"nxdomain", build(t, 9, true, dnsmessage.RCodeNameError, "missing.test.example.", dnsmessage.TypeTXT),
			Message{ID: 9, Response: true, RCode: "NXDOMAIN", Questions: 1, Name: "missing.test.example", Type: "TXT"}},
		{"odd type and rcode", build(t, 10, true, 9, "x.example.", 65400),
			Message{ID: 10, Response: true, RCode: "RCODE9", Questions: 1, Name: "x.example", Type: "TYPE65400"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Parse(c.msg)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if !equal(got, c.want) {
				t.Errorf("got %+v\nwant %+v", got, c.want)
			}
			tcp := binary.BigEndian.AppendUint16(nil, uint16(len(c.msg)))
			tcp = append(tcp, c.msg...)
			tcp = append(tcp, c.msg[:5]...) // a pipelined second message is ignored
			got, err = ParseTCP(tcp)
			if err != nil || !equal(got, c.want) {
				t.Errorf("tcp: got %+v, %v", got, err)
			}
		})
	}
}

func equal(a, b Message) bool {
	return a.ID == b.ID && a.Response == b.Response && a.Truncated == b.Truncated && a.RCode == b.RCode &&
		a.Questions == b.Questions && a.Name == b.Name && a.Type == b.Type && slices.Equal(a.Answers, b.Answers)
}

// A message cut anywhere keeps everything before the cut and says so.
func TestParseCut(t *testing.T) {
	msg := build(t, 1, true, 0, "c2.test.example.", dnsmessage.TypeA,
		netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("10.1.2.4"))
	full, err := Parse(msg)
	if err != nil || len(full.Answers) != 2 {
		t.Fatalf("full: %+v %v", full, err)
	}
	for n := 0; n < len(msg); n++ {
		got, err := Parse(msg[:n])
		if err == nil {
			t.Fatalf("cut at %d: no error (%+v)", n, got)
		}
		switch {
		case n < 12:
			if got.Name != "" || got.ID != 0 {
				t.Errorf("cut at %d inside header: %+v", n, got)
			}
		case got.Name == "":
			if !errors.Is(err, ErrNoQuestion) {
				t.Errorf("cut at %d: no name but error %v", n, err)
			}
		default:
			if got.Name != full.Name || !slices.Equal(got.Answers, full.Answers[:len(got.Answers)]) {
				t.Errorf("cut at %d: %+v", n, got)
			}
		}
	}
}

func TestParseHostile(t *testing.T) {
	hdr := []byte{0, 1, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0}
	cases := map[string][]byte{
		"empty":          nil,
		"pointer loop":   append(slices.Clone(hdr), 0xc0, 12, 0, 1, 0, 1),
		"reserved label": append(slices.Clone(hdr), 0x80, 0, 0, 1, 0, 1),
		"dot in label":   append(slices.Clone(hdr), 3, 'a', '.', 'b', 0, 0, 1, 0, 1),
		"label past end": append(slices.Clone(hdr), 63, 'a'),
		"name too long":  append(slices.Clone(hdr), []byte(strings.Repeat("\x3f"+strings.Repeat("a", 63), 5))...),
	}
	for name, b := range cases {
		if m, err := Parse(b); err == nil {
			t.Errorf("%s: parsed as %+v", name, m)
		}
	}
	if _, err := ParseTCP([]byte{0}); err == nil {
		t.Error("tcp without a length: no error")
	}
}

func FuzzParse(f *testing.F) {
	f.Add(build(f, 1, false, 0, "c2.test.example.", dnsmessage.TypeA))
	f.Add(build(f, 2, true, 0, "www.test.example.", dnsmessage.TypeAAAA, "edge.cdn.example.", netip.MustParseAddr("2001:db8::1")))
	f.Add(build(f, 3, true, dnsmessage.RCodeNameError, "nx.test.example.", dnsmessage.TypeA))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, parse := range []func([]byte) (Message, error){Parse, ParseTCP} {
			m, err := parse(b)
			if len(m.Answers) > MaxAnswers {
				t.Fatalf("%d answers kept", len(m.Answers))
			}
			if err == nil && m.Questions > 0 && (m.Name == "" || m.Type == "") {
				t.Fatalf("no error but no question: %+v", m)
			}
			if len(m.Name) > 1 && strings.HasSuffix(m.Name, ".") {
				t.Fatalf("name keeps its dot: %q", m.Name)
			}
		}
	})
}

package sensor

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/sys/unix"

	"github.com/mamori-dev/mamori/internal/event"
)

// dnsRecord lays out an EV_DNS record as bpf/dns.bpf.c writes it.
func dnsRecord(ingress bool, family, proto int, local, remote netip.Addr, lport, rport uint16, owner bool, payload []byte) []byte {
	b := make([]byte, hdrSize)
	le := binary.LittleEndian
	le.PutUint32(b[offKind:], uint32(event.KindDNS))
	le.PutUint32(b[offPID:], 4242)
	le.PutUint32(b[offNStr:], 2)
	le.PutUint64(b[offStart:], 123456789)
	args := []uint64{0, uint64(family), uint64(proto), uint64(lport), uint64(rport), uint64(len(payload)), 77, 0}
	if ingress {
		args[0] = 1
	}
	if owner {
		args[7] = 1
	}
	for i, a := range args {
		le.PutUint64(b[offArgs+8*i:], a)
	}
	var addrs [32]byte
	l, r := local.As16(), remote.As16()
	if family == unix.AF_INET {
		l4, r4 := local.As4(), remote.As4()
		copy(addrs[0:], l4[:])
		copy(addrs[16:], r4[:])
	} else {
		copy(addrs[0:], l[:])
		copy(addrs[16:], r[:])
	}
	b = le.AppendUint16(b, 32)
	b = append(b, addrs[:]...)
	b = le.AppendUint16(b, uint16(len(payload)))
	return append(b, payload...)
}

func dnsResponse(t *testing.T, name string, addrs ...string) []byte {
	t.Helper()
	n := dnsmessage.MustNewName(name)
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 99, Response: true})
	_ = b.StartQuestions()
	_ = b.Question(dnsmessage.Question{Name: n, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET})
	_ = b.StartAnswers()
	for _, a := range addrs {
		_ = b.AResource(dnsmessage.ResourceHeader{Name: n, Class: dnsmessage.ClassINET}, dnsmessage.AResource{A: netip.MustParseAddr(a).As4()})
	}
	out, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestDecodeDNSRecord(t *testing.T) {
	lo, srv := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.53.0.9")
	resp := dnsResponse(t, "c2.test.example.", "10.1.2.3", "10.1.2.4")
	d := NewDecoder()

	ev, err := d.Decode(dnsRecord(true, unix.AF_INET, unix.IPPROTO_UDP, lo, srv, 40000, 53, true, resp))
	if err != nil {
		t.Fatal(err)
	}
	want := event.DNS{Response: true, ID: 99, Name: "c2.test.example", Type: "A", RCode: "NOERROR",
		Answers: []string{"10.1.2.3", "10.1.2.4"}, Server: "127.53.0.9", ServerPort: 53, Protocol: "udp"}
	if ev.DNS == nil || !dnsEqual(*ev.DNS, want) || ev.Process.PID != 4242 || ev.Process.Start.IsZero() {
		t.Errorf("udp response: %+v %+v", ev.DNS, ev.Process)
	}

	// Cut inside the second answer, as the kernel's copy bound would: the
	// question and first answer survive.
	ev, err = d.Decode(dnsRecord(true, unix.AF_INET, unix.IPPROTO_UDP, lo, srv, 40000, 53, false, resp[:len(resp)-2]))
	if err != nil {
		t.Fatal(err)
	}
	if ev.DNS.Name != "c2.test.example" || !slices.Equal(ev.DNS.Answers, []string{"10.1.2.3"}) || !ev.Process.Start.IsZero() {
		t.Errorf("cut response: %+v, start %v", ev.DNS, ev.Process.Start)
	}

	// TCP framing, over IPv6.
	v6lo, v6srv := netip.MustParseAddr("::1"), netip.MustParseAddr("2001:db8::53")
	framed := append(binary.BigEndian.AppendUint16(nil, uint16(len(resp))), resp...)
	ev, err = d.Decode(dnsRecord(true, unix.AF_INET6, unix.IPPROTO_TCP, v6lo, v6srv, 40000, 53, true, framed))
	if err != nil {
		t.Fatal(err)
	}
	if ev.DNS.Protocol != "tcp" || ev.DNS.Server != "2001:db8::53" || len(ev.DNS.Answers) != 2 {
		t.Errorf("tcp6: %+v", ev.DNS)
	}

	// What cannot be reported is refused, never half-filled.
	for name, rec := range map[string][]byte{
		"not dns":         dnsRecord(false, unix.AF_INET, unix.IPPROTO_UDP, lo, srv, 40000, 53, true, []byte("hello")),
		"question cut":    dnsRecord(true, unix.AF_INET, unix.IPPROTO_UDP, lo, srv, 40000, 53, true, resp[:16]),
		"bad protocol":    dnsRecord(true, unix.AF_INET, 132, lo, srv, 40000, 53, true, resp),
		"bad family":      dnsRecord(true, 1, unix.IPPROTO_UDP, lo, srv, 40000, 53, true, resp),
		"addresses short": shortAddrs(dnsRecord(true, unix.AF_INET, unix.IPPROTO_UDP, lo, srv, 40000, 53, true, resp)),
	} {
		if ev, err := d.Decode(rec); err == nil {
			t.Errorf("%s: decoded as %+v", name, ev.DNS)
		} else if !strings.Contains(err.Error(), "dns") {
			t.Errorf("%s: error does not say dns: %v", name, err)
		}
	}
}

func dnsEqual(a, b event.DNS) bool {
	return a.Response == b.Response && a.ID == b.ID && a.Name == b.Name && a.Type == b.Type && a.RCode == b.RCode &&
		slices.Equal(a.Answers, b.Answers) && a.Server == b.Server && a.ServerPort == b.ServerPort && a.Protocol == b.Protocol
}

// shortAddrs cuts the address block to 4 bytes.
func shortAddrs(rec []byte) []byte {
	binary.LittleEndian.PutUint16(rec[hdrSize:], 4)
	return slices.Delete(rec, hdrSize+2+4, hdrSize+2+32)
}

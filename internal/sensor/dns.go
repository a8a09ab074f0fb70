package sensor

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mamori-dev/mamori/internal/dnsmsg"
	"github.com/mamori-dev/mamori/internal/event"
)

// EV_DNS argument slots (bpf/dns.bpf.c).
const (
	dnsArgIngress = iota
	dnsArgFamily
	dnsArgProto
	dnsArgLocalPort
	dnsArgRemotePort
	dnsArgPayloadLen
	dnsArgCookie
	dnsArgOwnerKnown
)

// decodeDNS turns one client-side DNS packet into an event. The server is
// the packet's remote end. A payload whose header or first question cannot
// be read is an error (counted by the reader); answers cut short by the
// kernel's copy bound, or malformed, keep what was read before them.
func decodeDNS(ev *event.Event, r *record) error {
	a := &r.args
	d := &event.DNS{ServerPort: uint16(a[dnsArgRemotePort])}
	switch a[dnsArgProto] {
	case unix.IPPROTO_UDP:
		d.Protocol = "udp"
	case unix.IPPROTO_TCP:
		d.Protocol = "tcp"
	default:
		return fmt.Errorf("dns: ip protocol %d", a[dnsArgProto])
	}
	addrs := r.strs[0]
	if r.nstr < 2 || len(addrs) != 32 {
		return errors.New("dns: address block missing")
	}
	switch a[dnsArgFamily] {
	case unix.AF_INET:
		d.Server = netip.AddrFrom4([4]byte(addrs[16:20])).String()
	case unix.AF_INET6:
		d.Server = netip.AddrFrom16([16]byte(addrs[16:32])).Unmap().String()
	default:
		return fmt.Errorf("dns: address family %d", a[dnsArgFamily])
	}
	payload := r.strs[1]
	var m dnsmsg.Message
	var err error
	if d.Protocol == "tcp" {
		m, err = dnsmsg.ParseTCP(payload)
		if unreadable(m, err) || m.Questions == 0 {
			// A client that writes the length prefix on its own sends the
			// message in a segment of its own, without one; read as framed,
			// it loses its question.
			if m2, err2 := dnsmsg.Parse(payload); !unreadable(m2, err2) && m2.Questions > 0 {
				m, err = m2, err2
			}
		}
	} else {
		m, err = dnsmsg.Parse(payload)
	}
	if unreadable(m, err) {
		return fmt.Errorf("dns payload (%d of %d bytes): %w", len(payload), a[dnsArgPayloadLen], err)
	}
	d.Response, d.ID, d.Name, d.Type, d.Answers = m.Response, m.ID, m.Name, m.Type, m.Answers
	if m.Response {
		d.RCode = m.RCode
	}
	if a[dnsArgOwnerKnown] == 0 {
		// The socket was opened before the sensor, or never connected or
		// sent to port 53 through a hook: only its cgroup is known.
		ev.Process.Start = time.Time{}
	}
	ev.DNS = d
	return nil
}

// unreadable reports a parse that lost the header or the first question:
// too little to report (lost answers are kept as far as they were read).
func unreadable(m dnsmsg.Message, err error) bool {
	return err != nil && (m.RCode == "" || errors.Is(err, dnsmsg.ErrNoQuestion))
}

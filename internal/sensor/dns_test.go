package sensor

import (
	"encoding/binary"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/mamori-dev/mamori/internal/event"
)

// dnsServer is a small authoritative server for the tests: it answers A
// queries from zone and NXDOMAIN for everything else, over UDP and TCP.
type dnsServer struct {
	ip   string
	port int
	zone map[string]netip.Addr // FQDN → address
	udp  net.PacketConn
	tcp  net.Listener
}

// startDNSServer listens on ip, or when ip is empty on a random 127.53.x.y
// address (any 127/8 address is loopback), so port 53 never collides with
// a resolver or another test.
func startDNSServer(t *testing.T, ip string, port int, zone map[string]netip.Addr) *dnsServer {
	t.Helper()
	var s *dnsServer
	var err error
	for try := 0; try < 5; try++ {
		if ip == "" || try > 0 && strings.HasPrefix(ip, "127.53.") {
			ip = fmt.Sprintf("127.53.%d.%d", rand.Intn(256), 1+rand.Intn(254))
		}
		s = &dnsServer{ip: ip, port: port, zone: zone}
		addr := net.JoinHostPort(ip, strconv.Itoa(port))
		if s.udp, err = net.ListenPacket("udp", addr); err != nil {
			continue
		}
		if s.tcp, err = net.Listen("tcp", addr); err != nil {
			s.udp.Close()
			continue
		}
		break
	}
	if err != nil {
		t.Fatalf("dns server: %v", err)
	}
	t.Cleanup(func() { s.udp.Close(); s.tcp.Close() })
	go s.serveUDP()
	go s.serveTCP()
	return s
}

func (s *dnsServer) addr() string { return net.JoinHostPort(s.ip, strconv.Itoa(s.port)) }

func (s *dnsServer) serveUDP() {
	buf := make([]byte, 1500)
	for {
		n, from, err := s.udp.ReadFrom(buf)
		if err != nil {
			return
		}
		if resp, err := s.answer(buf[:n]); err == nil {
			_, _ = s.udp.WriteTo(resp, from)
		}
	}
}

func (s *dnsServer) serveTCP() {
	for {
		c, err := s.tcp.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			var l [2]byte
			if _, err := io.ReadFull(c, l[:]); err != nil {
				return
			}
			q := make([]byte, binary.BigEndian.Uint16(l[:]))
			if _, err := io.ReadFull(c, q); err != nil {
				return
			}
			if resp, err := s.answer(q); err == nil {
				_, _ = c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(resp))), resp...))
			}
		}()
	}
}

func (s *dnsServer) answer(query []byte) ([]byte, error) {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return nil, err
	}
	q, err := p.Question()
	if err != nil {
		return nil, err
	}
	addr, ok := s.zone[strings.ToLower(q.Name.String())]
	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired}
	if !ok {
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(q); err != nil {
		return nil, err
	}
	if err := b.StartAnswers(); err != nil {
		return nil, err
	}
	if ok && q.Type == dnsmessage.TypeA {
		rr := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60}
		if err := b.AResource(rr, dnsmessage.AResource{A: addr.As4()}); err != nil {
			return nil, err
		}
	}
	return b.Finish()
}

// dnsQuery runs the actor's dns action and returns the mark before it and
// the pid (as the actor sees it) and query id it printed.
func dnsQuery(t *testing.T, w *where, name, server, proto string) (mark int, pid uint32, id uint16) {
	t.Helper()
	mark, _, out, err := w.run(t, "dns", name+".", server, proto)
	mustOK(t, err, out)
	var p, i uint32
	if _, err := fmt.Sscanf(out, "%d %d", &p, &i); err != nil {
		t.Fatalf("actor printed %q: %v", out, err)
	}
	return mark, p, uint16(i)
}

func TestDNSEvents(t *testing.T) {
	places := places(t)
	c2 := netip.MustParseAddr("10.1.2.3")
	zone := map[string]netip.Addr{"c2.test.example.": c2}
	srv := startDNSServer(t, "", 53, zone)
	// IPv6 over ::1, the one IPv6 loopback address: port 53 there may be
	// taken by a local resolver on a developer's machine.
	var srv6 *dnsServer
	if u, err := net.ListenPacket("udp", "[::1]:53"); err != nil {
		t.Logf("IPv6 case skipped: [::1]:53 busy: %v", err)
	} else {
		u.Close()
		srv6 = startDNSServer(t, "::1", 53, zone)
	}
	for _, w := range places {
		for _, via := range []struct {
			label, how, proto string // how: the actor's way to send
			srv               *dnsServer
		}{
			{"udp", "udp", "udp", srv},
			{"sendto", "udp-sendto", "udp", srv},
			{"tcp", "tcp", "tcp", srv},
			{"tcp-split", "tcp-split", "tcp", srv},
			{"udp6", "udp", "udp", srv6},
		} {
			if via.srv == nil {
				continue
			}
			srv, how, proto := via.srv, via.how, via.proto
			t.Run(w.name+"/"+via.label, func(t *testing.T) {
				cases := []struct {
					name    string
					rcode   string
					answers []string
				}{
					{"c2.test.example", "NOERROR", []string{c2.String()}},
					{fmt.Sprintf("nx-%d.test.example", rand.Int()), "NXDOMAIN", nil},
				}
				for _, c := range cases {
					mark, pid, id := dnsQuery(t, w, c.name, srv.addr(), how)
					match := func(resp bool) func(*event.Event) bool {
						return func(ev *event.Event) bool {
							return ev.Kind == event.KindDNS && w.from(ev) && ev.DNS.ID == id &&
								ev.DNS.Response == resp && ev.DNS.Name == c.name
						}
					}
					q := waitFrom(t, mark, "dns query "+c.name, match(false))
					r := waitFrom(t, mark, "dns response "+c.name, match(true))
					for _, ev := range []*event.Event{q, r} {
						d := ev.DNS
						if d.Type != "A" || d.Server != srv.ip || d.ServerPort != 53 || d.Protocol != proto {
							t.Errorf("%s: %+v", c.name, d)
						}
					}
					if q.DNS.RCode != "" || len(q.DNS.Answers) != 0 {
						t.Errorf("query carries response fields: %+v", q.DNS)
					}
					if r.DNS.RCode != c.rcode || !slices.Equal(r.DNS.Answers, c.answers) {
						t.Errorf("response %s: rcode %q answers %v, want %q %v", c.name, r.DNS.RCode, r.DNS.Answers, c.rcode, c.answers)
					}
					checkDNSProcess(t, w, mark, pid, q, r)
				}
			})
		}
	}
}

// checkDNSProcess checks both events name the actor: on the host by pid,
// in a container by namespace pid and by the host pid its exec reported.
func checkDNSProcess(t *testing.T, w *where, mark int, pid uint32, evs ...*event.Event) {
	t.Helper()
	hostPID := pid
	if w.ctrID != "" {
		ex := waitFrom(t, mark, "exec of the actor", func(ev *event.Event) bool {
			return ev.Kind == event.KindExec && w.from(ev) && ev.Process.NSPID == pid
		})
		hostPID = ex.Process.PID
	}
	for _, ev := range evs {
		p := ev.Process
		if p.PID != hostPID || p.NSPID != pid || p.Comm != "actor" || p.StartNS == 0 {
			t.Errorf("dns event process %+v, want pid %d (namespace pid %d)", p, hostPID, pid)
		}
		if w.cgroupID != 0 && p.CgroupID != w.cgroupID {
			t.Errorf("dns event cgroup %d, want the container's %d", p.CgroupID, w.cgroupID)
		}
	}
}

// Only traffic with a remote port 53 that parses as DNS becomes an event:
// a real DNS exchange on another port is not watched, and a datagram to
// port 53 that is not DNS is refused by the decoder (and counted).
func TestDNSIgnoresOtherTraffic(t *testing.T) {
	places := places(t)
	zone := map[string]netip.Addr{"other-port.test.example.": netip.MustParseAddr("10.9.9.9")}
	other := startDNSServer(t, "", 5300+rand.Intn(600), zone)
	srv53 := startDNSServer(t, "", 53, zone)
	for _, w := range places {
		t.Run(w.name, func(t *testing.T) {
			mark, pid, out, err := w.run(t, "dns", "other-port.test.example.", other.addr())
			mustOK(t, err, out)
			assertNone(t, mark, pid, w, func(ev *event.Event) bool {
				return ev.Kind == event.KindDNS && ev.DNS.Name == "other-port.test.example"
			})
			before := shared.Counters().DecodeErrors
			payload := "mamori-not-dns-" + strconv.Itoa(rand.Int())
			mark, pid, out, err = w.run(t, "udp-send", srv53.addr(), payload)
			mustOK(t, err, out)
			assertNone(t, mark, pid, w, func(ev *event.Event) bool {
				return ev.Kind == event.KindDNS && w.from(ev)
			})
			if after := shared.Counters().DecodeErrors; after <= before {
				t.Errorf("non-DNS datagram to port 53: decode errors %d → %d, want it seen and refused", before, after)
			}
		})
	}
}

// A resolver on another port (Consul's 8600, dnsmasq's 5353) is read once
// the sensor is told its port; 53 stays watched alongside.
func TestDNSOnConfiguredPort(t *testing.T) {
	places := places(t)
	zone := map[string]netip.Addr{"svc.consul.test.example.": netip.MustParseAddr("10.8.6.0")}
	port := 8600
	srv := startDNSServer(t, "", port, zone)
	if err := shared.SetDNSPorts([]uint16{53, uint16(port)}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := shared.SetDNSPorts(nil); err != nil {
			t.Error(err)
		}
	})
	for _, w := range places {
		t.Run(w.name, func(t *testing.T) {
			mark, pid, id := dnsQuery(t, w, "svc.consul.test.example", srv.addr(), "udp")
			q := waitFrom(t, mark, "dns query on port 8600", func(ev *event.Event) bool {
				return ev.Kind == event.KindDNS && w.from(ev) && ev.DNS.ID == id && !ev.DNS.Response
			})
			r := waitFrom(t, mark, "dns response on port 8600", func(ev *event.Event) bool {
				return ev.Kind == event.KindDNS && w.from(ev) && ev.DNS.ID == id && ev.DNS.Response
			})
			if q.DNS.ServerPort != 8600 || r.DNS.Name != "svc.consul.test.example" || !slices.Equal(r.DNS.Answers, []string{"10.8.6.0"}) {
				t.Errorf("query %+v, response %+v", q.DNS, r.DNS)
			}
			checkDNSProcess(t, w, mark, pid, q, r)
		})
	}
	for _, bad := range [][]uint16{{53, 0}, {1, 2, 3, 4, 5}} {
		if err := shared.SetDNSPorts(bad); err == nil {
			t.Errorf("ports %v accepted", bad)
		}
	}
}

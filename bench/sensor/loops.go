package main

import (
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/sys/unix"
)

// env holds what the loops work against: a file in no watched tree, a TCP
// listener and a DNS server on loopback.
type env struct {
	dir      string
	file     string
	tcp      net.Listener
	dnsAddr  string
	dnsConn  net.PacketConn
	unixPath string
	query    []byte
}

type loop struct {
	name string
	n    int
	run  func(n int)
}

func setup() *env {
	dir, err := os.MkdirTemp("", "mamori-bench-")
	if err != nil {
		log.Fatal(err)
	}
	e := &env{dir: dir, file: filepath.Join(dir, "unwatched"), unixPath: filepath.Join(dir, "nobody-listens")}
	if err := os.WriteFile(e.file, []byte("x"), 0o644); err != nil {
		log.Fatal(err)
	}
	e.tcp, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		for {
			c, err := e.tcp.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	// Port 53 of a loopback address: the sensor's DNS hooks look at port 53
	// only, so a server elsewhere would measure nothing.
	e.dnsAddr = "127.0.0.77:53"
	e.dnsConn, err = net.ListenPacket("udp", e.dnsAddr)
	if err != nil {
		log.Fatalf("DNS server on %s: %v", e.dnsAddr, err)
	}
	go serveDNS(e.dnsConn)
	q := dnsmessage.Message{Header: dnsmessage.Header{ID: 1, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName("bench.mamori.test."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}}}
	if e.query, err = q.Pack(); err != nil {
		log.Fatal(err)
	}
	return e
}

func (e *env) loops() []loop {
	sc := func(n int) int { return max(1, int(float64(n)**scale)) }
	return []loop{
		{"exec /bin/true", sc(2000), e.execLoop},
		{"open+close unwatched file", sc(200000), e.openLoop},
		{"TCP connect+accept+close, loopback", sc(20000), e.tcpLoop},
		{"DNS query+answer, loopback UDP", sc(20000), e.dnsLoop},
	}
}

func (e *env) execLoop(n int) {
	for i := 0; i < n; i++ {
		if err := exec.Command("/bin/true").Run(); err != nil {
			log.Fatal(err)
		}
	}
}

func (e *env) openLoop(n int) {
	for i := 0; i < n; i++ {
		fd, err := unix.Open(e.file, unix.O_RDONLY, 0)
		if err != nil {
			log.Fatal(err)
		}
		unix.Close(fd)
	}
}

func (e *env) tcpLoop(n int) {
	addr := e.tcp.Addr().String()
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			log.Fatal(err)
		}
		c.Close()
	}
}

func (e *env) dnsLoop(n int) {
	c, err := net.Dial("udp", e.dnsAddr)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 512)
	for i := 0; i < n; i++ {
		if _, err := c.Write(e.query); err != nil {
			log.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := c.Read(buf); err != nil {
			log.Fatalf("DNS answer: %v", err)
		}
	}
}

// serveDNS answers every A question with one address.
func serveDNS(pc net.PacketConn) {
	buf := make([]byte, 512)
	for {
		n, addr, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		var p dnsmessage.Parser
		h, err := p.Start(buf[:n])
		if err != nil {
			continue
		}
		q, err := p.Question()
		if err != nil {
			continue
		}
		m := dnsmessage.Message{Header: dnsmessage.Header{ID: h.ID, Response: true}, Questions: []dnsmessage.Question{q},
			Answers: []dnsmessage.Resource{{Header: dnsmessage.ResourceHeader{Name: q.Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET},
				Body: &dnsmessage.AResource{A: [4]byte{192, 0, 2, 1}}}}}
		out, err := m.Pack()
		if err != nil {
			continue
		}
		_, _ = pc.WriteTo(out, addr)
	}
}

// loopResult is one loop's timings, one per round on each side.
type loopResult struct {
	name          string
	n             int
	without, with []time.Duration
}

func (r loopResult) nsPerOp(ds []time.Duration) float64 {
	return float64(median(ds).Nanoseconds()) / float64(r.n)
}

func (r loopResult) ratio() float64 { return r.nsPerOp(r.with) / r.nsPerOp(r.without) }

// ratioSpread is the lowest and highest per-round ratio, pairing each
// round's with-agent time with the same round's baseline.
func (r loopResult) ratioSpread() (lo, hi float64) {
	for i := range r.with {
		if i >= len(r.without) {
			break
		}
		x := float64(r.with[i]) / float64(r.without[i])
		if i == 0 || x < lo {
			lo = x
		}
		if i == 0 || x > hi {
			hi = x
		}
	}
	return lo, hi
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func timeLoop(l loop) time.Duration {
	start := time.Now()
	l.run(l.n)
	return time.Since(start)
}

// overhead runs every loop without and with the agent, alternating which
// side goes first in each round so that slow drift (page cache, thermal,
// other tenants) lands on both sides equally.
func (e *env) overhead() []loopResult {
	loops := e.loops()
	res := make([]loopResult, len(loops))
	for i, l := range loops {
		res[i].name, res[i].n = l.name, l.n
		l.run(max(1, l.n/10)) // warm caches, the listener's accept path, the DNS socket
	}
	without := func() {
		for i, l := range loops {
			res[i].without = append(res[i].without, timeLoop(l))
		}
	}
	with := func() {
		ag := startAgent(agentOptions{})
		for i, l := range loops {
			res[i].with = append(res[i].with, timeLoop(l))
		}
		ag.stop()
	}
	for r := 0; r < *rounds; r++ {
		fmt.Printf("overhead: round %d/%d\n", r+1, *rounds)
		if r%2 == 0 {
			without()
			with()
		} else {
			with()
			without()
		}
	}
	return res
}

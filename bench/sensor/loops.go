package main

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/sys/unix"
)

// env holds what the loops work against: a file in no watched tree, a TCP
// listener and a DNS server on loopback.
type env struct {
	dir      string
	tiny     []string // a static executable that only exits, and its arguments
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
		fatal(err)
	}
	e := &env{dir: dir, file: filepath.Join(dir, "unwatched"), unixPath: filepath.Join(dir, "nobody-listens")}
	if err := os.WriteFile(e.file, []byte("x"), 0o644); err != nil {
		fatal(err)
	}
	e.tiny = []string{filepath.Join(dir, "exit0")}
	if runtime.GOARCH == "amd64" {
		if err := os.WriteFile(e.tiny[0], tinyELF(), 0o755); err != nil {
			fatal(err)
		}
	} else {
		e.tiny = []string{"/bin/busybox", "true"} // static where busybox-static is installed
	}
	e.tcp, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fatal(err)
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
		fatalf("DNS server on %s: %v", e.dnsAddr, err)
	}
	go serveDNS(e.dnsConn)
	q := dnsmessage.Message{Header: dnsmessage.Header{ID: 1, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName("bench.mamori.test."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}}}
	if e.query, err = q.Pack(); err != nil {
		fatal(err)
	}
	return e
}

func (e *env) loops() []loop {
	sc := func(n int) int { return max(1, int(float64(n)**scale)) }
	all := []loop{
		{"exec tiny static binary", sc(2000), func(n int) { execLoop(n, e.tiny...) }},
		{"exec /bin/true (dynamic)", sc(2000), func(n int) { execLoop(n, "/bin/true") }},
		{"open+close unwatched file", sc(200000), e.openLoop},
		{"TCP connect+accept+close, loopback", sc(20000), e.tcpLoop},
		{"DNS query+answer, loopback UDP", sc(20000), e.dnsLoop},
	}
	if *loopFilter == "" {
		return all
	}
	var picked []loop
	for _, l := range all {
		for _, w := range strings.Split(*loopFilter, ",") {
			if w = strings.TrimSpace(w); w != "" && strings.Contains(l.name, w) {
				picked = append(picked, l)
				break
			}
		}
	}
	return picked
}

func execLoop(n int, argv ...string) {
	for i := 0; i < n; i++ {
		if err := exec.Command(argv[0], argv[1:]...).Run(); err != nil {
			fatalf("exec %s: %v", argv[0], err)
		}
	}
}

// tinyELF returns a 129-byte static x86-64 executable that calls exit(0):
// exec's own cost with no dynamic loader, libraries or file opens.
func tinyELF() []byte {
	const base = 0x400000
	code := []byte{0xb8, 60, 0, 0, 0, 0x31, 0xff, 0x0f, 0x05} // mov eax, 60 (exit); xor edi, edi; syscall
	size := uint64(64 + 56 + len(code))
	le := binary.LittleEndian
	b := make([]byte, 0, size)
	b = append(b, 0x7f, 'E', 'L', 'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0) // 64-bit, little endian, SysV
	b = le.AppendUint16(b, 2)                                              // ET_EXEC
	b = le.AppendUint16(b, 0x3e)                                           // x86-64
	b = le.AppendUint32(b, 1)                                              // version
	b = le.AppendUint64(b, base+64+56)                                     // entry: the code after the headers
	b = le.AppendUint64(b, 64)                                             // program headers right after this one
	b = le.AppendUint64(b, 0)                                              // no section headers
	b = le.AppendUint32(b, 0)                                              // flags
	b = le.AppendUint16(b, 64)                                             // ELF header size
	b = le.AppendUint16(b, 56)                                             // program header size
	b = le.AppendUint16(b, 1)                                              // one program header
	b = le.AppendUint16(b, 64)                                             // section header size
	b = le.AppendUint16(b, 0)                                              // no sections
	b = le.AppendUint16(b, 0)                                              // no section names
	b = le.AppendUint32(b, 1)                                              // PT_LOAD
	b = le.AppendUint32(b, 5)                                              // R+X
	b = le.AppendUint64(b, 0)                                              // from file offset 0
	b = le.AppendUint64(b, base)                                           // vaddr
	b = le.AppendUint64(b, base)                                           // paddr
	b = le.AppendUint64(b, size)                                           // file size
	b = le.AppendUint64(b, size)                                           // memory size
	b = le.AppendUint64(b, 0x1000)                                         // alignment
	return append(b, code...)
}

func (e *env) openLoop(n int) {
	for i := 0; i < n; i++ {
		fd, err := unix.Open(e.file, unix.O_RDONLY, 0)
		if err != nil {
			fatal(err)
		}
		unix.Close(fd)
	}
}

func (e *env) tcpLoop(n int) {
	addr := e.tcp.Addr().String()
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			fatal(err)
		}
		c.Close()
	}
}

func (e *env) dnsLoop(n int) {
	c, err := net.Dial("udp", e.dnsAddr)
	if err != nil {
		fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 512)
	for i := 0; i < n; i++ {
		if _, err := c.Write(e.query); err != nil {
			fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := c.Read(buf); err != nil {
			fatalf("DNS answer: %v", err)
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

// chunks is how many pieces each timed loop is cut into. Noise on a shared
// VM (neighbours, SMT siblings, interrupts) only ever adds time, so a low
// percentile of many short pieces estimates the loop's own cost far more
// steadily than one long timing does.
const chunks = 20

// loopResult is one loop's chunk timings on each side, over all rounds.
type loopResult struct {
	name          string
	n             int // iterations per round
	rounds        int
	without, with []time.Duration // per chunk of chunkN iterations
	chunkN        int
}

// nsPerOp is the 10th-percentile chunk time per iteration.
func (r loopResult) nsPerOp(ds []time.Duration) float64 {
	return float64(percentile(ds, 0.10).Nanoseconds()) / float64(r.chunkN)
}

func (r loopResult) medianNsPerOp(ds []time.Duration) float64 {
	return float64(percentile(ds, 0.5).Nanoseconds()) / float64(r.chunkN)
}

func (r loopResult) ratio() float64 { return r.nsPerOp(r.with) / r.nsPerOp(r.without) }

func (r loopResult) medianRatio() float64 {
	return r.medianNsPerOp(r.with) / r.medianNsPerOp(r.without)
}

func percentile(ds []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[int(p*float64(len(s)-1))]
}

// timeChunks runs the loop in pieces and returns each piece's time.
func timeChunks(l loop, per int) []time.Duration {
	out := make([]time.Duration, 0, chunks)
	for done := 0; done+per <= l.n; done += per {
		start := time.Now()
		l.run(per)
		out = append(out, time.Since(start))
	}
	return out
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
		res[i].name, res[i].n, res[i].rounds, res[i].chunkN = l.name, l.n, *rounds, max(1, l.n/chunks)
		l.run(max(1, l.n/10)) // warm caches, the listener's accept path, the DNS socket
	}
	without := func() {
		waitQuiet(0)
		for i, l := range loops {
			res[i].without = append(res[i].without, timeChunks(l, res[i].chunkN)...)
		}
	}
	with := func() {
		ag := startAgent(agentOptions{})
		waitQuiet(ag.pid())
		if *stopAgent {
			_ = ag.cmd.Process.Signal(syscall.SIGSTOP)
		}
		for i, l := range loops {
			res[i].with = append(res[i].with, timeChunks(l, res[i].chunkN)...)
		}
		if *stopAgent {
			_ = ag.cmd.Process.Signal(syscall.SIGCONT)
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

// Phases that started on a busy machine, and all phases.
var busyPhases, allPhases int

// waitQuiet waits, up to -wait-quiet, until the machine's CPUs are mostly
// idle for a second and no BPF programs but our agent's (pid ours) are
// held, so a phase does not start in the middle of another tenant's build
// or beside another sensor.
func waitQuiet(ours int) {
	allPhases++
	deadline := time.Now().Add(*quietWait)
	for {
		busy := cpuBusy(time.Second)
		others := otherBPFHolders(ours)
		if busy <= 0.15 && len(others) == 0 {
			return
		}
		if time.Now().After(deadline) {
			busyPhases++
			fmt.Printf("overhead: machine still %.0f%% busy, other BPF holders %v; measuring anyway\n", 100*busy, others)
			return
		}
	}
}

// cpuBusy is the share of all CPUs' time not idle over d.
func cpuBusy(d time.Duration) float64 {
	read := func() (busy, total float64) {
		b, err := os.ReadFile("/proc/stat")
		if err != nil {
			return 0, 0
		}
		line, _, _ := strings.Cut(string(b), "\n")
		f := strings.Fields(line)
		for i, v := range f[1:] {
			x, _ := strconv.ParseFloat(v, 64)
			total += x
			if i != 3 && i != 4 { // idle, iowait
				busy += x
			}
		}
		return busy, total
	}
	b0, t0 := read()
	time.Sleep(d)
	b1, t1 := read()
	if t1 <= t0 {
		return 0
	}
	return (b1 - b0) / (t1 - t0)
}

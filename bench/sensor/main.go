// Command sensor measures what the mamori agent costs the workloads it
// watches and what it sustains, side by side in one run:
//
//   - the slowdown of four loops (exec, open/close of an unwatched file, TCP
//     connect/accept on loopback, DNS query/answer on loopback) with the
//     agent running versus not, interleaved in rounds to cancel drift;
//   - the events per second the agent reads on one core, and its drops;
//   - the agent's peak RSS with 1,000 live processes.
//
// Run it as root through scripts/bench.sh, which pins this program to CPU 0
// and the agent to CPU 1.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/sys/unix"
)

var (
	mamoriBin = flag.String("mamori", "bin/mamori", "mamori binary")
	agentCPU  = flag.Int("agent-cpu", 1, "CPU the agent is pinned to")
	rounds    = flag.Int("rounds", 3, "interleaved rounds per loop")
	scale     = flag.Float64("scale", 1, "iteration multiplier")
	genSecs   = flag.Float64("throughput-seconds", 5, "seconds of the event flood")
	markdown  = flag.String("markdown", "", "also write the results as a markdown table to this file")
)

const metricsAddr = "127.0.0.1:19464"

func main() {
	flag.Parse()
	log.SetFlags(0)
	if os.Geteuid() != 0 {
		log.Fatal("run as root: the agent loads BPF programs")
	}
	env := setup()
	loops := []loop{
		{"exec /bin/true", int(2000 * *scale), env.execLoop},
		{"open+close unwatched file", int(200000 * *scale), env.openLoop},
		{"TCP connect+accept (loopback)", int(20000 * *scale), env.tcpLoop},
		{"DNS query+answer (loopback UDP)", int(20000 * *scale), env.dnsLoop},
	}
	res := make([]result, len(loops))
	for r := 0; r < *rounds; r++ {
		for i, l := range loops {
			res[i].name, res[i].n = l.name, l.n
			res[i].without = append(res[i].without, timeLoop(l))
		}
		ag := startAgent()
		for i, l := range loops {
			res[i].with = append(res[i].with, timeLoop(l))
		}
		ag.stop()
	}
	ag := startAgent()
	tp := env.throughput(ag)
	rss := env.rss(ag)
	ag.stop()
	report(res, tp, rss)
}

type loop struct {
	name string
	n    int
	run  func(n int)
}

type result struct {
	name          string
	n             int
	without, with []time.Duration
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func timeLoop(l loop) time.Duration {
	start := time.Now()
	l.run(l.n)
	return time.Since(start)
}

type env struct {
	dir      string
	file     string
	tcp      net.Listener
	dnsAddr  string
	dnsConn  net.PacketConn
	unixPath string
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
	// DNS on port 53 of a loopback address: the sensor's DNS hooks watch port 53.
	e.dnsAddr = "127.0.0.77:53"
	e.dnsConn, err = net.ListenPacket("udp", e.dnsAddr)
	if err != nil {
		log.Fatalf("DNS server: %v", err)
	}
	go serveDNS(e.dnsConn)
	return e
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
	q := dnsmessage.Message{Header: dnsmessage.Header{ID: 1, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName("bench.mamori.test."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}}}
	pkt, _ := q.Pack()
	buf := make([]byte, 512)
	for i := 0; i < n; i++ {
		if _, err := c.Write(pkt); err != nil {
			log.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := c.Read(buf); err != nil {
			log.Fatal(err)
		}
	}
}

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
				Body: &dnsmessage.AResource{A: [4]byte{10, 0, 0, 1}}}}}
		out, _ := m.Pack()
		_, _ = pc.WriteTo(out, addr)
	}
}

type agentProc struct {
	cmd *exec.Cmd
	dir string
}

func startAgent() *agentProc {
	dir, err := os.MkdirTemp("", "mamori-bench-agent-")
	if err != nil {
		log.Fatal(err)
	}
	cmd := exec.Command("taskset", "-c", strconv.Itoa(*agentCPU), *mamoriBin, "agent", "--data-dir", dir,
		"--metrics-addr", metricsAddr, "--print", "", "-q")
	cmd.Stderr = nil
	if err := cmd.Start(); err != nil {
		log.Fatalf("start agent: %v", err)
	}
	a := &agentProc{cmd: cmd, dir: dir}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if m, err := scrape(); err == nil && m[`mamori_sensor_hooks{state="attached"}`] > 0 {
			time.Sleep(500 * time.Millisecond) // /proc seeding and container scan done
			return a
		}
		time.Sleep(100 * time.Millisecond)
	}
	log.Fatal("agent did not come up within 60s")
	return nil
}

func (a *agentProc) stop() {
	_ = a.cmd.Process.Signal(syscall.SIGINT)
	done := make(chan struct{})
	go func() { _ = a.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = a.cmd.Process.Kill()
		<-done
	}
	os.RemoveAll(a.dir)
}

// scrape reads the agent's metrics, summing series that differ by labels
// other than the ones kept in the key.
func scrape() (map[string]float64, error) {
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
		if j := strings.IndexByte(line, '{'); j > 0 && j < i {
			out[line[:j]+"{*}"] += v
		}
	}
	return out, sc.Err()
}

type throughput struct {
	seconds             float64
	generated           uint64
	read, emitted, drop float64
	misses              float64
	agentCPU            float64 // share of its one core the agent used
}

// cpuSeconds is a process's user+system CPU time.
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

// throughput floods the agent with connect attempts to a unix path
// nobody listens on (each is one event) from this CPU, for genSecs.
func (e *env) throughput(a *agentProc) throughput {
	before, err := scrape()
	if err != nil {
		log.Fatal(err)
	}
	sa := &unix.SockaddrUnix{Name: e.unixPath}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		log.Fatal(err)
	}
	defer unix.Close(fd)
	var n uint64
	cpu0 := cpuSeconds(a.cmd.Process.Pid)
	start := time.Now()
	end := start.Add(time.Duration(*genSecs * float64(time.Second)))
	for time.Now().Before(end) {
		for i := 0; i < 1000; i++ {
			_ = unix.Connect(fd, sa)
		}
		n += 1000
	}
	secs := time.Since(start).Seconds()
	time.Sleep(2 * time.Second) // let the agent drain
	cpu := (cpuSeconds(a.cmd.Process.Pid) - cpu0) / (secs + 2)
	after, err := scrape()
	if err != nil {
		log.Fatal(err)
	}
	d := func(k string) float64 { return after[k] - before[k] }
	return throughput{seconds: secs, generated: n, read: d("mamori_sensor_records_read_total"),
		emitted: d("mamori_sensor_events_emitted_total{*}"), drop: d("mamori_sensor_kernel_drops_total{*}"),
		misses: d("mamori_sensor_program_misses_total"), agentCPU: cpu}
}

type rssResult struct {
	procs       int
	tracked     float64
	rssMB, hwMB float64
}

// rss starts 1,000 sleeping processes and reads the agent's memory.
func (e *env) rss(a *agentProc) rssResult {
	var cmds []*exec.Cmd
	for i := 0; i < 1000; i++ {
		c := exec.Command("sleep", "120")
		if err := c.Start(); err != nil {
			log.Fatalf("start process %d: %v", i, err)
		}
		cmds = append(cmds, c)
	}
	time.Sleep(3 * time.Second)
	m, _ := scrape()
	// taskset execs mamori in place, so the agent's pid is the command's.
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", a.cmd.Process.Pid))
	if err != nil {
		log.Fatal(err)
	}
	r := rssResult{procs: len(cmds), tracked: m["mamori_process_table_entries"]}
	for _, line := range strings.Split(string(status), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && (f[0] == "VmRSS:" || f[0] == "VmHWM:") {
			kb, _ := strconv.ParseFloat(f[1], 64)
			if f[0] == "VmRSS:" {
				r.rssMB = kb / 1024
			} else {
				r.hwMB = kb / 1024
			}
		}
	}
	for _, c := range cmds {
		_ = c.Process.Kill()
		_ = c.Wait()
	}
	return r
}

func report(res []result, tp throughput, r rssResult) {
	var b strings.Builder
	fmt.Fprintf(&b, "| loop | iterations | without agent | with agent | slowdown | target |\n|---|---|---|---|---|---|\n")
	for _, x := range res {
		wo, wi := median(x.without), median(x.with)
		ratio := float64(wi) / float64(wo)
		verdict := "meets ≤ 1.05"
		if ratio > 1.05 {
			verdict = "**misses** ≤ 1.05"
		}
		fmt.Fprintf(&b, "| %s | %d | %.0f ns/op | %.0f ns/op | %.3f | %s |\n", x.name, x.n,
			float64(wo.Nanoseconds())/float64(x.n), float64(wi.Nanoseconds())/float64(x.n), ratio, verdict)
	}
	rate := tp.read / tp.seconds
	fmt.Fprintf(&b, "\n| throughput (agent pinned to one core) | value |\n|---|---|\n")
	fmt.Fprintf(&b, "| events generated | %d in %.1fs (%.0f/s) |\n", tp.generated, tp.seconds, float64(tp.generated)/tp.seconds)
	fmt.Fprintf(&b, "| events read by the agent | %.0f (%.0f/s) |\n", tp.read, rate)
	fmt.Fprintf(&b, "| kernel drops (ring buffer full) | %.0f |\n| BPF recursion misses | %.0f |\n", tp.drop, tp.misses)
	fmt.Fprintf(&b, "| agent CPU during the flood | %.0f%% of one core |\n", 100*tp.agentCPU)
	if tp.agentCPU > 0 {
		fmt.Fprintf(&b, "| projected capacity on one core | %.0f events/s (read rate ÷ CPU share) |\n", tp.read/(tp.seconds+2)/tp.agentCPU)
	}
	fmt.Fprintf(&b, "\n| memory | value |\n|---|---|\n| live processes started | %d |\n| processes in the agent's table | %.0f |\n| agent RSS | %.1f MB |\n| agent peak RSS (VmHWM) | %.1f MB |\n",
		r.procs, r.tracked, r.rssMB, r.hwMB)
	fmt.Print(b.String())
	if *markdown != "" {
		if err := os.WriteFile(*markdown, []byte(b.String()), 0o644); err != nil {
			log.Fatal(err)
		}
	}
}

// Command latency measures the time from a syscall to its finding line in
// the agent's --findings-file, under a steady background load of events.
// Each probe queries a unique subdomain of a built-in C&C test domain, so
// each raises a new finding; the background load is connect attempts to a
// unix path nobody listens on, paced to -load events per second.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/sys/unix"
)

var (
	mamoriBin = flag.String("mamori", "bin/mamori", "mamori binary")
	agentCPU  = flag.Int("agent-cpu", 1, "CPU the agent is pinned to")
	load      = flag.Int("load", 50000, "background events per second")
	probes    = flag.Int("probes", 200, "findings to time")
	markdown  = flag.String("markdown", "", "also write the result as markdown to this file")
)

func main() {
	flag.Parse()
	log.SetFlags(0)
	dir, err := os.MkdirTemp("", "mamori-latency-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	findings := filepath.Join(dir, "findings.jsonl")
	agent := exec.Command("taskset", "-c", strconv.Itoa(*agentCPU), *mamoriBin, "agent", "--data-dir", dir,
		"--metrics-addr", "", "--print", "", "-q", "--findings-file", findings)
	if err := agent.Start(); err != nil {
		log.Fatal(err)
	}
	stopAgent := func() { _ = agent.Process.Signal(syscall.SIGINT); _ = agent.Wait() }
	defer stopAgent()
	// A fatal error must not leave the agent's programs attached.
	fatal := func(v ...any) { stopAgent(); log.Fatal(v...) }
	if !waitFor(filepath.Join(dir, "events.sock")) {
		fatal("agent did not start within 60s")
	}
	time.Sleep(time.Second)

	stop := make(chan struct{})
	var generated atomic.Uint64
	bgStart := time.Now()
	go background(stop, filepath.Join(dir, "nobody"), &generated)
	time.Sleep(time.Second)

	seen := tail(findings)
	// Unconnected: a refused query must not fail the next one's send.
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		fatal(err)
	}
	dst := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53}
	var lat []time.Duration
	for i := 0; i < *probes; i++ {
		name := fmt.Sprintf("p%d-%d.c2.guarddutyc2activityb.com", i, time.Now().UnixNano())
		q := dnsmessage.Message{Header: dnsmessage.Header{ID: uint16(i)},
			Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName(name + "."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}}}
		pkt, _ := q.Pack()
		t0 := time.Now()
		if _, err := conn.WriteTo(pkt, dst); err != nil {
			fatal(err)
		}
		deadline := t0.Add(5 * time.Second)
		for {
			if at, ok := seen(name); ok {
				lat = append(lat, at.Sub(t0))
				break
			}
			if time.Now().After(deadline) {
				log.Printf("probe %d: no finding within 5s", i)
				break
			}
			time.Sleep(200 * time.Microsecond)
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(stop)
	rate := float64(generated.Load()) / time.Since(bgStart).Seconds()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	if len(lat) == 0 {
		fatal("no finding arrived")
	}
	p := func(q float64) time.Duration { return lat[int(q*float64(len(lat)-1))] }
	out := fmt.Sprintf("| syscall → finding line | value |\n|---|---|\n| background load | %.0f events/s |\n| probes timed | %d of %d |\n| p50 | %s |\n| p99 | %s |\n| max | %s |\n",
		rate, len(lat), *probes, p(0.50).Round(10*time.Microsecond), p(0.99).Round(10*time.Microsecond), lat[len(lat)-1].Round(10*time.Microsecond))
	fmt.Print(out)
	if *markdown != "" {
		_ = os.WriteFile(*markdown, []byte(out), 0o644)
	}
}

func waitFor(path string) bool {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

// background paces connect attempts at -load per second in 1 ms slices.
func background(stop chan struct{}, path string, n *atomic.Uint64) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		log.Print(err)
		return
	}
	sa := &unix.SockaddrUnix{Name: path}
	start := time.Now()
	var done uint64
	for {
		select {
		case <-stop:
			return
		default:
		}
		want := uint64(time.Since(start).Seconds() * float64(*load))
		for ; done < want; done++ {
			_ = unix.Connect(fd, sa)
		}
		n.Store(done)
		time.Sleep(200 * time.Microsecond)
	}
}

// tail follows the findings file and reports when a domain's finding
// line was first seen.
func tail(path string) func(domain string) (time.Time, bool) {
	seen := map[string]time.Time{}
	var off int64
	return func(domain string) (time.Time, bool) {
		if t, ok := seen[domain]; ok {
			return t, true
		}
		f, err := os.Open(path)
		if err != nil {
			return time.Time{}, false
		}
		defer f.Close()
		_, _ = f.Seek(off, 0)
		r := bufio.NewReader(f)
		now := time.Now()
		for {
			line, err := r.ReadBytes('\n')
			if err != nil {
				break
			}
			off += int64(len(line))
			var fd struct {
				Service struct {
					RuntimeDetails struct {
						Context map[string]any `json:"context"`
					} `json:"runtimeDetails"`
				} `json:"service"`
			}
			if json.Unmarshal(line, &fd) == nil {
				if d, ok := fd.Service.RuntimeDetails.Context["domain"].(string); ok && strings.HasPrefix(d, "p") {
					seen[d] = now
				}
			}
		}
		t, ok := seen[domain]
		return t, ok
	}
}

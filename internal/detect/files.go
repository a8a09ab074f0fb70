package detect

import (
	"path"
	"regexp"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/mamori-dev/mamori/internal/event"
)

// File-based detectors: sensitive files modified, container escapes
// through runc and cgroup release_agent, secrets read.

var fileKinds = []event.Kind{event.KindOpen, event.KindRename, event.KindLink, event.KindSymlink, event.KindUnlink,
	event.KindChmod, event.KindChown}

// fileOp names the operation and the paths it changes, or "" when the
// event changes nothing (a read-only open).
func fileOp(ev *event.Event) (op string, paths []string) {
	f := ev.File
	if f == nil {
		return "", nil
	}
	switch ev.Kind {
	case event.KindOpen:
		if !f.Write {
			return "", nil
		}
		if f.Created {
			return "create", []string{f.Path} // nothing was there to destroy
		}
		if f.Flags&0o1000 != 0 { // O_TRUNC
			return "truncate", []string{f.Path}
		}
		// truncate(1) and shred(1) open without O_TRUNC and then cut or
		// overwrite the file through the descriptor (ftruncate, writes):
		// their open is the destruction.
		if destroyers[progName(ev)] {
			return "truncate", []string{f.Path}
		}
		return "write", []string{f.Path}
	case event.KindRename:
		return "rename", []string{f.Path, f.NewPath}
	case event.KindLink:
		return "link", []string{f.NewPath}
	case event.KindSymlink:
		return "symlink", []string{f.NewPath}
	case event.KindUnlink:
		return "unlink", []string{f.Path}
	case event.KindChmod:
		return "chmod", []string{f.Path}
	case event.KindChown:
		return "chown", []string{f.Path}
	}
	return "", nil
}

// destroyers are the programs whose opening a file for writing empties or
// overwrites it.
var destroyers = map[string]bool{"truncate": true, "shred": true}

type fileRule struct {
	typ string
	// match reports whether path is covered, given the operation.
	match func(p, op string) bool
}

// under reports whether p lies under one of dirs (prefixes); a prefix
// ending in "/" also matches the directory itself, so renaming or
// replacing /var/log or /etc/sudoers.d as a whole counts.
func under(p string, dirs ...string) bool {
	for _, d := range dirs {
		if strings.HasPrefix(p, d) || (strings.HasSuffix(d, "/") && p == d[:len(d)-1]) {
			return true
		}
	}
	return false
}

var historyNames = map[string]bool{".bash_history": true, ".zsh_history": true, ".sh_history": true, ".ash_history": true,
	".history": true, ".python_history": true, ".mysql_history": true, ".psql_history": true}

var fileRules = []fileRule{
	// Logs and history grow by appends every day; destroying them is what
	// an intruder does: truncation, deletion, renaming, linking away.
	{"DefenseEvasion:Runtime/SensitiveFileModified", func(p, op string) bool {
		destroy := op == "truncate" || op == "unlink" || op == "rename" || op == "symlink" || op == "link"
		if historyNames[path.Base(p)] || under(p, "/var/log/") {
			return destroy
		}
		return under(p, "/etc/audit/", "/etc/rsyslog", "/etc/syslog", "/etc/logrotate") && op != "chown"
	}},
	{"Persistence:Runtime/SensitiveFileModified", func(p, op string) bool {
		base := path.Base(p)
		if strings.Contains(p, "/.ssh/") && (base == "authorized_keys" || base == "authorized_keys2") {
			return true
		}
		if base == ".ssh" && (op == "rename" || op == "symlink" || op == "link") {
			return true // a whole .ssh directory put in place
		}
		if (strings.HasPrefix(p, "/root/") || strings.HasPrefix(p, "/home/")) &&
			(base == ".bashrc" || base == ".profile" || base == ".bash_profile" || base == ".zshrc" || base == ".bash_logout") {
			return true
		}
		switch p {
		case "/etc/passwd", "/etc/shadow", "/etc/group", "/etc/gshadow", "/etc/crontab", "/etc/rc.local",
			"/etc/profile", "/etc/bash.bashrc", "/etc/environment", "/etc/ld.so.preload":
			return true
		}
		return under(p, "/etc/cron.", "/var/spool/cron", "/etc/init.d/", "/etc/systemd/system/", "/run/systemd/system/",
			"/etc/profile.d/", "/etc/update-motd.d/")
	}},
	{"PrivilegeEscalation:Runtime/SensitiveFileModified", func(p, op string) bool {
		return p == "/etc/sudoers" || under(p, "/etc/sudoers.d/", "/etc/pam.d/", "/etc/security/") ||
			p == "/etc/login.defs" || p == "/etc/doas.conf"
	}},
}

// logKeepers rotate, compress and expire the logs under /var/log as their
// job (nightly, and on every package install): their deletions and renames
// there are not an intruder's. Matched by executable path, so a copy of one
// elsewhere is not exempt, and for interpreted tools by their script.
var logKeepers = map[string]bool{
	"/usr/sbin/logrotate": true, "/sbin/logrotate": true,
	"/usr/lib/systemd/systemd-journald": true, "/lib/systemd/systemd-journald": true,
	"/usr/bin/apt": true, "/usr/bin/apt-get": true, "/usr/bin/aptitude": true, "/usr/bin/dpkg": true,
	"/usr/bin/dnf": true, "/usr/bin/yum": true, "/usr/bin/rpm": true, "/usr/bin/unattended-upgrade": true,
	"/usr/sbin/unattended-upgrade": true, "/usr/bin/zypper": true, "/sbin/apk": true,
}

// byLogKeeper reports whether a log keeper does op: the keeper itself, or
// a compressor it started (logrotate's gzip), on the host only — a container
// has no rotating logs of its own, and there the exemption would only serve
// an intruder. Only rotation's operations: removing, renaming, and
// (logrotate's copytruncate) truncating.
func byLogKeeper(ev *event.Event, op string) bool {
	if op != "unlink" && op != "rename" && op != "truncate" {
		return false
	}
	p := &ev.Process
	// The namespace id the kernel gives is the thread's: on the host it
	// equals the thread id, in any other pid namespace it does not.
	tid := p.TID
	if tid == 0 {
		tid = p.PID
	}
	// A keeper run with a library of someone's choosing preloaded is not
	// only the keeper.
	if (ev.Container != nil && ev.Container.ID != "") || (p.NSPID != 0 && p.NSPID != tid) || p.Preloaded {
		return false
	}
	if keeper(p.Exe, p.Args) {
		return true
	}
	return compressors[p.Exe] && len(p.Lineage) > 0 && keeper(p.Lineage[0].Exe, p.Lineage[0].Args)
}

func keeper(exe string, args []string) bool {
	if path.Base(exe) == "logrotate" && logKeepers[exe] {
		return systemRotation(args)
	}
	if logKeepers[exe] {
		return true
	}
	// The system's interpreter running a keeper's script: python3 /usr/bin/dnf ...
	return len(args) > 1 && logKeepers[args[1]] && systemPython.MatchString(exe)
}

// systemPython matches the interpreters package managers run on, by path:
// a python copied to /tmp is not one.
var systemPython = regexp.MustCompile(`^/usr/(bin|libexec)/(python3?(\.[0-9]+)?|platform-python)$`)

// systemRotation reports whether logrotate's arguments are the nightly
// run's: the system's configuration (/etc/logrotate.conf or a file of
// /etc/logrotate.d) or none, without forcing (-f rotates everything now,
// and run again and again expires every log) or a state file of one's own.
func systemRotation(args []string) bool {
	for i := 1; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-f" || a == "--force" || a == "-s" || a == "--state" || strings.HasPrefix(a, "--state="):
			return false
		case strings.HasPrefix(a, "-") && !strings.HasPrefix(a, "--") && strings.ContainsAny(a[1:], "fs"):
			return false // -vf, -fs ...
		case a == "-l" || a == "-m" || a == "--log" || a == "--mail":
			i++ // their value is not a configuration
		case strings.HasPrefix(a, "-"):
		default:
			if c := path.Clean(a); c != "/etc/logrotate.conf" && !strings.HasPrefix(c, "/etc/logrotate.d/") {
				return false
			}
		}
	}
	return true
}

// compressors logrotate runs, by path.
var compressors = map[string]bool{
	"/usr/bin/gzip": true, "/bin/gzip": true, "/usr/bin/xz": true, "/bin/xz": true,
	"/usr/bin/bzip2": true, "/bin/bzip2": true, "/usr/bin/zstd": true, "/usr/bin/lz4": true,
}

// engineStorage are where container engines keep containers' and images'
// files on the host. A host process working there (podman removing a
// container, and its .bash_history with it) changes no file of the host's.
var engineStorage = []string{"/var/lib/containers/", "/run/containers/", "/var/lib/docker/", "/run/docker/",
	"/var/lib/containerd/", "/run/containerd/", "/var/lib/kubelet/pods/"}

// engineUnpackers are the helpers podman, buildah and Docker re-execute,
// chrooted into a new image layer, to unpack it (argv[0] names the helper,
// the executable is the engine's): the /etc/passwd they write is the
// layer's, not the host's.
var engineUnpackers = map[string]bool{"storage-untar": true, "storage-applyLayer": true, "storage-untar-path": true,
	"docker-untar": true, "docker-applyLayer": true}

var engineExes = map[string]bool{"/usr/bin/podman": true, "/usr/bin/buildah": true, "/usr/bin/skopeo": true,
	"/usr/bin/dockerd": true, "/usr/sbin/dockerd": true, "/usr/bin/crio": true, "/usr/local/bin/podman": true}

func engineUnpacking(ev *event.Event) bool {
	p := &ev.Process
	return onHost(ev) && len(p.Args) > 0 && engineUnpackers[p.Args[0]] && engineExes[p.Exe] && !p.Preloaded
}

// historySave reports whether ev is bash saving its own history to p:
// without histappend, bash rewrites the whole file (O_TRUNC) at every exit,
// through readline, which creates it 0600. A redirection in the shell
// (`> ~/.bash_history`, `cat /dev/null > ...`) asks for 0666, and any other
// program is not the shell saving its history.
func historySave(ev *event.Event, p string) bool {
	f := ev.File
	return f != nil && historyNames[path.Base(p)] && f.Mode == 0o600 && path.Base(ev.Process.Exe) == "bash" &&
		!ev.Process.Preloaded
}

// onHost reports whether ev comes from a host process (not a container's,
// nor one in a pid namespace of its own).
func onHost(ev *event.Event) bool {
	p := &ev.Process
	tid := p.TID
	if tid == 0 {
		tid = p.PID
	}
	return (ev.Container == nil || ev.Container.ID == "") && (p.NSPID == 0 || p.NSPID == tid)
}

// sensitiveFiles covers the three SensitiveFileModified types. Attempts
// count: a denied write to /etc/sudoers is still reported, with its error.
func sensitiveFiles() Detector {
	var types []string
	for _, r := range fileRules {
		types = append(types, r.typ)
	}
	return newFn("sensitive-file-modified", Both, fileKinds, types, func(ev *event.Event, hit func(Hit)) {
		op, paths := fileOp(ev)
		if op == "" || engineUnpacking(ev) {
			return
		}
		for _, p := range paths {
			if strings.HasPrefix(p, "/") {
				p = path.Clean(p) // no walking around the rules with dot-dot
			}
			if onHost(ev) && under(p, engineStorage...) {
				continue // a container's files, through its engine's storage
			}
			if op == "truncate" && historySave(ev, p) {
				continue
			}
			// At most one hit per path, and every path judged: moving a log
			// into /etc/cron.d destroys the one and plants the other.
			for _, r := range fileRules {
				if p != "" && r.match(p, op) {
					if under(p, "/var/log/") && byLogKeeper(ev, op) {
						break
					}
					ctx := map[string]any{"fileOperation": op, "filePath": p, "result": errOr(ev)}
					if historyNames[path.Base(p)] {
						ctx["shellHistoryFilePath"] = p
					}
					key := p
					if under(p, "/var/log/") && (op == "unlink" || op == "rename") && !historyNames[path.Base(p)] {
						// rm -r or a move across filesystems unlinks a log
						// directory file by file, then the directory: one
						// finding per directory, not one per file.
						if ev.File.Flags&unix.AT_REMOVEDIR == 0 {
							key = path.Dir(p)
						}
					}
					hit(Hit{Type: r.typ, KeyActor: key, Context: ctx})
					break
				}
			}
		}
	})
}

// runcEscape: the runc binary opened for writing (CVE-2019-5736 rewrites
// the host's runc through /proc/self/exe).
func runcEscape() Detector {
	return newFn("runc-overwrite", Both, []event.Kind{event.KindOpen}, []string{"PrivilegeEscalation:Runtime/RuncContainerEscape"},
		func(ev *event.Event, hit func(Hit)) {
			f := ev.File
			if f == nil || !f.Write || path.Base(f.Path) != "runc" {
				return
			}
			hit(Hit{Type: "PrivilegeEscalation:Runtime/RuncContainerEscape", KeyActor: f.Path,
				Context: map[string]any{"runcBinaryPath": f.Path, "result": errOr(ev)}})
		})
}

// releaseAgent: writes to a cgroup's release_agent or notify_on_release,
// the classic privileged-container escape.
func releaseAgent() Detector {
	return newFn("cgroup-release-agent", Both, []event.Kind{event.KindOpen},
		[]string{"PrivilegeEscalation:Runtime/CGroupsReleaseAgentModified"},
		func(ev *event.Event, hit func(Hit)) {
			f := ev.File
			if f == nil || !f.Write {
				return
			}
			if b := path.Base(f.Path); b == "release_agent" || b == "notify_on_release" {
				hit(Hit{Type: "PrivilegeEscalation:Runtime/CGroupsReleaseAgentModified", KeyActor: f.Path,
					Context: map[string]any{"releaseAgentPath": f.Path, "result": errOr(ev)}})
				return
			}
			// The other programs the kernel runs as root on the host
			// (a core dump's pipe, module loading, hotplug): set from a
			// container they are the same escape. The host's own settings
			// (sysctl at boot) are not judged.
			switch f.Path {
			case "/proc/sys/kernel/core_pattern", "/proc/sys/kernel/modprobe", "/sys/kernel/uevent_helper", "/proc/sys/kernel/hotplug":
				if ev.Container != nil && ev.Container.ID != "" {
					hit(Hit{Type: "PrivilegeEscalation:Runtime/CGroupsReleaseAgentModified", KeyActor: f.Path,
						Context: map[string]any{"releaseAgentPath": f.Path, "result": errOr(ev)}})
				}
			}
		})
}

// usermodeHelper: the kernel ran a program of someone's choosing. A
// cgroup's release_agent, core_pattern's pipe and the other usermode
// helpers run as root on the host, started by a kernel worker: the
// container escape through a release_agent is seen here when it runs,
// however the file was written (a cgroup hierarchy mounted anywhere, a
// path the open filter does not watch). The kernel's own helpers live in
// the system's directories.
func usermodeHelper() Detector {
	return newFn("usermode-helper", Both, []event.Kind{event.KindExec},
		[]string{"PrivilegeEscalation:Runtime/CGroupsReleaseAgentModified"},
		func(ev *event.Event, hit func(Hit)) {
			x, l := ev.Exec, ev.Process.Lineage
			// Started by a kernel worker, itself kthreadd's (pid 2): no
			// process of the user's can be that, whatever it calls itself.
			if x == nil || len(l) < 2 || !strings.HasPrefix(l[0].Name, "kworker/") || l[1].PID != 2 {
				return
			}
			prog := x.Filename
			if prog == "" {
				prog = x.Path
			}
			// An interpreter run directly as the helper ('|/bin/sh /tmp/x'
			// in core_pattern) runs whatever its arguments say: the system's
			// helpers that are scripts start by their own path (shebang).
			direct := x.ScriptPath == "" && (isShell(ev) || interpreters[progName(ev)])
			if under(path.Clean(prog), helperDirs...) && !direct {
				return
			}
			hit(Hit{Type: "PrivilegeEscalation:Runtime/CGroupsReleaseAgentModified", KeyActor: prog,
				Context: map[string]any{"releaseAgentPath": prog}})
		})
}

// interpreters run the code their arguments name.
var interpreters = map[string]bool{"python": true, "python3": true, "python2": true, "perl": true, "ruby": true,
	"node": true, "php": true, "lua": true, "tclsh": true, "awk": true, "gawk": true, "busybox": true}

// helperDirs hold the programs the kernel runs as usermode helpers on a
// sound host: modprobe, systemd's cgroups agent, core dump handlers,
// request-key, poweroff.
var helperDirs = []string{"/sbin/", "/usr/sbin/", "/bin/", "/usr/bin/", "/lib/", "/usr/lib/", "/usr/libexec/", "/usr/share/",
	"/lib64/", "/usr/lib64/", "/usr/local/sbin/", "/usr/local/bin/"}

// authReaders read /etc/shadow and friends for a living.
var authReaders = map[string]bool{"unix_chkpwd": true, "sshd": true, "login": true, "su": true, "sudo": true, "passwd": true,
	"chpasswd": true, "useradd": true, "usermod": true, "userdel": true, "pwck": true, "grpck": true, "chage": true,
	"systemd-logind": true, "cron": true, "crond": true, "vipw": true, "pwconv": true, "grpconv": true}

var secretPrefixes = []string{"/etc/shadow", "/etc/gshadow", "/etc/ssh/ssh_host_", "/root/.ssh/", "/root/.aws/", "/root/.kube/",
	"/root/.docker/config.json", "/var/run/secrets/", "/run/secrets/", "/proc/kcore"}

// secretRead: a secret read by something that is not an authentication
// tool. mamori's own type; the reference has no equivalent.
func secretRead() Detector {
	return newFn("sensitive-file-read", Both, []event.Kind{event.KindOpen}, []string{"CredentialAccess:Runtime/SensitiveFileRead"},
		func(ev *event.Event, hit func(Hit)) {
			f := ev.File
			// A read the kernel sent for the file it opened is of a
			// secret whatever its path (a hard link, a bind mount).
			if f == nil || f.Write || !f.ByInode && !under(f.Path, secretPrefixes...) || authReaders[path.Base(ev.Process.Exe)] {
				return
			}
			// Listing a directory of secrets (ls ~/.ssh, a backup's walk)
			// or taking an O_PATH handle reads no secret: a read needs an
			// open of the file itself, which is judged on its own.
			if f.Flags&(unix.O_DIRECTORY|unix.O_PATH) != 0 {
				return
			}
			// A Kubernetes client reading its own service-account token is
			// its normal start-up; only shells and common tools are flagged there.
			if under(f.Path, "/var/run/secrets/", "/run/secrets/") && !isShellOrTool(ev.Process.Exe) {
				return
			}
			hit(Hit{Type: "CredentialAccess:Runtime/SensitiveFileRead", KeyActor: f.Path,
				Context: map[string]any{"filePath": f.Path, "result": errOr(ev)}})
		})
}

var toolNames = map[string]bool{"cat": true, "head": true, "tail": true, "less": true, "more": true, "cp": true, "base64": true,
	"xxd": true, "od": true, "strings": true, "grep": true, "curl": true, "wget": true, "nc": true, "busybox": true, "tar": true, "scp": true}

func isShellOrTool(exe string) bool {
	b := path.Base(exe)
	return shells[b] || toolNames[b]
}

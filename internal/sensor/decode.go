package sensor

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"path"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mamori-dev/mamori/internal/event"
)

// Clock converts the kernel's boot-relative nanoseconds to wall time.
type Clock struct{ offset time.Duration }

// NewClock measures the offset between CLOCK_REALTIME and CLOCK_BOOTTIME.
func NewClock() Clock {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return Clock{}
	}
	boot := time.Duration(ts.Nano())
	return Clock{offset: time.Duration(time.Now().UnixNano()) - boot}
}

// Wall returns the wall time of a boot-relative timestamp.
func (c Clock) Wall(bootNS uint64) time.Time {
	return time.Unix(0, int64(bootNS)+int64(c.offset))
}

// Decoder turns raw records into events.
type Decoder struct {
	clock Clock
	rec   record
}

// NewDecoder returns a decoder using the current boot offset.
func NewDecoder() *Decoder { return &Decoder{clock: NewClock()} }

// Decode parses one ring-buffer sample. A malformed record returns an
// error (the reader counts it); it never panics.
func (d *Decoder) Decode(b []byte) (*event.Event, error) {
	r := &d.rec
	if err := parseRecord(b, r); err != nil {
		return nil, err
	}
	if r.kind == 0 || r.kind >= event.MaxKernelKind {
		return nil, fmt.Errorf("unknown event kind %d", r.kind)
	}
	ev := &event.Event{
		Kind:      event.Kind(r.kind),
		Time:      d.clock.Wall(r.ts),
		Result:    r.ret,
		Truncated: r.flags&flagTrunc != 0,
		Process: event.Process{
			PID: r.pid, TID: r.tid, NSPID: r.nspid, PPID: r.ppid,
			UID: r.uid, GID: r.gid, EUID: r.euid, EGID: r.egid,
			Comm: r.comm, CgroupID: r.cgroup,
			Start:   d.clock.Wall(r.start),
			StartNS: r.start, ParentStartNS: r.pstart,
		},
	}
	if r.ret < 0 && r.ret > -4096 {
		ev.Error = errnoName(-r.ret)
	}
	if err := decodeKind(ev, r, d.clock); err != nil {
		return nil, fmt.Errorf("decode %s: %w", ev.Kind, err)
	}
	return ev, nil
}

func errnoName(n int64) string {
	name := unix.ErrnoName(unix.Errno(n))
	if name == "" {
		return fmt.Sprintf("errno %d", n)
	}
	return name
}

func decodeKind(ev *event.Event, r *record, clock Clock) error {
	a := &r.args
	switch ev.Kind {
	case event.KindExec:
		decodeExec(ev, r, clock)
	case event.KindFork:
		ev.Fork = &event.Fork{ChildPID: uint32(a[0]), ChildTID: uint32(a[1]), ChildStartNS: a[2]}
	case event.KindExit:
		st := int(a[0])
		ev.Exit = &event.Exit{Code: (st >> 8) & 0xff, Signal: st & 0x7f, Core: st&0x80 != 0}
	case event.KindOpen:
		flags := uint32(a[0])
		ev.File = &event.File{
			Path: r.str(0), RawPath: r.str(1), Flags: flags, Mode: uint32(a[1]) & 0o7777,
			Write:   flags&3 != 0 || flags&(unix.O_CREAT|unix.O_TRUNC) != 0,
			ByInode: r.flags&flagInode != 0,
			Created: r.flags&flagNew != 0,
		}
		if ev.File.Path == "" || ev.Result < 0 {
			ev.File.Path = underProcRoot(absPath(r.str(1), r.str(2)))
		}
		if ev.File.RawPath == ev.File.Path {
			ev.File.RawPath = ""
		}
	case event.KindRename, event.KindLink, event.KindSymlink:
		// Each relative path has its own base (strs 2 and 3: the directory
		// fds of renameat and linkat, or the cwd). A record cut short
		// loses the new path's base: it stays relative rather than take
		// the old one's (which could name another directory).
		newBase := r.str(3)
		ev.File = &event.File{Path: absPath(r.str(0), r.str(2)), NewPath: absPath(r.str(1), newBase), Flags: uint32(a[0])}
		if ev.Kind == event.KindLink {
			ev.File.Path = emptyAt(r.str(0), r.str(2)) // linkat(fd, "", ..., AT_EMPTY_PATH)
		}
		if ev.Kind == event.KindSymlink {
			// The old name of a symlink is its content, not a path we resolve.
			ev.File.Path = r.str(0)
		}
	case event.KindUnlink:
		ev.File = &event.File{Path: absPath(r.str(0), r.str(1)), Flags: uint32(a[0])}
	case event.KindChmod:
		mode := uint32(a[0]) & 0o7777
		ev.File = &event.File{Path: emptyAt(r.str(0), r.str(1)), Mode: mode,
			SetUID: mode&unix.S_ISUID != 0, SetGID: mode&unix.S_ISGID != 0}
	case event.KindChown:
		uid, gid := int64(int32(uint32(a[0]))), int64(int32(uint32(a[1])))
		ev.File = &event.File{Path: emptyAt(r.str(0), r.str(1)), UID: &uid, GID: &gid}
	case event.KindSocket:
		ev.Net = &event.Net{Family: familyName(int(a[0])), Type: sockTypeName(int(a[1])), Protocol: int(a[2]), FD: int(ev.Result)}
	case event.KindConnect, event.KindBind:
		ev.Net = &event.Net{FD: int(int32(a[0])), Type: sockTypeName(int(a[3]))}
		parseSockaddr(ev.Net, r.strs[0], ev.Kind == event.KindConnect)
		if ev.Net.Family == "" {
			ev.Net.Family = familyName(int(a[2]))
		}
		if ev.Kind == event.KindConnect && a[4] != 0 {
			ev.Net.PeerInode, ev.Net.PeerDev = a[4], uint32(a[5])
		}
	case event.KindListen, event.KindAccept, event.KindDup:
		n := &event.Net{}
		sockFromArgs(n, a, r.strs[0])
		switch ev.Kind {
		case event.KindListen:
			n.FD, n.Backlog = int(int32(a[0])), int(int32(a[1]))
		case event.KindAccept:
			n.FD = int(ev.Result)
		case event.KindDup:
			n.OldFD, n.NewFD = int(int32(a[0])), int(int32(a[1]))
		}
		ev.Net = n
	case event.KindMount:
		ev.Mount = &event.Mount{Source: r.str(0), Target: r.str(1), FSType: r.str(2), Flags: a[0]}
	case event.KindUmount:
		ev.Mount = &event.Mount{Target: r.str(0), Flags: a[0]}
	case event.KindModule:
		m := &event.Module{FromFile: a[0] == 1, Path: r.str(0), Params: r.str(1)}
		if !m.FromFile {
			m.Size = a[1]
		}
		ev.Module = m
	case event.KindPtrace:
		ev.Access = &event.Access{Op: "ptrace", Request: ptraceName(a[0]), TargetPID: uint32(a[1])}
	case event.KindProcessVM:
		op := "process_vm_readv"
		if a[1] == 1 {
			op = "process_vm_writev"
		}
		ev.Access = &event.Access{Op: op, TargetPID: uint32(a[0])}
	case event.KindMemfd:
		ev.Memory = &event.Memory{Name: r.str(0), Flags: a[0], FD: int(ev.Result)}
	case event.KindUserfaultfd:
		ev.Memory = &event.Memory{Flags: a[0], FD: int(ev.Result)}
	case event.KindBPF:
		ev.BPF = &event.BPFCall{Cmd: bpfCmdName(a[0])}
	case event.KindSetID:
		ev.Cred = &event.Cred{Call: setidName(a[0]), Args: []int64{int64(int32(a[1])), int64(int32(a[2])), int64(int32(a[3]))},
			OldUID: uint32(a[4]), OldEUID: uint32(a[5]), NewUID: uint32(a[6]), NewEUID: uint32(a[7]),
			NewGID: r.gid, NewEGID: r.egid}
		ev.Cred.Args = ev.Cred.Args[:setidArity(a[0])]
	case event.KindCapset:
		ev.Cred = &event.Cred{Call: "capset", Effective: a[0], OldUID: r.uid, OldEUID: r.euid, NewUID: r.uid, NewEUID: r.euid}
	case event.KindUnshare:
		ev.Namespace = &event.Namespace{Call: "unshare", Flags: cloneFlagNames(a[0])}
	case event.KindSetns:
		ev.Namespace = &event.Namespace{Call: "setns", Flags: cloneFlagNames(a[1]), FD: int(int32(a[0]))}
		if p := r.str(0); p != "" {
			ev.Namespace.Flags = append(ev.Namespace.Flags, "file="+p)
		}
	case event.KindMprotect:
		ev.Memory = &event.Memory{Addr: a[0], Len: a[1], Prot: protString(a[2]), Anonymous: a[3] == 1, Stack: a[4] == 1}
	case event.KindMmap:
		ev.Memory = &event.Memory{Addr: a[0], Len: a[1], Prot: protString(a[2]), Flags: a[3], FD: int(int32(a[4])),
			Anonymous: a[3]&unix.MAP_ANONYMOUS != 0, Path: r.str(0)}
	case event.KindCgroupMkdir, event.KindCgroupRmdir:
		ev.Cgroup = &event.Cgroup{ID: a[0], Hierarchy: int(int32(a[1])), Level: int(int32(a[2])), Path: r.str(0)}
	case event.KindDNS:
		return decodeDNS(ev, r)
	}
	return nil
}

var ldPreload, ldLibPath = []byte("LD_PRELOAD="), []byte("LD_LIBRARY_PATH=")

// codeEnv are the variables that make an interpreter or shell load code of
// the caller's choosing (as LD_PRELOAD does for any binary).
var codeEnv = [][]byte{[]byte("PYTHONPATH="), []byte("PYTHONSTARTUP="), []byte("PYTHONHOME="),
	[]byte("PERL5LIB="), []byte("PERL5OPT="), []byte("RUBYLIB="), []byte("RUBYOPT="),
	[]byte("NODE_OPTIONS="), []byte("BASH_ENV="), []byte("ENV=")}

// maxCodeEnv bounds what an exec event keeps of them.
const maxCodeEnv, maxCodeEnvLen = 8, 256

func decodeExec(ev *event.Event, r *record, clock Clock) {
	a := &r.args
	x := &event.Exec{
		Path: r.str(0), Filename: r.str(1), Args: splitNUL(r.strs[3]), Cwd: r.str(4),
		Inode: a[0], Dev: uint32(a[1]), Mode: uint32(a[2]),
		MTime: clockless(a[3]), CTime: clockless(a[4]), StdioOnNetwork: r.flags&flagStdio != 0,
	}
	interp := r.str(2)
	if interp != "" && interp != x.Filename {
		// binfmt_script rewrote the interpreter: Filename is the script.
		x.Interp = interp
		x.ScriptPath = absPath(x.Filename, x.Cwd)
	}
	name := r.str(6)
	nlink := a[5]
	x.Memfd = strings.HasPrefix(name, "memfd:")
	x.Deleted = nlink == 0 && !x.Memfd
	if x.Memfd {
		// A memfd has no place in any mount: name it as /proc/PID/exe does.
		x.Path = "/" + name + " (deleted)"
	}
	eachNUL(r.strs[5], func(kv []byte) {
		switch {
		case bytes.HasPrefix(kv, ldPreload):
			x.LDPreload = string(kv[len(ldPreload):])
		case bytes.HasPrefix(kv, ldLibPath):
			x.LDLibPath = string(kv[len(ldLibPath):])
		case len(kv) > 0 && strings.IndexByte("PRNBE", kv[0]) >= 0: // the names' first letters: most variables skip the list
			for _, name := range codeEnv {
				if bytes.HasPrefix(kv, name) && len(x.CodeEnv) < maxCodeEnv {
					x.CodeEnv = append(x.CodeEnv, string(kv[:min(len(kv), maxCodeEnvLen)]))
					break
				}
			}
		}
	})
	ev.Exec = x
	ev.Process.Exe = x.Path
	ev.Process.Args = x.Args
	ev.Process.Cwd = x.Cwd
}

// clockless turns inode timestamps (real-time ns) into time values.
func clockless(ns uint64) time.Time { return time.Unix(0, int64(ns)) }

// absPath makes p absolute against base (the directory fd of an *at call,
// or the cwd) and cleans it lexically: a "/var/log/../../etc/sudoers.d/x"
// is reported as the file it names, so path rules cannot be walked around
// with dot-dot segments. No symlinks are followed: the caller's view is
// what counts. The empty string passes through.
func absPath(p, cwd string) string {
	if p == "" {
		return p
	}
	if !strings.HasPrefix(p, "/") {
		if cwd == "" {
			return p
		}
		p = strings.TrimSuffix(cwd, "/") + "/" + p
	}
	return path.Clean(p)
}

// underProcRoot turns a path through a process's root directory
// ("/proc/PID/root/etc/shadow", "/proc/self/task/TID/root/...") into the
// path it names under that root: the file a failed open through it tried
// to reach. (A successful open is named by the kernel's walk of the file
// it opened.) Other paths pass through.
func underProcRoot(p string) string {
	rest, ok := strings.CutPrefix(p, "/proc/")
	if !ok {
		return p
	}
	segs := strings.SplitN(rest, "/", 5)
	switch {
	case len(segs) >= 3 && segs[1] == "root":
		return "/" + strings.Join(segs[2:], "/")
	case len(segs) == 5 && segs[1] == "task" && segs[3] == "root":
		return "/" + segs[4]
	}
	return p
}

// emptyAt is absPath for calls that take AT_EMPTY_PATH: an empty path
// names the directory fd's own file, whose walk is the base.
func emptyAt(p, base string) string {
	if p == "" {
		return base
	}
	return absPath(p, base)
}

func familyName(f int) string {
	switch f {
	case unix.AF_UNIX:
		return "unix"
	case unix.AF_INET:
		return "inet"
	case unix.AF_INET6:
		return "inet6"
	case unix.AF_PACKET:
		return "packet"
	case unix.AF_NETLINK:
		return "netlink"
	case 0:
		return ""
	}
	return fmt.Sprintf("af%d", f)
}

func sockTypeName(t int) string {
	switch t & 0xf {
	case unix.SOCK_STREAM:
		return "stream"
	case unix.SOCK_DGRAM:
		return "dgram"
	case unix.SOCK_RAW:
		return "raw"
	case unix.SOCK_SEQPACKET:
		return "seqpacket"
	case 0:
		return ""
	}
	return fmt.Sprintf("type%d", t&0xf)
}

// parseSockaddr reads a raw sockaddr as passed to connect or bind.
func parseSockaddr(n *event.Net, b []byte, remote bool) {
	if len(b) < 2 {
		return
	}
	fam := int(binary.LittleEndian.Uint16(b))
	n.Family = familyName(fam)
	var addr string
	var port uint16
	switch fam {
	case unix.AF_INET:
		if len(b) >= 8 {
			port = binary.BigEndian.Uint16(b[2:])
			addr = netip.AddrFrom4([4]byte(b[4:8])).String()
		}
	case unix.AF_INET6:
		if len(b) >= 24 {
			port = binary.BigEndian.Uint16(b[2:])
			addr = netip.AddrFrom16([16]byte(b[8:24])).Unmap().String()
		}
	case unix.AF_UNIX:
		p := b[2:]
		if len(p) > 0 && p[0] == 0 {
			// Abstract socket: shown with a leading '@' like ss(8) does.
			n.SocketPath = "@" + strings.TrimRight(string(p[1:]), "\x00")
		} else if i := strings.IndexByte(string(p), 0); i >= 0 {
			n.SocketPath = string(p[:i])
		} else {
			n.SocketPath = string(p)
		}
		return
	}
	if remote {
		n.RemoteAddr, n.RemotePort = addr, port
	} else {
		n.LocalAddr, n.LocalPort = addr, port
	}
}

// sockFromArgs reads the socket description put_sock wrote.
func sockFromArgs(n *event.Net, a *[8]uint64, addrs []byte) {
	fam := int(a[2])
	n.Family = familyName(fam)
	n.Type = sockTypeName(int(a[3]))
	if fam != unix.AF_INET && fam != unix.AF_INET6 {
		return
	}
	n.LocalPort, n.RemotePort = uint16(a[4]), uint16(a[5])
	if len(addrs) < 32 {
		return
	}
	if fam == unix.AF_INET {
		n.LocalAddr = netip.AddrFrom4([4]byte(addrs[0:4])).String()
		n.RemoteAddr = netip.AddrFrom4([4]byte(addrs[16:20])).String()
	} else {
		n.LocalAddr = netip.AddrFrom16([16]byte(addrs[0:16])).Unmap().String()
		n.RemoteAddr = netip.AddrFrom16([16]byte(addrs[16:32])).Unmap().String()
	}
	if n.RemotePort == 0 {
		n.RemoteAddr = ""
	}
}

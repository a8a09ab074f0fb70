// Command actor performs one real behaviour per invocation, for tests: the
// sensor and detection tests run it on the host and inside containers and
// assert what the kernel reported. It is static (CGO_ENABLED=0) so it runs
// in a busybox container. Every action uses the real syscall; failures are
// printed and reflected in the exit code, because attempts count too.
package main

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: actor ACTION [ARGS...]")
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Args[2:]); err != nil {
		fmt.Fprintf(os.Stderr, "actor %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func arg(a []string, i int) string {
	if i < len(a) {
		return a[i]
	}
	fmt.Fprintf(os.Stderr, "missing argument %d\n", i+1)
	os.Exit(2)
	return ""
}

func num(s string) int {
	n, err := strconv.ParseInt(s, 0, 64)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bad number %q\n", s)
		os.Exit(2)
	}
	return int(n)
}

func run(action string, a []string) error {
	switch action {
	case "exit":
		os.Exit(num(arg(a, 0)))
	case "sleep":
		d, err := time.ParseDuration(arg(a, 0))
		if err != nil {
			return err
		}
		time.Sleep(d)
	case "open-write":
		f, err := os.OpenFile(arg(a, 0), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		_, _ = f.WriteString("mamori test\n")
		return f.Close()
	case "open-read":
		f, err := os.Open(arg(a, 0))
		if err != nil {
			return err
		}
		return f.Close()
	case "open-by-handle": // PATH: the "shocker" read, by file handle
		h, _, err := unix.NameToHandleAt(unix.AT_FDCWD, arg(a, 0), 0)
		if err != nil {
			// overlayfs gives no handles: forge one, as shocker does
			// (the capability check comes first).
			h = unix.NewFileHandle(1, make([]byte, 8))
		}
		mnt, err := unix.Open("/", unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			return err
		}
		defer unix.Close(mnt)
		fd, err := unix.OpenByHandleAt(mnt, h, unix.O_RDONLY)
		if err != nil {
			return fmt.Errorf("open_by_handle_at: %w", err)
		}
		return unix.Close(fd)
	case "rename":
		return os.Rename(arg(a, 0), arg(a, 1))
	case "link":
		return os.Link(arg(a, 0), arg(a, 1))
	case "symlink":
		return os.Symlink(arg(a, 0), arg(a, 1))
	case "unlink":
		return os.Remove(arg(a, 0))
	case "unlinkat-dir": // DIR NAME: as rm -r does, relative to a directory fd
		dfd, err := unix.Open(arg(a, 0), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(dfd)
		return unix.Unlinkat(dfd, arg(a, 1), 0)
	case "renameat-dirs": // OLDDIR OLD NEWDIR NEW
		d1, err := unix.Open(arg(a, 0), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(d1)
		d2, err := unix.Open(arg(a, 2), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(d2)
		return unix.Renameat(d1, arg(a, 1), d2, arg(a, 3))
	case "chmod":
		return unix.Chmod(arg(a, 0), uint32(num(arg(a, 1))))
	case "chown":
		return os.Lchown(arg(a, 0), num(arg(a, 1)), num(arg(a, 2)))
	case "socket-packet":
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0x0300)
		if err != nil {
			return err
		}
		return unix.Close(fd)
	case "serve":
		// Listen on ADDR, accept one connection, write a line, close.
		ln, err := net.Listen("tcp", arg(a, 0))
		if err != nil {
			return err
		}
		fmt.Println(ln.Addr().String())
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		_, _ = c.Write([]byte("hello\n"))
		c.Close()
		return ln.Close()
	case "connect":
		c, err := net.DialTimeout("tcp", arg(a, 0), 3*time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	case "connect-unix":
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Connect(fd, &unix.SockaddrUnix{Name: arg(a, 0)})
	case "dup-socket":
		// Connect, then put the socket on stdin/stdout/stderr as a reverse
		// shell does, then exec ARGS[1:] when given.
		c, err := net.DialTimeout("tcp", arg(a, 0), 3*time.Second)
		if err != nil {
			return err
		}
		f, err := c.(*net.TCPConn).File()
		if err != nil {
			return err
		}
		for _, fd := range []int{0, 1, 2} {
			if err := unix.Dup3(int(f.Fd()), fd, 0); err != nil {
				return err
			}
		}
		if len(a) > 1 {
			return syscall.Exec(a[1], a[1:], os.Environ())
		}
		return nil
	case "mount":
		return unix.Mount(arg(a, 0), arg(a, 1), arg(a, 2), 0, "")
	case "umount":
		return unix.Unmount(arg(a, 0), 0)
	case "ptrace-attach":
		pid := num(arg(a, 0))
		// The tracer is this OS thread, not the process: the detach must
		// come from the thread that attached.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := unix.PtraceAttach(pid); err != nil {
			return err
		}
		// Detach needs the tracee stopped: wait for the attach's SIGSTOP,
		// again when a signal to this (Go) process interrupts the wait —
		// detaching early fails with ESRCH.
		var ws unix.WaitStatus
		for {
			_, err := unix.Wait4(pid, &ws, unix.WALL, nil)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return fmt.Errorf("wait for tracee: %w", err)
			}
			break
		}
		return unix.PtraceDetach(pid)
	case "ptrace-traceme":
		_, _, e := unix.RawSyscall(unix.SYS_PTRACE, unix.PTRACE_TRACEME, 0, 0)
		if e != 0 {
			return e
		}
	case "sigsys-readv":
		// An evasion attempt: with SIGSYS blocked and queued on its own
		// thread — what a trapping seccomp filter leaves behind — copy
		// exactly 310 bytes (process_vm_readv's syscall number on x86_64)
		// from itself. The call succeeds and must be reported as such.
		runtime.LockOSThread()
		var set unix.Sigset_t
		set.Val[0] = 1 << (uint(unix.SIGSYS) - 1)
		if err := unix.PthreadSigmask(unix.SIG_BLOCK, &set, nil); err != nil {
			return err
		}
		if err := unix.Tgkill(unix.Getpid(), unix.Gettid(), unix.SIGSYS); err != nil {
			return err
		}
		src, dst := make([]byte, 310), make([]byte, 310)
		local := []unix.Iovec{{Base: &dst[0], Len: 310}}
		remote := []unix.RemoteIovec{{Base: uintptr(unsafe.Pointer(&src[0])), Len: 310}}
		n, err := unix.ProcessVMReadv(unix.Getpid(), local, remote, 0)
		fmt.Println(n)
		if err != nil {
			return err
		}
		os.Exit(0) // with SIGSYS still pending and blocked
	case "vm-writev", "vm-readv":
		buf := make([]byte, 8)
		local := []unix.Iovec{{Base: &buf[0], Len: 8}}
		remote := []unix.RemoteIovec{{Base: uintptr(num(arg(a, 1))), Len: 8}}
		var err error
		if action == "vm-writev" {
			_, err = unix.ProcessVMWritev(num(arg(a, 0)), local, remote, 0)
		} else {
			_, err = unix.ProcessVMReadv(num(arg(a, 0)), local, remote, 0)
		}
		return err
	case "proc-mem-write":
		f, err := os.OpenFile("/proc/"+arg(a, 0)+"/mem", os.O_RDWR, 0)
		if err != nil {
			return err
		}
		return f.Close()
	case "memfd":
		fd, err := unix.MemfdCreate(arg(a, 0), 0)
		if err != nil {
			return err
		}
		return unix.Close(fd)
	case "memfd-exec":
		// Copy an executable into a memfd and run it from there.
		data, err := os.ReadFile(arg(a, 0))
		if err != nil {
			return err
		}
		fd, err := unix.MemfdCreate("payload", 0)
		if err != nil {
			return err
		}
		if _, err := unix.Write(fd, data); err != nil {
			return err
		}
		path := fmt.Sprintf("/proc/self/fd/%d", fd)
		return syscall.Exec(path, append([]string{"payload"}, a[1:]...), os.Environ())
	case "stdio-socket-exec":
		// Run a program with a socket for its standard input and output,
		// put there without dup2/dup3: fd 0 closed and taken by socket(),
		// fd 1 by fcntl(F_DUPFD). "inet:HOST:PORT" connects over TCP,
		// "unix" uses a socket pair (the benign twin: a service's pipes).
		where, prog := arg(a, 0), arg(a, 1)
		_ = unix.Close(0)
		_ = unix.Close(1)
		if where == "unix" {
			if _, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0); err != nil {
				return err
			}
		} else {
			addr, err := net.ResolveTCPAddr("tcp4", strings.TrimPrefix(where, "inet:"))
			if err != nil {
				return err
			}
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
			if err != nil {
				return err
			}
			sa := &unix.SockaddrInet4{Port: addr.Port}
			copy(sa.Addr[:], addr.IP.To4())
			if err := unix.Connect(fd, sa); err != nil {
				return err
			}
			if _, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD, 1); err != nil {
				return err
			}
		}
		return syscall.Exec(prog, a[1:], os.Environ())
	case "userfaultfd":
		fd, _, e := unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC, 0, 0)
		if e != 0 {
			return e
		}
		return unix.Close(int(fd))
	case "bpf-prog-load":
		return loadSocketFilter()
	case "setuid":
		_, _, e := unix.RawSyscall(unix.SYS_SETUID, uintptr(num(arg(a, 0))), 0, 0)
		if e != 0 {
			return e
		}
	case "setresuid":
		_, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(num(arg(a, 0))), uintptr(num(arg(a, 1))), uintptr(num(arg(a, 2))))
		if e != 0 {
			return e
		}
	case "capset-drop":
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			return err
		}
		data[0].Effective &^= 1 << unix.CAP_NET_RAW
		return unix.Capset(&hdr, &data[0])
	case "chroot-sleep":
		// A process whose root is DIR (a filesystem's own root, as a
		// container's is), living for DURATION; with a cgroup directory,
		// it moves there first, and once in DIR makes one event that
		// touches no file (a refused connect to an abstract socket).
		d, err := time.ParseDuration(arg(a, 1))
		if err != nil {
			return err
		}
		cg := ""
		if len(a) > 2 {
			cg = a[2]
			if err := os.WriteFile(cg+"/cgroup.procs", []byte("0"), 0); err != nil {
				return err
			}
		}
		if err := unix.Chroot(arg(a, 0)); err != nil {
			return err
		}
		if err := unix.Chdir("/"); err != nil {
			return err
		}
		if cg != "" {
			if fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0); err == nil {
				_ = unix.Connect(fd, &unix.SockaddrUnix{Name: "@mamori-nobody-listens"})
				unix.Close(fd)
			}
		}
		time.Sleep(d)
	case "unshare-uts":
		return unix.Unshare(unix.CLONE_NEWUTS)
	case "setns-uts":
		f, err := os.Open(arg(a, 0))
		if err != nil {
			return err
		}
		defer f.Close()
		return unix.Setns(int(f.Fd()), unix.CLONE_NEWUTS)
	case "mprotect-exec":
		mem, err := unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			return err
		}
		return unix.Mprotect(mem, unix.PROT_READ|unix.PROT_EXEC)
	case "mmap-exec":
		f, err := os.Open(arg(a, 0))
		if err != nil {
			return err
		}
		defer f.Close()
		mem, err := unix.Mmap(int(f.Fd()), 0, 4096, unix.PROT_READ|unix.PROT_EXEC, unix.MAP_PRIVATE)
		if err != nil {
			return err
		}
		return unix.Munmap(mem)
	case "finit-module":
		f, err := os.Open(arg(a, 0))
		if err != nil {
			return err
		}
		defer f.Close()
		_, _, e := unix.Syscall(unix.SYS_FINIT_MODULE, f.Fd(), uintptr(unsafe.Pointer(&[]byte("\x00")[0])), 0)
		if e != 0 {
			return e
		}
	case "dns":
		// dns NAME SERVER [udp|udp-sendto|tcp|tcp-split]
		proto := "udp"
		if len(a) > 2 {
			proto = a[2]
		}
		return dnsQuery(arg(a, 0), arg(a, 1), proto)
	case "udp-send":
		// udp-send ADDR TEXT: one datagram, no answer awaited.
		c, err := net.Dial("udp", arg(a, 0))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte(arg(a, 1)))
		return err
	case "print-addr":
		// Print the address of a variable, then sleep: a target for
		// process_vm_writev and ptrace tests.
		var x uint64 = 42
		fmt.Printf("%d %d\n", os.Getpid(), uintptr(unsafe.Pointer(&x)))
		time.Sleep(time.Duration(num(arg(a, 0))) * time.Second)
		_ = x
	default:
		return fmt.Errorf("unknown action %q (see test/actor/main.go)", action)
	}
	return nil
}

// loadSocketFilter loads the smallest socket filter (return 0) via bpf().
func loadSocketFilter() error {
	insns := []uint64{
		0x00000000000000b7, // r0 = 0
		0x0000000000000095, // exit
	}
	license := []byte("GPL\x00")
	attr := struct {
		progType, insnCnt uint32
		insns, license    uint64
	}{
		progType: 1, // BPF_PROG_TYPE_SOCKET_FILTER
		insnCnt:  uint32(len(insns)),
		insns:    uint64(uintptr(unsafe.Pointer(&insns[0]))),
		license:  uint64(uintptr(unsafe.Pointer(&license[0]))),
	}
	buf := make([]byte, 128)
	copy(buf, (*[24]byte)(unsafe.Pointer(&attr))[:])
	fd, _, e := unix.Syscall(unix.SYS_BPF, 5, uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)))
	if e != 0 {
		return e
	}
	return unix.Close(int(fd))
}

// dnsQuery sends one A query for name to server (host:port) over a
// connected UDP socket, TCP when proto is "tcp" ("tcp-split": the length
// prefix in a write of its own), or an unconnected UDP
// socket (sendto, as some resolvers do) when proto is "udp-sendto", and
// waits briefly for the answer. It prints its pid and the query id first,
// so a test can match what the kernel saw.
func dnsQuery(name, server, proto string) error {
	id := uint16(os.Getpid())
	fmt.Printf("%d %d\n", os.Getpid(), id)
	var c net.Conn
	var err error
	if proto == "udp-sendto" {
		c, err = unconnectedUDP(server)
	} else {
		c, err = net.DialTimeout(strings.TrimSuffix(proto, "-split"), server, 2*time.Second)
	}
	if err != nil {
		return err
	}
	defer c.Close()
	msg := []byte{byte(id >> 8), byte(id), 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0}
	for _, label := range strings.Split(strings.TrimSuffix(name, "."), ".") {
		if len(label) == 0 || len(label) > 63 {
			return fmt.Errorf("bad label in %q", name)
		}
		msg = append(msg, byte(len(label)))
		msg = append(msg, label...)
	}
	msg = append(msg, 0, 0, 1, 0, 1)
	if strings.HasPrefix(proto, "tcp") {
		msg = append([]byte{byte(len(msg) >> 8), byte(len(msg))}, msg...)
	}
	if proto == "tcp-split" {
		// The length prefix in a segment of its own, as some clients send it.
		if _, err := c.Write(msg[:2]); err != nil {
			return err
		}
		time.Sleep(20 * time.Millisecond)
		msg = msg[2:]
	}
	if _, err := c.Write(msg); err != nil {
		return err
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 4096)
	_, err = c.Read(buf)
	return err
}

// sendtoConn writes with sendto on an unconnected socket.
type sendtoConn struct {
	net.PacketConn
	to net.Addr
}

func (c sendtoConn) Write(b []byte) (int, error) { return c.WriteTo(b, c.to) }
func (c sendtoConn) Read(b []byte) (int, error) {
	n, _, err := c.ReadFrom(b)
	return n, err
}
func (c sendtoConn) RemoteAddr() net.Addr { return c.to }

func unconnectedUDP(server string) (net.Conn, error) {
	to, err := net.ResolveUDPAddr("udp", server)
	if err != nil {
		return nil, err
	}
	pc, err := net.ListenPacket("udp", ":0")
	if err != nil {
		return nil, err
	}
	return sendtoConn{PacketConn: pc, to: to}, nil
}

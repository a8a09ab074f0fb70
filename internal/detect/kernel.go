package detect

import (
	"path"
	"strconv"
	"strings"

	"github.com/mamori-dev/mamori/internal/container"
	"github.com/mamori-dev/mamori/internal/event"
)

// Process-injection, kernel and container-escape detectors. Each fires on
// the attempt: a denied ptrace or mount is still evidence of intent.

func injection() Detector {
	types := []string{"DefenseEvasion:Runtime/ProcessInjection.Ptrace", "DefenseEvasion:Runtime/PtraceAntiDebugging",
		"DefenseEvasion:Runtime/ProcessInjection.VirtualMemoryWrite"}
	return newFn("process-injection", Both, []event.Kind{event.KindPtrace, event.KindProcessVM}, types,
		func(ev *event.Event, hit func(Hit)) {
			a := ev.Access
			if a == nil {
				return
			}
			ctx := map[string]any{"targetProcess": map[string]any{"pid": a.TargetPID}, "result": errOr(ev)}
			switch {
			case a.Op == "process_vm_writev" && a.TargetPID != ev.Process.PID:
				hit(Hit{Type: "DefenseEvasion:Runtime/ProcessInjection.VirtualMemoryWrite", KeyActor: ev.Process.Exe, Context: ctx})
			case a.Op == "ptrace" && a.Request == "PTRACE_TRACEME":
				// Debuggers and tracers call TRACEME in the child they run:
				// that is the expected case, everything else is anti-debugging.
				if isDebugger(ev) {
					return
				}
				hit(Hit{Type: "DefenseEvasion:Runtime/PtraceAntiDebugging", Context: ctx})
			case a.Op == "ptrace" && injectingRequest[a.Request] && a.TargetPID != ev.Process.PID:
				if isDebugger(ev) {
					return
				}
				ctx["ptraceRequest"] = a.Request
				hit(Hit{Type: "DefenseEvasion:Runtime/ProcessInjection.Ptrace", Context: ctx})
			}
		})
}

var injectingRequest = map[string]bool{"PTRACE_ATTACH": true, "PTRACE_SEIZE": true, "PTRACE_POKETEXT": true,
	"PTRACE_POKEDATA": true, "PTRACE_POKEUSER": true, "PTRACE_SETREGS": true, "PTRACE_SETREGSET": true}

var debuggers = map[string]bool{"gdb": true, "strace": true, "ltrace": true, "lldb": true, "dlv": true, "rr": true, "perf": true}

// isDebugger: the process or its parent is a debugger. Names are
// attacker-chosen, so this only lowers noise; it is a documented bypass.
func isDebugger(ev *event.Event) bool {
	if debuggers[path.Base(ev.Process.Exe)] {
		return true
	}
	l := ev.Process.Lineage
	return len(l) > 0 && debuggers[path.Base(l[0].Exe)]
}

func errOr(ev *event.Event) string {
	if ev.Result < 0 {
		return ev.Error
	}
	return "success"
}

// procMemWrite: a write open of another process's /proc/PID/mem.
func procMemWrite() Detector {
	return newFn("proc-mem-write", Both, []event.Kind{event.KindOpen}, []string{"DefenseEvasion:Runtime/ProcessInjection.Proc"},
		func(ev *event.Event, hit func(Hit)) {
			f := ev.File
			if f == nil || !f.Write || !strings.HasPrefix(f.Path, "/proc/") || !strings.HasSuffix(f.Path, "/mem") {
				return
			}
			pidPart := strings.TrimSuffix(strings.TrimPrefix(f.Path, "/proc/"), "/mem")
			pid, err := strconv.ParseUint(pidPart, 10, 32)
			self := pidPart == "self" || pidPart == "thread-self" ||
				(err == nil && (uint32(pid) == ev.Process.PID || uint32(pid) == ev.Process.NSPID))
			if self {
				return
			}
			// The target as the other injection findings give it: a number
			// (the pid of /proc/PID/mem, and the thread of task/TID/mem).
			target := map[string]any{}
			lead, task, _ := strings.Cut(pidPart, "/task/")
			if n, err := strconv.ParseUint(lead, 10, 32); err == nil {
				target["pid"] = uint32(n)
			}
			if n, err := strconv.ParseUint(task, 10, 32); err == nil {
				target["tid"] = uint32(n)
			}
			hit(Hit{Type: "DefenseEvasion:Runtime/ProcessInjection.Proc", Context: map[string]any{
				"targetProcess": target, "filePath": f.Path, "result": errOr(ev)}})
		})
}

func moduleLoad() Detector {
	return newFn("kernel-module", Both, []event.Kind{event.KindModule}, []string{"DefenseEvasion:Runtime/KernelModuleLoaded"},
		func(ev *event.Event, hit func(Hit)) {
			m := ev.Module
			if m == nil {
				return
			}
			hit(Hit{Type: "DefenseEvasion:Runtime/KernelModuleLoaded", KeyActor: m.Name + m.Path, Context: map[string]any{
				"moduleName": m.Name, "moduleFilePath": m.Path, "moduleSha256": m.SHA256, "result": errOr(ev)}})
		})
}

// benignFSTypes are mounts a container's own runtime or tools make
// inside its namespace without reaching the host.
var benignFSTypes = map[string]bool{"proc": true, "sysfs": true, "tmpfs": true, "mqueue": true, "devpts": true,
	"cgroup": false, "cgroup2": false, "ramfs": true, "overlay": true, "fuse": true, "fuse.sshfs": true}

// hostMount: a process in a container attempts to mount a host filesystem:
// a block device, a host filesystem type, or cgroups (release_agent route).
func hostMount() Detector {
	return newFn("container-mount", ContainerOnly, []event.Kind{event.KindMount},
		[]string{"PrivilegeEscalation:Runtime/ContainerMountsHostDirectory"},
		func(ev *event.Event, hit func(Hit)) {
			m := ev.Mount
			if m == nil {
				return
			}
			if benignFSTypes[m.FSType] && !strings.HasPrefix(m.Source, "/dev/") {
				return
			}
			if m.FSType == "" && !strings.HasPrefix(m.Source, "/dev/") {
				return // bind or remount of something inside the container
			}
			hit(Hit{Type: "PrivilegeEscalation:Runtime/ContainerMountsHostDirectory", KeyActor: m.Source + ">" + m.Target,
				Context: map[string]any{"mountSource": m.Source, "mountTarget": m.Target, "fileSystemType": m.FSType,
					"flags": m.Flags, "result": errOr(ev)}})
		})
}

var engineSockets = []string{"docker.sock", "containerd.sock", "crio.sock", "podman.sock", "dockershim.sock", "cri-dockerd.sock"}

func engineSocket() Detector {
	return newFn("engine-socket", ContainerOnly, []event.Kind{event.KindConnect},
		[]string{"PrivilegeEscalation:Runtime/DockerSocketAccessed"},
		func(ev *event.Event, hit func(Hit)) {
			n := ev.Net
			if n == nil || n.Family != "unix" || n.SocketPath == "" {
				return
			}
			// The file reached (a socket bind-mounted under another name),
			// else the name (an attempt that failed reached no file).
			if n.EngineSocket != "" {
				hit(Hit{Type: "PrivilegeEscalation:Runtime/DockerSocketAccessed", KeyActor: n.EngineSocket,
					Context: map[string]any{"socketPath": n.SocketPath, "engineSocket": n.EngineSocket, "result": errOr(ev)}})
				return
			}
			if n.PeerInode != 0 {
				return // reached a socket that is no engine's, whatever its name
			}
			base := path.Base(n.SocketPath)
			for _, s := range engineSockets {
				if base == s {
					hit(Hit{Type: "PrivilegeEscalation:Runtime/DockerSocketAccessed", KeyActor: n.SocketPath,
						Context: map[string]any{"socketPath": n.SocketPath, "result": errOr(ev)}})
					return
				}
			}
		})
}

func userfaultfd() Detector {
	return newFn("userfaultfd", Both, []event.Kind{event.KindUserfaultfd}, []string{"PrivilegeEscalation:Runtime/UserfaultfdUsage"},
		func(ev *event.Event, hit func(Hit)) {
			hit(Hit{Type: "PrivilegeEscalation:Runtime/UserfaultfdUsage", Context: map[string]any{"result": errOr(ev)}})
		})
}

// newLibrary: a file created or changed in the container mapped
// executable — a library the image did not ship.
func newLibrary() Detector {
	return newFn("new-library", ContainerOnly, []event.Kind{event.KindMmap},
		[]string{"Execution:Runtime/NewLibraryLoaded"},
		func(ev *event.Event, hit func(Hit)) {
			m := ev.Memory
			if m == nil || m.Path == "" || ev.Result < 0 {
				return
			}
			if container.InUpperLayer(ev.Container, m.Path) {
				hit(Hit{Type: "Execution:Runtime/NewLibraryLoaded", KeyActor: m.Path,
					Context: map[string]any{"libraryPath": m.Path}})
			}
		})
}

// rawSocket: raw and packet sockets, what sniffers and packet crafters use.
func rawSocket() Detector {
	return newFn("raw-socket", ContainerOnly, []event.Kind{event.KindSocket}, []string{"Discovery:Runtime/RawSocketCreated"},
		func(ev *event.Event, hit func(Hit)) {
			n := ev.Net
			// Raw IP and packet sockets; a raw netlink socket is how ip(8),
			// glibc's address probe and useradd's audit talk to the kernel.
			if n == nil || n.Family != "packet" && (n.Type != "raw" || n.Family != "inet" && n.Family != "inet6") {
				return
			}
			hit(Hit{Type: "Discovery:Runtime/RawSocketCreated", Context: map[string]any{
				"addressFamily": n.Family, "socketType": n.Type, "ianaProtocolNumber": n.Protocol, "result": errOr(ev)}})
		})
}

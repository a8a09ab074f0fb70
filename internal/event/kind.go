package event

import (
	"fmt"
	"sort"
	"strings"
)

// Kind names one event kind. The numbers are shared with bpf/include/mamori.h
// (enum event_kind); a test keeps the two in step.
type Kind uint16

// Event kinds, one per observed behaviour.
const (
	KindExec           Kind = 1
	KindFork           Kind = 2
	KindExit           Kind = 3
	KindOpen           Kind = 4
	KindRename         Kind = 5
	KindLink           Kind = 6
	KindSymlink        Kind = 7
	KindUnlink         Kind = 8
	KindChmod          Kind = 9
	KindChown          Kind = 10
	KindSocket         Kind = 11
	KindConnect        Kind = 12
	KindBind           Kind = 13
	KindListen         Kind = 14
	KindAccept         Kind = 15
	KindDup            Kind = 16
	KindDNS            Kind = 17
	KindMount          Kind = 18
	KindUmount         Kind = 19
	KindModule         Kind = 20
	KindPtrace         Kind = 21
	KindProcessVM      Kind = 22
	KindMemfd          Kind = 23
	KindUserfaultfd    Kind = 24
	KindBPF            Kind = 25
	KindSetID          Kind = 26
	KindCapset         Kind = 27
	KindUnshare        Kind = 28
	KindSetns          Kind = 29
	KindMprotect       Kind = 30
	KindMmap           Kind = 31
	KindCgroupMkdir    Kind = 32
	KindCgroupRmdir    Kind = 33
	KindContainerStart Kind = 64 // derived in user space from cgroup + runtime metadata
	KindContainerStop  Kind = 65
	// KindExecHashed: an executable's SHA-256 became known after its exec
	// event went out (hashing runs off the hot path), so checks on the hash
	// still see a process that exited or went quiet meanwhile.
	KindExecHashed Kind = 66
)

// MaxKernelKind bounds the kinds the kernel emits (exclusive).
const MaxKernelKind = 34

var kindNames = map[Kind]string{
	KindExec: "exec", KindFork: "fork", KindExit: "exit", KindOpen: "open",
	KindRename: "rename", KindLink: "link", KindSymlink: "symlink", KindUnlink: "unlink",
	KindChmod: "chmod", KindChown: "chown", KindSocket: "socket", KindConnect: "connect",
	KindBind: "bind", KindListen: "listen", KindAccept: "accept", KindDup: "dup",
	KindDNS: "dns", KindMount: "mount", KindUmount: "umount", KindModule: "module_load",
	KindPtrace: "ptrace", KindProcessVM: "process_vm", KindMemfd: "memfd_create",
	KindUserfaultfd: "userfaultfd", KindBPF: "bpf", KindSetID: "setid", KindCapset: "capset",
	KindUnshare: "unshare", KindSetns: "setns", KindMprotect: "mprotect", KindMmap: "mmap",
	KindCgroupMkdir: "cgroup_mkdir", KindCgroupRmdir: "cgroup_rmdir",
	KindContainerStart: "container_start", KindContainerStop: "container_stop",
	KindExecHashed: "exec_hashed",
}

var kindByName = func() map[string]Kind {
	m := make(map[string]Kind, len(kindNames))
	for k, n := range kindNames {
		m[n] = k
	}
	return m
}()

func (k Kind) String() string {
	if n, ok := kindNames[k]; ok {
		return n
	}
	return fmt.Sprintf("kind(%d)", uint16(k))
}

// MarshalText makes kinds appear by name in JSON.
func (k Kind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText accepts a kind name.
func (k *Kind) UnmarshalText(b []byte) error {
	v, err := ParseKind(string(b))
	if err != nil {
		return err
	}
	*k = v
	return nil
}

// ParseKind maps a name such as "exec" to its Kind.
func ParseKind(s string) (Kind, error) {
	if k, ok := kindByName[strings.TrimSpace(strings.ToLower(s))]; ok {
		return k, nil
	}
	return 0, fmt.Errorf("unknown event kind %q (known: %s)", s, strings.Join(KindNames(), ", "))
}

// ParseKinds parses a comma-separated list of kind names.
func ParseKinds(list string) ([]Kind, error) {
	var out []Kind
	for _, part := range strings.Split(list, ",") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		k, err := ParseKind(part)
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, nil
}

// KindNames lists every known kind name, sorted.
func KindNames() []string {
	out := make([]string, 0, len(kindNames))
	for _, n := range kindNames {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

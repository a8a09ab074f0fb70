// Package event is the vocabulary every other mamori package speaks: one
// Event type for everything the node sensor observes, with the process and
// container it came from. Field names are stable: they are what users query
// with `mamori events --json` and what custom rules refer to.
package event

import "time"

// Event is one observed behaviour. Exactly one of the kind-specific
// pointers is set, matching Kind.
type Event struct {
	Kind Kind      `json:"kind"`
	Time time.Time `json:"time"`
	// Result is the syscall's return value where there is one: attempts
	// count, so failed calls are reported with a negative errno here.
	Result int64  `json:"result"`
	Error  string `json:"error,omitempty"` // errno name when Result < 0, e.g. "EPERM"
	// Truncated is set when a string was cut at its cap in the kernel.
	Truncated bool `json:"truncated,omitempty"`

	Process   Process    `json:"process"`
	Container *Container `json:"container,omitempty"`

	Exec      *Exec      `json:"exec,omitempty"`
	Exit      *Exit      `json:"exit,omitempty"`
	Fork      *Fork      `json:"fork,omitempty"`
	File      *File      `json:"file,omitempty"`
	Net       *Net       `json:"net,omitempty"`
	DNS       *DNS       `json:"dns,omitempty"`
	Mount     *Mount     `json:"mount,omitempty"`
	Module    *Module    `json:"module,omitempty"`
	Access    *Access    `json:"access,omitempty"`
	Memory    *Memory    `json:"memory,omitempty"`
	Cred      *Cred      `json:"cred,omitempty"`
	Namespace *Namespace `json:"namespace,omitempty"`
	BPF       *BPFCall   `json:"bpf,omitempty"`
	Cgroup    *Cgroup    `json:"cgroup,omitempty"`
}

// Process identifies the acting process; the sensor fills the kernel part,
// the process table the rest.
type Process struct {
	PID      uint32    `json:"pid"`
	TID      uint32    `json:"tid"`
	NSPID    uint32    `json:"namespacePid"`
	PPID     uint32    `json:"ppid"`
	UID      uint32    `json:"userId"`
	GID      uint32    `json:"groupId"`
	EUID     uint32    `json:"euid"`
	EGID     uint32    `json:"egid"`
	Comm     string    `json:"name"`
	CgroupID uint64    `json:"cgroupId"`
	Start    time.Time `json:"startTime"`
	// StartNS and ParentStartNS are boot-relative start times from the
	// kernel; with the node id they make process UUIDs unique across pid reuse.
	StartNS       uint64 `json:"-"`
	ParentStartNS uint64 `json:"-"`

	UUID       string `json:"uuid,omitempty"`
	ParentUUID string `json:"parentUuid,omitempty"`
	Exe        string `json:"executablePath,omitempty"`
	ExeSHA256  string `json:"executableSha256,omitempty"`
	// ExeImage names the executed file's identity (device, inode, times)
	// where the process table knows it: a hash made later lands only on
	// findings about that very file.
	ExeImage string `json:"-"`
	// Preloaded: the process's exec carried LD_PRELOAD, LD_LIBRARY_PATH or
	// a CodeEnv variable (the process table knows; children inherit it).
	Preloaded bool     `json:"-"`
	Args      []string `json:"args,omitempty"`
	Cwd       string   `json:"pwd,omitempty"`
	User      string   `json:"user,omitempty"`
	// Lineage is the parent chain, nearest first; the process table fills
	// it. It is shared between the events of a process: read-only.
	Lineage []Ancestor `json:"lineage,omitempty"`
}

// Ancestor is one entry of a process's lineage.
type Ancestor struct {
	PID        uint32    `json:"pid"`
	NSPID      uint32    `json:"namespacePid,omitempty"`
	UUID       string    `json:"uuid"`
	ParentUUID string    `json:"parentUuid,omitempty"`
	Name       string    `json:"name"`
	Exe        string    `json:"executablePath,omitempty"`
	Args       []string  `json:"args,omitempty"`
	UID        uint32    `json:"userId"`
	EUID       uint32    `json:"euid"`
	User       string    `json:"user,omitempty"`
	Start      time.Time `json:"startTime"`
}

// Container is the runtime identity of the container an event came from.
type Container struct {
	ID         string            `json:"id"`
	Name       string            `json:"name,omitempty"`
	Runtime    string            `json:"containerRuntime"`
	Image      string            `json:"image,omitempty"`
	ImageID    string            `json:"imageId,omitempty"`
	StartedAt  time.Time         `json:"startedAt,omitempty"`
	Privileged bool              `json:"privileged,omitempty"`
	Labels     map[string]string `json:"labels,omitempty"`
	// UpperDir is the container's writable overlay layer on the host, used
	// to tell files the container created from files its image shipped.
	UpperDir string   `json:"-"`
	Pod      *Pod     `json:"pod,omitempty"`
	ECS      *ECSTask `json:"ecs,omitempty"`
}

// Pod carries Kubernetes identity from CRI labels.
type Pod struct {
	Name          string `json:"name"`
	Namespace     string `json:"namespace"`
	UID           string `json:"uid,omitempty"`
	ContainerName string `json:"containerName,omitempty"`
}

// ECSTask carries ECS task identity from the task-metadata endpoint.
type ECSTask struct {
	Cluster        string `json:"cluster,omitempty"`
	TaskARN        string `json:"taskArn,omitempty"`
	TaskDefinition string `json:"taskDefinition,omitempty"`
	ContainerName  string `json:"containerName,omitempty"`
}

// Exec describes a new program image.
type Exec struct {
	Filename   string   `json:"filename"`              // as passed to execve
	Path       string   `json:"executablePath"`        // resolved path of the image
	Interp     string   `json:"interpreter,omitempty"` // binfmt interpreter when it differs
	ScriptPath string   `json:"scriptPath,omitempty"`
	Args       []string `json:"args"`
	Cwd        string   `json:"cwd"`
	LDPreload  string   `json:"ldPreload,omitempty"`
	LDLibPath  string   `json:"ldLibraryPath,omitempty"`
	// CodeEnv holds the variables making an interpreter or shell load code
	// of the caller's choosing (PYTHONPATH, PERL5OPT, NODE_OPTIONS,
	// BASH_ENV, ...), as KEY=VALUE.
	CodeEnv []string  `json:"codeEnv,omitempty"`
	Inode   uint64    `json:"inode"`
	Dev     uint32    `json:"dev"`
	Mode    uint32    `json:"mode"`
	MTime   time.Time `json:"mtime"`
	CTime   time.Time `json:"ctime"`
	Memfd   bool      `json:"memfd,omitempty"`
	Deleted bool      `json:"deleted,omitempty"`
	// UpperLayer is true when the executable sits in the container's
	// writable layer, i.e. it was created or modified since the image.
	UpperLayer bool `json:"upperLayer,omitempty"`
	// ModifiedAfterStart is true when the file changed after its
	// container started.
	ModifiedAfterStart bool `json:"modifiedAfterStart,omitempty"`
	// StdioOnNetwork: the program's standard input or output is an inet
	// or inet6 socket as it starts, however the socket got there.
	StdioOnNetwork bool `json:"stdioOnNetwork,omitempty"`
}

// Fork is a new process or thread.
type Fork struct {
	ChildPID uint32 `json:"childPid"`
	ChildTID uint32 `json:"childTid"`
	Thread   bool   `json:"thread"`
	// ChildStartNS is the child's boot-relative start time, the second half
	// of its identity (with its pid) for the process table.
	ChildStartNS uint64 `json:"-"`
}

// Exit is the end of a process.
type Exit struct {
	Code   int  `json:"code"`
	Signal int  `json:"signal,omitempty"`
	Core   bool `json:"coreDumped,omitempty"`
}

// File covers open, rename, link, symlink, unlink, chmod and chown.
type File struct {
	Path    string `json:"path"`              // as resolved (absolute in the caller's mount namespace) when known
	RawPath string `json:"rawPath,omitempty"` // as passed by the caller when it differs
	NewPath string `json:"newPath,omitempty"` // rename/link/symlink target
	Flags   uint32 `json:"flags,omitempty"`   // open flags
	Write   bool   `json:"write,omitempty"`   // open for writing (or create/truncate)
	Mode    uint32 `json:"mode,omitempty"`    // chmod mode or open create mode
	UID     *int64 `json:"uid,omitempty"`     // chown target owner (-1 = unchanged)
	GID     *int64 `json:"gid,omitempty"`
	SetUID  bool   `json:"setuid,omitempty"`
	SetGID  bool   `json:"setgid,omitempty"`
	// ByInode: the kernel sent this read because the file opened is a
	// read-watched one, known by its device and inode — whatever path
	// reached it (a hard link, a bind mount, a link the path filter
	// cannot name).
	ByInode bool `json:"byInode,omitempty"`
	// Created: the open made the file (O_CREAT on a name that did not
	// exist), so truncating it destroyed nothing.
	Created bool `json:"created,omitempty"`
}

// Net covers socket, connect, bind, listen, accept and dup of sockets.
type Net struct {
	Family     string `json:"family"` // inet, inet6, unix, packet, netlink, ...
	Type       string `json:"type,omitempty"`
	Protocol   int    `json:"protocol,omitempty"`
	FD         int    `json:"fd,omitempty"`
	LocalAddr  string `json:"localAddr,omitempty"`
	LocalPort  uint16 `json:"localPort,omitempty"`
	RemoteAddr string `json:"remoteAddr,omitempty"`
	RemotePort uint16 `json:"remotePort,omitempty"`
	SocketPath string `json:"socketPath,omitempty"` // unix sockets
	Backlog    int    `json:"backlog,omitempty"`
	// Dup: a socket duplicated onto a standard stream.
	OldFD int `json:"oldFd,omitempty"`
	NewFD int `json:"newFd,omitempty"`
	// PeerInode and PeerDev name the socket file a unix connect reached
	// (the kernel's device numbering), whatever name or mount the caller
	// used to reach it.
	PeerInode uint64 `json:"peerInode,omitempty"`
	PeerDev   uint32 `json:"peerDev,omitempty"`
	// EngineSocket is the host path of the container engine's API socket
	// the connect reached (set by the agent), however it was named.
	EngineSocket string `json:"engineSocket,omitempty"`
}

// DNS is one query or response, attributed to the process that sent or
// received it.
type DNS struct {
	Response bool     `json:"response"`
	ID       uint16   `json:"id"`
	Name     string   `json:"name"`
	Type     string   `json:"type"`
	RCode    string   `json:"rcode,omitempty"`
	Answers  []string `json:"answers,omitempty"` // A/AAAA addresses and CNAME targets
	Server   string   `json:"server"`
	Protocol string   `json:"protocol"` // udp or tcp
	// ServerPort is the server's port (53 unless the sensor watches others).
	ServerPort uint16 `json:"serverPort,omitempty"`
}

// Mount is a mount or umount attempt.
type Mount struct {
	Source string `json:"source,omitempty"`
	Target string `json:"target"`
	FSType string `json:"fsType,omitempty"`
	Flags  uint64 `json:"flags"`
}

// Module is a kernel module load attempt.
type Module struct {
	Name     string `json:"name,omitempty"`
	Path     string `json:"path,omitempty"` // finit_module: the file
	SHA256   string `json:"sha256,omitempty"`
	Params   string `json:"params,omitempty"`
	Size     uint64 `json:"size,omitempty"` // init_module: image length
	FromFile bool   `json:"fromFile"`
}

// Access is an operation on another process: ptrace, process_vm_readv/
// writev, or a write open of /proc/PID/mem.
type Access struct {
	Op        string `json:"op"` // ptrace, process_vm_readv, process_vm_writev, proc_mem_write
	Request   string `json:"request,omitempty"`
	TargetPID uint32 `json:"targetPid"`
	TargetExe string `json:"targetExecutable,omitempty"`
}

// Memory covers memfd_create, userfaultfd, mprotect and mmap.
type Memory struct {
	Name      string `json:"name,omitempty"` // memfd name
	Flags     uint64 `json:"flags,omitempty"`
	Addr      uint64 `json:"addr,omitempty"`
	Len       uint64 `json:"len,omitempty"`
	Prot      string `json:"prot,omitempty"`
	Anonymous bool   `json:"anonymous,omitempty"`
	Stack     bool   `json:"stack,omitempty"`
	Path      string `json:"path,omitempty"` // mapped file
	FD        int    `json:"fd,omitempty"`
}

// Cred is a credential change: setuid family and capset.
type Cred struct {
	Call      string  `json:"call"`
	Args      []int64 `json:"args"`
	OldUID    uint32  `json:"oldUid"`
	OldEUID   uint32  `json:"oldEuid"`
	NewUID    uint32  `json:"newUid"`
	NewEUID   uint32  `json:"newEuid"`
	NewGID    uint32  `json:"newGid"`
	NewEGID   uint32  `json:"newEgid"`
	Effective uint64  `json:"capEffective,omitempty"`
}

// Namespace is an unshare or setns.
type Namespace struct {
	Call  string   `json:"call"`
	Flags []string `json:"flags"`
	FD    int      `json:"fd,omitempty"`
}

// BPFCall is a bpf() syscall.
type BPFCall struct {
	Cmd string `json:"cmd"`
}

// Cgroup is a cgroup created or removed (container lifecycle's raw form).
type Cgroup struct {
	ID    uint64 `json:"id"`
	Path  string `json:"path"`
	Level int    `json:"level"`
	// Hierarchy is the kernel's hierarchy id: 0 is the cgroup v2 tree, the
	// one whose ids events carry; v1 hierarchies number their own ids.
	Hierarchy int `json:"hierarchy"`
}

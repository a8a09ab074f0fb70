package detect

import (
	"math"
	"reflect"

	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/common/types/traits"

	"github.com/mamori-dev/mamori/internal/event"
)

// EventMap is the event as custom rules and their templates see it: the
// JSON field names of `mamori events --json`, built directly (no JSON
// round trip: this runs per event for every kind a rule watches).
//
// Differences from the JSON, on purpose:
//   - every field of a present part is there, zero values included, so
//     `!event.exec.memfd` works on an exec that is not a memfd (the JSON
//     omits false); absent parts (event.container on the host, event.net
//     on an exec) are absent, and reading them makes a condition not match;
//   - integers are CEL ints, times are CEL timestamps
//     (`event.time - event.process.startTime < duration("1s")`).
//
// A test checks that, for an event with every field set, this map and
// the JSON agree key for key: a field added to internal/event must be
// added here too.
func EventMap(ev *event.Event) map[string]any {
	m := map[string]any{
		"kind":      ev.Kind.String(),
		"time":      ev.Time,
		"result":    ev.Result,
		"error":     ev.Error,
		"truncated": ev.Truncated,
		"process":   processMap(&ev.Process),
	}
	if c := ev.Container; c != nil {
		m["container"] = containerMap(c)
	}
	addPayload(m, ev)
	return m
}

// addPayload adds the kind-specific parts of ev to m.
func addPayload(m map[string]any, ev *event.Event) {
	if x := ev.Exec; x != nil {
		m["exec"] = map[string]any{
			"filename": x.Filename, "executablePath": x.Path, "interpreter": x.Interp, "scriptPath": x.ScriptPath,
			"args": strs(x.Args), "cwd": x.Cwd, "ldPreload": x.LDPreload, "ldLibraryPath": x.LDLibPath, "codeEnv": strs(x.CodeEnv),
			"inode": num(x.Inode), "dev": int64(x.Dev), "mode": int64(x.Mode), "mtime": x.MTime, "ctime": x.CTime,
			"memfd": x.Memfd, "deleted": x.Deleted, "upperLayer": x.UpperLayer, "modifiedAfterStart": x.ModifiedAfterStart,
			"stdioOnNetwork": x.StdioOnNetwork,
		}
	}
	if x := ev.Exit; x != nil {
		m["exit"] = map[string]any{"code": int64(x.Code), "signal": int64(x.Signal), "coreDumped": x.Core}
	}
	if f := ev.Fork; f != nil {
		m["fork"] = map[string]any{"childPid": int64(f.ChildPID), "childTid": int64(f.ChildTID), "thread": f.Thread}
	}
	if f := ev.File; f != nil {
		fm := map[string]any{
			"path": f.Path, "rawPath": f.RawPath, "newPath": f.NewPath, "flags": int64(f.Flags), "write": f.Write,
			"mode": int64(f.Mode), "setuid": f.SetUID, "setgid": f.SetGID, "byInode": f.ByInode, "created": f.Created,
		}
		if f.UID != nil {
			fm["uid"] = *f.UID
		}
		if f.GID != nil {
			fm["gid"] = *f.GID
		}
		m["file"] = fm
	}
	if n := ev.Net; n != nil {
		m["net"] = map[string]any{
			"family": n.Family, "type": n.Type, "protocol": int64(n.Protocol), "fd": int64(n.FD),
			"localAddr": n.LocalAddr, "localPort": int64(n.LocalPort), "remoteAddr": n.RemoteAddr,
			"remotePort": int64(n.RemotePort), "socketPath": n.SocketPath, "backlog": int64(n.Backlog), "engineSocket": n.EngineSocket,
			"oldFd": int64(n.OldFD), "newFd": int64(n.NewFD), "peerInode": num(n.PeerInode), "peerDev": int64(n.PeerDev),
		}
	}
	if d := ev.DNS; d != nil {
		m["dns"] = map[string]any{
			"response": d.Response, "id": int64(d.ID), "name": d.Name, "type": d.Type, "rcode": d.RCode,
			"answers": strs(d.Answers), "server": d.Server, "protocol": d.Protocol, "serverPort": int64(d.ServerPort),
		}
	}
	if x := ev.Mount; x != nil {
		m["mount"] = map[string]any{"source": x.Source, "target": x.Target, "fsType": x.FSType, "flags": num(x.Flags)}
	}
	if x := ev.Module; x != nil {
		m["module"] = map[string]any{"name": x.Name, "path": x.Path, "sha256": x.SHA256, "params": x.Params,
			"size": num(x.Size), "fromFile": x.FromFile}
	}
	if a := ev.Access; a != nil {
		m["access"] = map[string]any{"op": a.Op, "request": a.Request, "targetPid": int64(a.TargetPID),
			"targetExecutable": a.TargetExe}
	}
	if x := ev.Memory; x != nil {
		m["memory"] = map[string]any{"name": x.Name, "flags": num(x.Flags), "addr": num(x.Addr), "len": num(x.Len),
			"prot": x.Prot, "anonymous": x.Anonymous, "stack": x.Stack, "path": x.Path, "fd": int64(x.FD)}
	}
	if c := ev.Cred; c != nil {
		args := make([]any, len(c.Args))
		for i, a := range c.Args {
			args[i] = a
		}
		m["cred"] = map[string]any{"call": c.Call, "args": args, "oldUid": int64(c.OldUID), "oldEuid": int64(c.OldEUID),
			"newUid": int64(c.NewUID), "newEuid": int64(c.NewEUID), "newGid": int64(c.NewGID), "newEgid": int64(c.NewEGID),
			"capEffective": num(c.Effective)}
	}
	if x := ev.Namespace; x != nil {
		m["namespace"] = map[string]any{"call": x.Call, "flags": strs(x.Flags), "fd": int64(x.FD)}
	}
	if x := ev.BPF; x != nil {
		m["bpf"] = map[string]any{"cmd": x.Cmd}
	}
	if x := ev.Cgroup; x != nil {
		m["cgroup"] = map[string]any{"id": num(x.ID), "path": x.Path, "level": int64(x.Level), "hierarchy": int64(x.Hierarchy)}
	}
}

func processMap(p *event.Process) map[string]any {
	m := map[string]any{
		"pid": int64(p.PID), "tid": int64(p.TID), "namespacePid": int64(p.NSPID), "ppid": int64(p.PPID),
		"userId": int64(p.UID), "groupId": int64(p.GID), "euid": int64(p.EUID), "egid": int64(p.EGID),
		"name": p.Comm, "cgroupId": num(p.CgroupID), "startTime": p.Start, "uuid": p.UUID, "parentUuid": p.ParentUUID,
		"executablePath": p.Exe, "executableSha256": p.ExeSHA256, "args": strs(p.Args), "pwd": p.Cwd, "user": p.User,
	}
	lin := make([]any, len(p.Lineage))
	for i := range p.Lineage {
		a := &p.Lineage[i]
		lin[i] = map[string]any{
			"pid": int64(a.PID), "namespacePid": int64(a.NSPID), "uuid": a.UUID, "parentUuid": a.ParentUUID,
			"name": a.Name, "executablePath": a.Exe, "args": strs(a.Args), "userId": int64(a.UID), "euid": int64(a.EUID),
			"user": a.User, "startTime": a.Start,
		}
	}
	m["lineage"] = lin
	return m
}

func containerMap(c *event.Container) map[string]any {
	labels := c.Labels
	if labels == nil {
		labels = map[string]string{}
	}
	m := map[string]any{
		"id": c.ID, "name": c.Name, "containerRuntime": c.Runtime, "image": c.Image, "imageId": c.ImageID,
		"startedAt": c.StartedAt, "privileged": c.Privileged, "labels": labels,
	}
	if p := c.Pod; p != nil {
		m["pod"] = map[string]any{"name": p.Name, "namespace": p.Namespace, "uid": p.UID, "containerName": p.ContainerName}
	}
	if e := c.ECS; e != nil {
		m["ecs"] = map[string]any{"cluster": e.Cluster, "taskArn": e.TaskARN, "taskDefinition": e.TaskDefinition,
			"containerName": e.ContainerName}
	}
	return m
}

// strs keeps nil slices as empty lists, so `.size()` and `in` work.
func strs(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// num is a CEL int when the value fits, else a CEL uint.
func num(v uint64) any {
	if v <= math.MaxInt64 {
		return int64(v)
	}
	return v
}

// lazyEvent is the event as the CEL variable `event`: a map whose parts
// are converted on first access, so a rule reading event.kind and
// event.file never pays for the process's args and lineage. Any whole-map
// operation (iteration, equality, conversion) converts everything.
type lazyEvent struct {
	ev    *event.Event
	parts map[string]ref.Val
	full  traits.Mapper
}

var _ traits.Mapper = (*lazyEvent)(nil)

func newLazyEvent(ev *event.Event) *lazyEvent { return &lazyEvent{ev: ev} }

// part converts one top-level key, or reports it absent.
func (l *lazyEvent) part(key string) (any, bool) {
	ev := l.ev
	switch key {
	case "kind":
		return ev.Kind.String(), true
	case "time":
		return ev.Time, true
	case "result":
		return ev.Result, true
	case "error":
		return ev.Error, true
	case "truncated":
		return ev.Truncated, true
	case "process":
		return processMap(&ev.Process), true
	case "container":
		if ev.Container == nil {
			return nil, false
		}
		return containerMap(ev.Container), true
	}
	if _, ok := partBit[key]; !ok {
		return nil, false
	}
	m := make(map[string]any, 1)
	addPayload(m, ev)
	v, ok := m[key]
	return v, ok
}

// Find implements traits.Mapper.
func (l *lazyEvent) Find(key ref.Val) (ref.Val, bool) {
	k, ok := key.(types.String)
	if !ok {
		return nil, false
	}
	if v, ok := l.parts[string(k)]; ok {
		return v, true
	}
	raw, ok := l.part(string(k))
	if !ok {
		return nil, false
	}
	v := types.DefaultTypeAdapter.NativeToValue(raw)
	if l.parts == nil {
		l.parts = make(map[string]ref.Val, 4)
	}
	l.parts[string(k)] = v
	return v, true
}

func (l *lazyEvent) whole() traits.Mapper {
	if l.full == nil {
		l.full = types.DefaultTypeAdapter.NativeToValue(EventMap(l.ev)).(traits.Mapper)
	}
	return l.full
}

// Get implements traits.Indexer.
func (l *lazyEvent) Get(key ref.Val) ref.Val {
	if v, ok := l.Find(key); ok {
		return v
	}
	return types.NewErr("no such key: %v", key)
}

// Contains implements traits.Container.
func (l *lazyEvent) Contains(key ref.Val) ref.Val {
	_, ok := l.Find(key)
	return types.Bool(ok)
}

// Iterator implements traits.Iterable.
func (l *lazyEvent) Iterator() traits.Iterator { return l.whole().Iterator() }

// Size implements traits.Sizer.
func (l *lazyEvent) Size() ref.Val { return l.whole().Size() }

// ConvertToNative implements ref.Val.
func (l *lazyEvent) ConvertToNative(t reflect.Type) (any, error) { return l.whole().ConvertToNative(t) }

// ConvertToType implements ref.Val.
func (l *lazyEvent) ConvertToType(t ref.Type) ref.Val {
	switch t {
	case types.MapType:
		return l
	case types.TypeType:
		return types.MapType
	}
	return l.whole().ConvertToType(t)
}

// Equal implements ref.Val.
func (l *lazyEvent) Equal(other ref.Val) ref.Val { return l.whole().Equal(other) }

// Type implements ref.Val.
func (l *lazyEvent) Type() ref.Type { return types.MapType }

// Value implements ref.Val.
func (l *lazyEvent) Value() any { return EventMap(l.ev) }

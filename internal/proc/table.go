// Package proc is mamori's process table: it gives every process a UUID
// that stays unique across pid reuse and across nodes, keeps each
// process's executable, arguments, user and parent so that every event can
// carry its lineage, and hashes executables off the hot path. It is seeded
// from /proc at start so that processes older than the agent have lineage
// too, and it is bounded: exited processes leave after a grace period and
// the oldest entries are evicted when it is full, each eviction counted.
package proc

import (
	"crypto/sha1"
	"fmt"
	"log/slog"
	"path"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/mamori-dev/mamori/internal/event"
)

// ticksPerSecond is USER_HZ, the unit of start times in /proc/PID/stat. A
// process's identity uses its start time rounded to ticks so that an entry
// seeded from /proc and one built from a kernel event agree.
const ticksPerSecond = 100

// MaxLineage bounds the ancestors attached to an event.
const MaxLineage = 16

// Options configure a Table. Zero values take the defaults in brackets.
type Options struct {
	// NodeID makes UUIDs unique across nodes; required.
	NodeID string
	// ProcRoot is the proc filesystem to seed and read from [/proc].
	ProcRoot string
	// Capacity bounds the entries kept [32768].
	Capacity int
	// ExitGrace keeps an exited process for events still in flight and
	// for its children's lineage [30s].
	ExitGrace time.Duration
	// LeafExitGrace is ExitGrace for an exited process no lineage holds
	// (no child has named it an ancestor): only its own late events need
	// it, and an exec storm would otherwise keep ExitGrace's worth of
	// short-lived processes in memory [5s].
	LeafExitGrace time.Duration
	// HashQueue bounds executables waiting to be hashed [1024].
	HashQueue int
	// HashMaxBytes skips hashing larger files [256 MiB].
	HashMaxBytes int64
	// BootTime converts boot-relative start times to wall time.
	BootTime time.Time
	// Hashed, when set, receives a KindExecHashed event for a process
	// whose executable's hash was computed after its exec (never with a
	// lock held; from the hashing goroutine).
	Hashed func(*event.Event)
	Logger *slog.Logger
}

// Stats are the table's counters and sizes.
type Stats struct {
	Entries      int    `json:"entries"`
	Evicted      uint64 `json:"evicted"`
	Expired      uint64 `json:"expired"`
	Seeded       uint64 `json:"seeded"`
	Unknown      uint64 `json:"unknown"` // events from processes the table had to build late
	HashQueued   uint64 `json:"hashQueued"`
	HashDone     uint64 `json:"hashDone"`
	HashDropped  uint64 `json:"hashDropped"` // queue full
	HashFailed   uint64 `json:"hashFailed"`
	HashCacheHit uint64 `json:"hashCacheHit"`
	HashStuck    uint64 `json:"hashStuck"` // blocked hashes left behind, now
}

// entry is one process. Fields are guarded by Table.mu.
type entry struct {
	pid, nspid, ppid uint32
	startTicks       uint64
	uuid, parentUUID string
	name, exe, cwd   string
	args             []string
	uid, euid        uint32
	user             string
	start            time.Time
	sha256           string
	exited           time.Time // zero while alive
	seen             time.Time // last event, for eviction
	containerID      string
	cgroup           uint64
	userLooked       bool // the name lookup ran (a uid may have no name)
	// alias replaces the kernel's name "exe" of a process exec'd through
	// /proc/self/exe (a busybox applet run by its shell, runc's re-exec):
	// the name of its argv[0], which is what it runs as.
	alias string
	// execKey is the identity of the image the process runs (its last
	// exec), so a late hash lands only on the image it was made of.
	execKey fileKey
	// preloaded: its last exec carried LD_PRELOAD, LD_LIBRARY_PATH or a
	// variable making its interpreter load code (PYTHONPATH, ...): code of
	// someone's choosing may run in it. Kept by forked children.
	preloaded bool
	// lineage is built once and shared by the process's events until an
	// entry that could appear in it changes (gen moves on).
	lineage    []event.Ancestor
	lineageGen uint64
	// inLineage: some built lineage holds this entry, so its changes must
	// move gen on. A leaf (most processes of an exec-heavy workload) can
	// exec, change user and go without invalidating every cached lineage.
	inLineage bool
}

// Table is the process table. Apply is meant for the single pipeline
// goroutine; Stats and Lookup may be called from anywhere.
type Table struct {
	opts  Options
	log   *slog.Logger
	ns    uuid.UUID
	mu    sync.Mutex
	byPID map[uint32]*entry
	byID  map[string]*entry
	// gen counts changes that can alter a lineage already built: execs,
	// user changes and removals of entries some lineage holds.
	gen   uint64
	users *userNames
	hash  *hasher

	evicted, expired, seeded, unknown atomic.Uint64
}

// New returns an empty table; call Seed to fill it from /proc and Run to
// start hashing.
func New(opts Options) (*Table, error) {
	if opts.NodeID == "" {
		return nil, fmt.Errorf("process table: node id is required")
	}
	if opts.ProcRoot == "" {
		opts.ProcRoot = "/proc"
	}
	if opts.Capacity <= 0 {
		opts.Capacity = 32768
	}
	if opts.ExitGrace <= 0 {
		opts.ExitGrace = 30 * time.Second
	}
	if opts.LeafExitGrace <= 0 {
		opts.LeafExitGrace = min(5*time.Second, opts.ExitGrace)
	}
	if opts.HashQueue <= 0 {
		opts.HashQueue = 1024
	}
	if opts.HashMaxBytes <= 0 {
		opts.HashMaxBytes = 256 << 20
	}
	if opts.BootTime.IsZero() {
		opts.BootTime = bootTime()
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	t := &Table{
		opts:  opts,
		log:   log,
		ns:    uuid.NewSHA1(uuid.NameSpaceOID, []byte("mamori/"+opts.NodeID)),
		byPID: map[uint32]*entry{},
		byID:  map[string]*entry{},
		users: newUserNames(opts.ProcRoot),
	}
	t.hash = newHasher(t, opts.HashQueue, opts.HashMaxBytes)
	return t, nil
}

// UUID is the identity of the process with this pid and boot-relative start
// time on this table's node.
func (t *Table) UUID(pid uint32, startNS uint64) string {
	return t.uuidTicks(pid, startNS/(1e9/ticksPerSecond))
}

func (t *Table) uuidTicks(pid uint32, ticks uint64) string {
	if pid == 0 {
		return ""
	}
	// uuid.NewSHA1(t.ns, "PID:TICKS"), built on the stack: this runs for
	// every new process.
	var buf [16 + 2*20 + 1]byte
	b := append(buf[:0], t.ns[:]...)
	b = strconv.AppendUint(b, uint64(pid), 10)
	b = append(b, ':')
	b = strconv.AppendUint(b, ticks, 10)
	sum := sha1.Sum(b)
	var u uuid.UUID
	copy(u[:], sum[:16])
	u[6] = u[6]&0x0f | 0x50 // version 5
	u[8] = u[8]&0x3f | 0x80 // RFC 4122 variant
	return u.String()
}

// Apply updates the table from ev and fills ev.Process with what the table
// knows: UUIDs, executable, arguments, user, start time, hash and lineage.
func (t *Table) Apply(ev *event.Event) {
	now := time.Now()
	p := &ev.Process
	ticks := p.StartNS / (1e9 / ticksPerSecond)
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.byPID[p.PID]
	if e != nil && e.startTicks != ticks && p.StartNS != 0 {
		// The pid was reused: the old entry is a different process.
		t.removeLocked(e)
		e = nil
	}
	if e == nil {
		e = t.lateEntry(ev, ticks)
	}
	e.seen = now
	if e.ppid == 0 && p.PPID != 0 {
		e.ppid = p.PPID
		e.parentUUID = t.UUID(p.PPID, p.ParentStartNS)
	}
	if ev.Container != nil {
		e.containerID = ev.Container.ID
	}
	e.uid, e.euid = p.UID, p.EUID
	if p.CgroupID != 0 {
		e.cgroup = p.CgroupID
	}
	if ev.Kind == event.KindExec && ev.Exec != nil {
		e.alias = aliasOf(p.Comm, ev.Exec.Path, ev.Exec.Args)
	}
	if p.Comm == "exe" && e.alias != "" {
		p.Comm = e.alias
	}
	if p.Comm != "" {
		e.name = p.Comm
	}

	switch ev.Kind {
	case event.KindExec:
		t.changedLocked(e)
		if x := ev.Exec; x != nil {
			e.exe, e.args, e.cwd, e.sha256, e.execKey = x.Path, x.Args, x.Cwd, "", keyOf(x)
			e.preloaded = x.LDPreload != "" || x.LDLibPath != "" || len(x.CodeEnv) > 0
			if sum, ok := t.hash.cached(x); ok {
				e.sha256 = sum
			} else {
				t.hash.enqueue(p.PID, e.ppid, e.cgroup, e.uuid, x)
			}
		}
	case event.KindFork:
		if f := ev.Fork; f != nil && !f.Thread {
			t.forkLocked(e, f, now)
		}
	case event.KindExit:
		e.exited = now
	}
	// Look up again on exec while nameless: a process entering a container
	// sees the container's /etc/passwd only from then on.
	if !e.userLooked || ev.Kind == event.KindSetID || (ev.Kind == event.KindExec && e.user == "") {
		if u := t.users.name(p.PID, e.ppid, p.UID); u != e.user {
			e.user = u
			t.changedLocked(e)
		}
		e.userLooked = true
	}
	// Children forked before their image's hash landed (a daemon that
	// double-forks and whose parent exits), and processes whose own job
	// was dropped, take it from the cache on their next event.
	if e.sha256 == "" && e.execKey != (fileKey{}) {
		if sum, ok := t.hash.known(e.execKey); ok {
			e.sha256 = sum
		}
	}
	t.fill(p, e)
	if len(t.byPID) > t.opts.Capacity {
		t.evictLocked(now)
	}
}

// lateEntry builds an entry for a process first seen in an event: one that
// started while the agent was not looking, or whose fork event was lost. It
// reads /proc for what the event lacks while the process is still there.
func (t *Table) lateEntry(ev *event.Event, ticks uint64) *entry {
	p := &ev.Process
	t.unknown.Add(1)
	e := &entry{
		pid: p.PID, nspid: p.NSPID, ppid: p.PPID, startTicks: ticks,
		uuid: t.uuidTicks(p.PID, ticks), name: p.Comm,
		start: t.opts.BootTime.Add(time.Duration(p.StartNS)),
	}
	if p.PPID != 0 {
		e.parentUUID = t.UUID(p.PPID, p.ParentStartNS)
	}
	if s, err := readProc(t.opts.ProcRoot, p.PID); err == nil && s.startTicks == ticks {
		e.exe, e.args, e.cwd = s.exe, s.args, s.cwd
	}
	t.insertLocked(e)
	return e
}

func (t *Table) forkLocked(parent *entry, f *event.Fork, now time.Time) {
	ticks := f.ChildStartNS / (1e9 / ticksPerSecond)
	if old := t.byPID[f.ChildPID]; old != nil {
		if old.startTicks == ticks {
			return // already built from an earlier event of the child
		}
		t.removeLocked(old)
	}
	c := &entry{
		pid: f.ChildPID, ppid: parent.pid, startTicks: ticks,
		uuid: t.uuidTicks(f.ChildPID, ticks), parentUUID: parent.uuid,
		name: parent.name, alias: parent.alias, execKey: parent.execKey, preloaded: parent.preloaded, exe: parent.exe, cwd: parent.cwd, args: parent.args,
		uid: parent.uid, euid: parent.euid, user: parent.user, userLooked: parent.userLooked, sha256: parent.sha256,
		start: t.opts.BootTime.Add(time.Duration(f.ChildStartNS)), seen: now,
		containerID: parent.containerID, cgroup: parent.cgroup,
	}
	t.insertLocked(c)
}

func (t *Table) insertLocked(e *entry) {
	t.byPID[e.pid] = e
	t.byID[e.uuid] = e
}

// changedLocked records that e's name, image or user changed: lineages
// holding it are stale.
func (t *Table) changedLocked(e *entry) {
	if e.inLineage {
		t.gen++
	}
}

func (t *Table) removeLocked(e *entry) {
	t.changedLocked(e)
	if t.byPID[e.pid] == e {
		delete(t.byPID, e.pid)
	}
	if t.byID[e.uuid] == e {
		delete(t.byID, e.uuid)
	}
}

// aliasOf returns the name a process exec'd as "exe" (through
// /proc/self/exe or a link of that name to another file) goes by: the base
// of its argv[0]. "" when the kernel's name is the file's own.
func aliasOf(comm, exe string, args []string) string {
	if comm != "exe" || path.Base(exe) == "exe" || len(args) == 0 {
		return ""
	}
	name := path.Base(args[0])
	if name == "" || name == "." || name == "/" {
		return ""
	}
	if len(name) > 64 {
		name = name[:64]
	}
	return name
}

// fill copies the entry and its lineage into the event's process.
func (t *Table) fill(p *event.Process, e *entry) {
	p.UUID, p.ParentUUID = e.uuid, e.parentUUID
	if p.Exe == "" {
		p.Exe = e.exe
	}
	if p.Args == nil {
		p.Args = e.args
	}
	if p.Cwd == "" {
		p.Cwd = e.cwd
	}
	if p.NSPID == 0 {
		p.NSPID = e.nspid
	}
	p.User = e.user
	p.ExeSHA256 = e.sha256
	p.ExeImage = e.execKey.String()
	p.Preloaded = e.preloaded
	p.Start = e.start
	if e.lineage == nil || e.lineageGen != t.gen {
		e.lineage, e.lineageGen = t.lineageOf(e), t.gen
	}
	// Shared, read-only: every event of the process points at the same slice.
	p.Lineage = e.lineage
	if len(p.Lineage) == 0 {
		p.Lineage = nil
	}
}

func (t *Table) lineageOf(e *entry) []event.Ancestor {
	// Fast path: the parent's own lineage, when current, is the rest of
	// ours — one allocation of the right size, no walk (a process tree's
	// new leaves are most of an exec-heavy workload's lineages).
	if a := t.byID[e.parentUUID]; a != nil && e.parentUUID != "" && a.parentUUID != a.uuid &&
		a.lineage != nil && a.lineageGen == t.gen {
		a.inLineage = true
		out := make([]event.Ancestor, 1+min(len(a.lineage), MaxLineage-1))
		out[0] = ancestorOf(a)
		copy(out[1:], a.lineage)
		return out
	}
	out := make([]event.Ancestor, 0, 8)
	seen := 0
	for id := e.parentUUID; id != "" && seen < MaxLineage; seen++ {
		a := t.byID[id]
		if a == nil {
			break
		}
		a.inLineage = true
		out = append(out, ancestorOf(a))
		if a.parentUUID == a.uuid {
			break
		}
		id = a.parentUUID
	}
	return out
}

func ancestorOf(a *entry) event.Ancestor {
	return event.Ancestor{
		PID: a.pid, NSPID: a.nspid, UUID: a.uuid, ParentUUID: a.parentUUID, Name: a.name,
		Exe: a.exe, Args: a.args, UID: a.uid, EUID: a.euid, User: a.user, Start: a.start,
	}
}

// evictLocked drops exited processes past their grace, then, if still
// over capacity, the least recently seen tenth of the table.
func (t *Table) evictLocked(now time.Time) {
	t.expireLocked(now)
	if len(t.byPID) <= t.opts.Capacity {
		return
	}
	// Over capacity with live processes: evict the least recently seen.
	n := len(t.byPID) - t.opts.Capacity + t.opts.Capacity/10
	cut := oldestSeen(t.byPID, n)
	for _, e := range t.byPID {
		if n > 0 && !e.seen.After(cut) {
			t.removeLocked(e)
			t.evicted.Add(1)
			n--
		}
	}
}

// Expire removes exited processes past their grace period; the agent
// calls it periodically so that a quiet node's table shrinks too.
func (t *Table) Expire(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.expireLocked(now)
}

// expireLocked removes exited processes past their grace: LeafExitGrace
// for those no lineage holds, ExitGrace for the others.
func (t *Table) expireLocked(now time.Time) {
	for _, e := range t.byPID {
		grace := t.opts.ExitGrace
		if !e.inLineage {
			grace = t.opts.LeafExitGrace
		}
		if !e.exited.IsZero() && now.Sub(e.exited) > grace {
			t.removeLocked(e)
			t.expired.Add(1)
		}
	}
}

// Lookup returns what the table knows of a live pid, as an Ancestor.
func (t *Table) Lookup(pid uint32) (event.Ancestor, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.byPID[pid]
	if e == nil {
		return event.Ancestor{}, false
	}
	return event.Ancestor{PID: e.pid, NSPID: e.nspid, UUID: e.uuid, ParentUUID: e.parentUUID, Name: e.name,
		Exe: e.exe, Args: e.args, UID: e.uid, EUID: e.euid, User: e.user, Start: e.start}, true
}

// Stats returns the counters.
func (t *Table) Stats() Stats {
	t.mu.Lock()
	n := len(t.byPID)
	t.mu.Unlock()
	h := t.hash
	return Stats{
		Entries: n, Evicted: t.evicted.Load(), Expired: t.expired.Load(), Seeded: t.seeded.Load(),
		Unknown: t.unknown.Load(), HashQueued: h.queued.Load(), HashDone: h.done.Load(),
		HashDropped: h.dropped.Load(), HashFailed: h.failed.Load(), HashCacheHit: h.hits.Load(),
		HashStuck: h.stuck.Load(),
	}
}

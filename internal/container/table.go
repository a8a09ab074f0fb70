// Package container is mamori's container table: it maps a cgroup v2 id
// (what the kernel stamps on every event) to the runtime identity of the
// container it belongs to — id, name, image, writable layer, Kubernetes pod
// or ECS task — for podman, Docker, containerd/CRI and cri-o.
//
// Identity comes from two places: the cgroup path, which names the runtime
// and container id (see ParsePath), and each runtime's own state files or
// API, read by a background resolver so Lookup on the event path is only a
// map read. The sensor feeds cgroup creation and removal through
// OnCgroupMkdir/OnCgroupRmdir so a container is known before its first
// process runs; an id seen before that triggers a rate-limited rescan of the
// hierarchy. Events whose container is not resolved yet wait in a RetryCache
// instead of leaving with empty container fields.
package container

import (
	"fmt"
	"log/slog"
	"os"
	pathpkg "path"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mamori-dev/mamori/internal/event"
)

// Options configure a Table. Zero values take the defaults in brackets.
// Paths are as seen by the agent: when it runs in a container, point them
// at the host's files mounted into it.
type Options struct {
	CgroupRoot      string // cgroup v2 mount [detected from ProcRoot/self/mountinfo]
	ProcRoot        string // [/proc]
	PodmanRoot      string // containers/storage graph root [/var/lib/containers/storage]
	PodmanRunRoot   string // containers/storage run root [/run/containers/storage]
	ContainerdState string // [/run/containerd]
	ContainerdRoot  string // [/var/lib/containerd]
	DockerSocket    string // [/var/run/docker.sock]
	DockerRoot      string // [/var/lib/docker]
	// ECSMetadataURI is the ECS task metadata v4 base URI
	// [$ECS_CONTAINER_METADATA_URI_V4; empty outside ECS].
	ECSMetadataURI string

	Capacity int // cgroups kept, live and recently removed [16384]
	// RemovedTTL keeps a removed cgroup resolvable for events still in
	// flight from its last processes [30s].
	RemovedTTL time.Duration
	// SettleTimeout is how long the resolver waits for a runtime's metadata
	// before publishing what the cgroup path alone says (id and runtime);
	// it keeps retrying afterwards [1s]. Keep it below RetryCache's MaxWait.
	SettleTimeout time.Duration
	// RescanInterval is the least time between on-demand rescans [250ms].
	RescanInterval time.Duration
	// ResyncInterval is the period of full rescans that catch missed
	// mkdir/rmdir notifications [60s].
	ResyncInterval time.Duration
	// OnLifecycle receives KindContainerStart/KindContainerStop events,
	// from the resolver goroutine. A start goes out once the container's
	// metadata is read (or, failing that, after SettleTimeout with the
	// identity its cgroup path gives); its Time is the cgroup's creation.
	// Containers already running when Start seeds the table get no start
	// event (Containers lists them).
	OnLifecycle func(*event.Event)
	Logger      *slog.Logger
}

func (o *Options) defaults() {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&o.ProcRoot, "/proc")
	def(&o.PodmanRoot, "/var/lib/containers/storage")
	def(&o.PodmanRunRoot, "/run/containers/storage")
	def(&o.ContainerdState, "/run/containerd")
	def(&o.ContainerdRoot, "/var/lib/containerd")
	def(&o.DockerSocket, "/var/run/docker.sock")
	def(&o.DockerRoot, "/var/lib/docker")
	def(&o.ECSMetadataURI, os.Getenv("ECS_CONTAINER_METADATA_URI_V4"))
	if o.Capacity <= 0 {
		o.Capacity = 16384
	}
	dur := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	dur(&o.RemovedTTL, 30*time.Second)
	dur(&o.SettleTimeout, time.Second)
	dur(&o.RescanInterval, 250*time.Millisecond)
	dur(&o.ResyncInterval, 60*time.Second)
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

const (
	maxWanted        = 4096 // unknown ids waiting for a rescan
	maxLifecycle     = 4096 // lifecycle events waiting for delivery
	maxMissing       = 16384
	maxResolveAge    = 60 * time.Second
	maxResolveWait   = 5 * time.Second
	firstResolveWait = 50 * time.Millisecond
	tick             = 50 * time.Millisecond
	ecsRefresh       = 60 * time.Second
)

// Table maps cgroup ids to containers. It is safe for concurrent use.
type Table struct {
	opts Options
	log  *slog.Logger

	mu      sync.RWMutex
	byID    map[uint64]*entry
	ctrs    map[string]*ctrState // by runtime/id
	pending map[string]*ctrState // metadata not complete yet
	tombs   []uint64             // removed cgroups, oldest first
	missing map[uint64]time.Time // ids a rescan did not find
	life    []*event.Event
	ecs     *ecsTask

	wantMu sync.Mutex
	wanted map[uint64]time.Time

	kick    chan struct{}
	wakeMu  sync.Mutex
	wakers  []chan struct{}
	started atomic.Bool

	lastScan time.Time
	storage  *storageReader
	ctrd     *containerdReader
	docker   *dockerReader
	ecsR     *ecsReader
	ecsNext  time.Time
	mounts   []mount // host mount table, read once per resolve pass

	st counters
}

type entry struct {
	path      string
	ctr       *ctrState // nil for a host cgroup
	own       bool      // the container's own cgroup, not one nested in it
	added     time.Time
	removedAt time.Time // zero while the cgroup exists
}

type ctrState struct {
	ref       Ref
	key       string
	c         *event.Container // published copy, never mutated after; nil until resolved
	complete  bool
	firstSeen time.Time
	nextTry   time.Time
	tries     int
	refs      int
	ownID     uint64
	ownPath   string
	cgTime    time.Time // creation of its own cgroup
	seeded    bool      // already running when the table started
	startSent bool
	stopped   bool
	stopSent  bool
}

// New checks the options and finds the cgroup v2 hierarchy. It starts
// nothing; call Start.
func New(opts Options) (*Table, error) {
	opts.defaults()
	if opts.CgroupRoot == "" {
		root, err := detectCgroup2Root(filepath.Join(opts.ProcRoot, "self", "mountinfo"))
		if err != nil {
			return nil, err
		}
		opts.CgroupRoot = root
	}
	if _, _, err := statCgroup(opts.CgroupRoot); err != nil {
		return nil, fmt.Errorf("container table: cgroup v2 root: %w", err)
	}
	t := &Table{
		opts:    opts,
		log:     opts.Logger.With("component", "container"),
		byID:    map[uint64]*entry{},
		ctrs:    map[string]*ctrState{},
		pending: map[string]*ctrState{},
		missing: map[uint64]time.Time{},
		wanted:  map[uint64]time.Time{},
		kick:    make(chan struct{}, 1),
		storage: &storageReader{root: opts.PodmanRoot, runRoot: opts.PodmanRunRoot},
		ctrd:    &containerdReader{state: opts.ContainerdState, root: opts.ContainerdRoot},
		docker:  newDockerReader(opts.DockerSocket, opts.DockerRoot),
	}
	if opts.ECSMetadataURI != "" {
		t.ecsR = newECSReader(opts.ECSMetadataURI)
	}
	return t, nil
}

// CgroupRoot is the cgroup v2 mount the table scans.
func (t *Table) CgroupRoot() string { return t.opts.CgroupRoot }

// status says what the table knows about a cgroup id.
type status int

const (
	statusPending status = iota // not resolved yet: retry later
	statusKnown                 // resolved: host (nil) or a container
	statusMissing               // a rescan after the first sighting did not find it
)

// Lookup returns the container of a cgroup, nil for a host cgroup. known is
// false while the id or its container's metadata is not resolved yet; the
// caller should hold the event (RetryCache) and look again. The returned
// Container is shared and must not be modified.
func (t *Table) Lookup(cgroupID uint64) (c *event.Container, known bool) {
	c, st := t.status(cgroupID)
	return c, st == statusKnown
}

func (t *Table) status(id uint64) (*event.Container, status) {
	t.st.lookups.Add(1)
	c, st, seen := t.peek(id)
	if st != statusKnown {
		t.st.misses.Add(1)
	}
	if !seen && st == statusPending {
		t.want(id)
	}
	return c, st
}

// peek is status without counting or asking for a rescan; seen says
// whether the table has the cgroup at all.
func (t *Table) peek(id uint64) (c *event.Container, st status, seen bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	e := t.byID[id]
	switch {
	case e == nil:
		if _, gone := t.missing[id]; gone {
			return nil, statusMissing, false
		}
		return nil, statusPending, false
	case e.ctr == nil:
		return nil, statusKnown, true
	case e.ctr.c != nil:
		return e.ctr.c, statusKnown, true
	}
	return nil, statusPending, true
}

// partial is the best identity for a cgroup whose metadata is not resolved:
// what its path says, or nil when even the path is unknown.
func (t *Table) partial(id uint64) *event.Container {
	t.mu.RLock()
	defer t.mu.RUnlock()
	e := t.byID[id]
	if e == nil || e.ctr == nil {
		return nil
	}
	if e.ctr.c != nil {
		return e.ctr.c
	}
	ref := e.ctr.ref
	c := &event.Container{ID: ref.ID, Runtime: ref.Runtime, StartedAt: e.ctr.cgTime}
	if c.Runtime == runtimeCRI {
		c.Runtime = RuntimeUnknown
	}
	if ref.PodUID != "" {
		c.Pod = &event.Pod{UID: ref.PodUID}
	}
	return c
}

// want asks the resolver for a rescan that should find id.
func (t *Table) want(id uint64) {
	t.wantMu.Lock()
	if _, ok := t.wanted[id]; !ok && len(t.wanted) < maxWanted {
		t.wanted[id] = time.Now()
	}
	t.wantMu.Unlock()
	select {
	case t.kick <- struct{}{}:
	default:
	}
}

// OnCgroupMkdir records a new cgroup from the sensor's cgroup_mkdir
// notification. path is the full path relative to the v2 hierarchy root.
// Container metadata is resolved in the background.
func (t *Table) OnCgroupMkdir(id uint64, path string) {
	now := time.Now()
	t.mu.Lock()
	if _, ok := t.byID[id]; !ok {
		t.addLocked(id, cleanCgroupPath(path), now, now, false)
	}
	t.mu.Unlock()
	t.wake()
	select {
	case t.kick <- struct{}{}:
	default:
	}
}

// OnCgroupRmdir records a cgroup's removal. It stays resolvable for
// RemovedTTL so events still queued behind the removal keep their identity.
func (t *Table) OnCgroupRmdir(id uint64) {
	t.mu.Lock()
	t.removeLocked(id, time.Now())
	t.mu.Unlock()
	select {
	case t.kick <- struct{}{}:
	default:
	}
}

// addLocked inserts a cgroup; cgTime is its creation time.
func (t *Table) addLocked(id uint64, path string, now, cgTime time.Time, seeded bool) {
	if len(t.byID) >= t.opts.Capacity && !t.evictOneLocked() {
		t.st.tableFull.Add(1)
		return
	}
	delete(t.missing, id)
	e := &entry{path: path, added: now}
	t.byID[id] = e
	ref, ok := ParsePath(path)
	if !ok {
		return
	}
	key := ref.Runtime + "/" + ref.ID
	if ref.Runtime == runtimeCRI {
		key = "cri/" + ref.ID
	}
	cs := t.ctrs[key]
	if cs != nil && t.claimsLocked(cs, ref, path) {
		// Anyone may name a cgroup of their own (a user's delegated
		// subtree) after a container whose id they read in /proc: it is
		// not that container, and does not restart or stop it.
		t.st.impostors.Add(1)
		return
	}
	if cs == nil {
		cs = &ctrState{ref: ref, key: key, firstSeen: now, seeded: seeded}
		t.ctrs[key] = cs
		t.pending[key] = cs
	}
	cs.refs++
	e.ctr, e.own = cs, ref.Own
	if ref.Own {
		if cs.ownID != 0 && cs.ownID != id {
			// A new own cgroup for a known container: it was restarted
			// (podman and Docker keep the id). Resolve it afresh so the new
			// start time and a new start event go out.
			cs.startSent, cs.stopSent, cs.seeded, cs.complete = false, false, seeded, false
			cs.firstSeen, cs.nextTry, cs.tries = now, now, 0
			t.pending[key] = cs
		}
		cs.ownID, cs.ownPath, cs.cgTime = id, path, cgTime
		cs.stopped = false
	}
}

// claimsLocked reports whether a new cgroup at path naming cs's container
// only claims to be it: a nested cgroup outside the container's own, or a
// second own cgroup elsewhere than where the runtime put the first (a
// restart comes back beside it), while the first still lives. Of two
// live own cgroups, one in a user's delegated subtree (user@UID.service)
// does not displace one outside.
func (t *Table) claimsLocked(cs *ctrState, ref Ref, path string) bool {
	if cs.ownID == 0 {
		return false
	}
	if !ref.Own {
		return !strings.HasPrefix(path, cs.ownPath+"/")
	}
	old := t.byID[cs.ownID]
	if old == nil || !old.removedAt.IsZero() || pathpkg.Dir(path) == pathpkg.Dir(cs.ownPath) {
		return false
	}
	return !delegated(cs.ownPath) || delegated(path)
}

// delegated reports whether a cgroup path lies in a user's systemd
// subtree, which that user may shape as they like.
func delegated(path string) bool {
	for seg := range strings.SplitSeq(path, "/") {
		if strings.HasPrefix(seg, "user@") && strings.HasSuffix(seg, ".service") {
			return true
		}
	}
	return false
}

func (t *Table) removeLocked(id uint64, now time.Time) {
	e := t.byID[id]
	if e == nil || !e.removedAt.IsZero() {
		return
	}
	e.removedAt = now
	t.tombs = append(t.tombs, id)
	if e.own && e.ctr != nil && e.ctr.ownID == id {
		e.ctr.stopped = true
		t.lifecycleLocked(e.ctr, now)
	}
}

// evictOneLocked frees a slot: the oldest removed cgroup, else a host
// cgroup, else a cgroup nested in the container with the most (a rescan
// finds any of them again). A live container's own cgroup is never
// evicted: a container making cgroups inside its own by the thousand
// costs only its own nested ones their place, not the next container its
// identity.
func (t *Table) evictOneLocked() bool {
	for len(t.tombs) > 0 {
		id := t.tombs[0]
		t.tombs = t.tombs[1:]
		if e := t.byID[id]; e != nil && !e.removedAt.IsZero() {
			t.dropLocked(id, e)
			return true
		}
	}
	var nested uint64
	most := 0
	for id, e := range t.byID {
		if e.ctr == nil {
			t.dropLocked(id, e)
			return true
		}
		if !e.own && e.ctr.refs > most {
			nested, most = id, e.ctr.refs
		}
	}
	if most > 0 {
		t.dropLocked(nested, t.byID[nested])
		return true
	}
	return false
}

func (t *Table) dropLocked(id uint64, e *entry) {
	delete(t.byID, id)
	t.st.evictions.Add(1)
	if cs := e.ctr; cs != nil {
		cs.refs--
		if cs.refs <= 0 {
			delete(t.ctrs, cs.key)
			delete(t.pending, cs.key)
		}
	}
}

// lifecycleLocked queues the start/stop events a container is due.
func (t *Table) lifecycleLocked(cs *ctrState, now time.Time) {
	if cs.c == nil || cs.ownID == 0 {
		return
	}
	emit := func(k event.Kind, at time.Time) {
		if len(t.life) >= maxLifecycle {
			t.st.lifecycleDropped.Add(1)
			return
		}
		t.life = append(t.life, &event.Event{
			Kind:      k,
			Time:      at,
			Process:   event.Process{CgroupID: cs.ownID},
			Container: cs.c,
			Cgroup:    &event.Cgroup{ID: cs.ownID, Path: cs.ownPath, Level: level(cs.ownPath)},
		})
	}
	if !cs.seeded && !cs.startSent {
		cs.startSent = true
		// The start happened when the cgroup was made, not when its
		// metadata was read.
		at := cs.cgTime
		if at.IsZero() {
			at = now
		}
		emit(event.KindContainerStart, at)
	}
	if cs.stopped && !cs.stopSent && (cs.startSent || cs.seeded) {
		cs.stopSent = true
		emit(event.KindContainerStop, now)
	}
}

// level is the cgroup's depth, as the kernel counts it (root is 0).
func level(path string) int {
	n := 0
	for i := 0; i < len(path); i++ {
		if path[i] == '/' && i+1 < len(path) {
			n++
		}
	}
	return n
}

// subscribe returns a channel signalled whenever lookups may have changed
// from unknown to known.
func (t *Table) subscribe() chan struct{} {
	ch := make(chan struct{}, 1)
	t.wakeMu.Lock()
	t.wakers = append(t.wakers, ch)
	t.wakeMu.Unlock()
	return ch
}

func (t *Table) wake() {
	t.wakeMu.Lock()
	for _, ch := range t.wakers {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	t.wakeMu.Unlock()
}

// Containers lists the live containers the table knows, resolved or
// partially resolved; an inventory for heartbeats and coverage.
func (t *Table) Containers() []*event.Container {
	t.mu.RLock()
	defer t.mu.RUnlock()
	var out []*event.Container
	for _, cs := range t.ctrs {
		if cs.c != nil && cs.ownID != 0 && !cs.stopped {
			out = append(out, cs.c)
		}
	}
	return out
}

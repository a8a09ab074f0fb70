package container

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mamori-dev/mamori/internal/event"
)

// The resolver is the table's one background goroutine: it rescans the
// hierarchy when asked (rate-limited) or periodically, reads runtime
// metadata for new containers with the table unlocked, forgets removed
// cgroups after their TTL, and delivers lifecycle events. Doing all I/O
// here keeps Lookup, on the event path, a map read under a read lock.

// Start seeds the table from a scan of the hierarchy and runs the resolver
// until ctx ends. It returns after the seed scan; the first resolution
// pass of seeded containers runs in the background.
func (t *Table) Start(ctx context.Context) error {
	if !t.started.CompareAndSwap(false, true) {
		return errors.New("container table: already started")
	}
	t.refreshECS(ctx, time.Now())
	if err := t.rescan(time.Now(), true); err != nil && !errors.Is(err, errScanLimit) {
		return fmt.Errorf("container table: seed scan: %w", err)
	}
	go t.run(ctx)
	return nil
}

func (t *Table) run(ctx context.Context) {
	tk := time.NewTicker(tick)
	defer tk.Stop()
	for {
		t.step(ctx, time.Now())
		select {
		case <-ctx.Done():
			return
		case <-t.kick:
		case <-tk.C:
		}
	}
}

// step is one resolver pass: rescans that are due, metadata resolution,
// expiry, lifecycle delivery.
func (t *Table) step(ctx context.Context, now time.Time) {
	t.wantMu.Lock()
	nWanted := len(t.wanted)
	t.wantMu.Unlock()
	since := now.Sub(t.lastScan)
	if (nWanted > 0 && since >= t.opts.RescanInterval) || since >= t.opts.ResyncInterval {
		if err := t.rescan(now, false); err != nil {
			t.log.Warn("cgroup rescan incomplete", "err", err)
		}
	}
	t.refreshECS(ctx, now)
	t.resolvePending(ctx, now)
	t.expire(now)
	t.deliver()
}

// beyondScan reports whether a cgroup lies where the walk does not go
// (deeper than maxScanDepth, or a path longer than the kernel resolves):
// the walk's not finding it says nothing, its rmdir notification will.
// A container nesting its cgroups that deep keeps its identity.
func beyondScan(path string) bool { return level(path) > maxScanDepth || len(path) >= unix.PathMax-256 }

// rescan walks the hierarchy and reconciles the table with it.
func (t *Table) rescan(start time.Time, seed bool) error {
	t.st.rescans.Add(1)
	found, err := scanCgroups(t.opts.CgroupRoot, t.opts.Capacity)
	t.lastScan = start
	now := time.Now()
	t.mu.Lock()
	for id, ci := range found {
		if _, ok := t.byID[id]; !ok {
			t.addLocked(id, ci.path, now, ci.mtime, seed)
		}
	}
	if err == nil {
		// Only a complete scan can say a cgroup is gone.
		for id, e := range t.byID {
			if _, ok := found[id]; !ok && e.removedAt.IsZero() && e.added.Before(start) && !beyondScan(e.path) {
				t.removeLocked(id, now)
			}
		}
	}
	t.wantMu.Lock()
	for id, asked := range t.wanted {
		if !asked.Before(start) {
			continue // asked during the walk: the next scan decides
		}
		delete(t.wanted, id)
		if _, ok := t.byID[id]; !ok && err == nil && len(t.missing) < maxMissing {
			t.missing[id] = now
		}
	}
	t.wantMu.Unlock()
	t.mu.Unlock()
	t.wake()
	return err
}

func (t *Table) refreshECS(ctx context.Context, now time.Time) {
	if t.ecsR == nil || now.Before(t.ecsNext) {
		return
	}
	t.ecsNext = now.Add(ecsRefresh)
	task, err := t.ecsR.fetch(ctx)
	if err != nil {
		t.st.resolveErrors.Add(1)
		t.log.Warn("ECS task metadata unavailable", "err", err)
		return
	}
	t.mu.Lock()
	changed := t.ecs == nil || len(t.ecs.Containers) != len(task.Containers)
	t.ecs = task
	if changed {
		// New containers joined the task document: attach ECS identity
		// to containers resolved before it was known.
		for _, cs := range t.ctrs {
			if cs.c != nil && cs.c.ECS == nil {
				c := *cs.c
				applyECS(&c, task)
				if c.ECS != nil {
					cs.c = &c
				}
			}
		}
	}
	t.mu.Unlock()
}

// resolvePending reads runtime metadata for containers that need it, with
// the lock released during I/O.
func (t *Table) resolvePending(ctx context.Context, now time.Time) {
	type job struct {
		cs     *ctrState
		ref    Ref
		cgTime time.Time
	}
	var jobs []job
	t.mu.RLock()
	for _, cs := range t.pending {
		if !now.Before(cs.nextTry) {
			jobs = append(jobs, job{cs, cs.ref, cs.cgTime})
		}
	}
	ecs := t.ecs
	t.mu.RUnlock()
	if len(jobs) == 0 {
		return
	}
	t.mounts = nil // re-read at most once per pass, on first need
	for _, j := range jobs {
		c, err := t.resolve(ctx, j.ref, j.cgTime)
		applyECS(c, ecs)
		t.publish(j.cs, c, err, time.Now())
	}
	t.wake()
}

// resolve builds a Container for ref from its runtime's metadata. With an
// error the Container still carries what the path said.
func (t *Table) resolve(ctx context.Context, ref Ref, cgTime time.Time) (*event.Container, error) {
	c := &event.Container{ID: ref.ID, Runtime: ref.Runtime, StartedAt: cgTime}
	var err error
	switch ref.Runtime {
	case RuntimePodman, RuntimeCRIO:
		err = t.storage.resolve(c, t.hostMounts)
	case RuntimeContainerd:
		err = t.ctrd.resolve(c, t.hostMounts)
	case RuntimeDocker:
		err = t.docker.resolve(ctx, c)
	case runtimeCRI:
		// A kubepods cgroupfs path does not name the runtime: ask each.
		c.Runtime = RuntimeUnknown
		for _, try := range []struct {
			rt string
			fn func() error
		}{
			{RuntimeContainerd, func() error { return t.ctrd.resolve(c, t.hostMounts) }},
			{RuntimeCRIO, func() error { return t.storage.resolve(c, t.hostMounts) }},
			{RuntimeDocker, func() error { return t.docker.resolve(ctx, c) }},
		} {
			if err = try.fn(); err == nil {
				c.Runtime = try.rt
				break
			}
		}
	}
	if c.Pod == nil && ref.PodUID != "" {
		c.Pod = &event.Pod{UID: ref.PodUID}
	}
	return c, err
}

// hostMounts returns the host's mount table, read once per resolve pass:
// container root filesystems are mounted in the host's mount namespace
// (pid 1's), which is where their overlay upper dirs are named.
func (t *Table) hostMounts() []mount {
	if t.mounts == nil {
		m, err := readMountinfo(filepath.Join(t.opts.ProcRoot, "1", "mountinfo"))
		if err != nil {
			t.log.Debug("read host mountinfo", "err", err)
			m = []mount{}
		}
		t.mounts = m
	}
	return t.mounts
}

// publish stores a resolution result. Complete metadata ends the work; a
// failure retries with backoff, and after SettleTimeout the partial
// identity is published so events are not held forever.
func (t *Table) publish(cs *ctrState, c *event.Container, err error, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ctrs[cs.key] != cs {
		return // evicted while we resolved
	}
	cs.tries++
	switch {
	case err == nil:
		cs.c, cs.complete = c, true
		delete(t.pending, cs.key)
	case now.Sub(cs.firstSeen) >= maxResolveAge:
		if cs.c == nil {
			cs.c = c
		}
		delete(t.pending, cs.key)
		t.st.resolveErrors.Add(1)
		t.log.Warn("container metadata unavailable, keeping partial identity", "id", cs.ref.ID, "runtime", c.Runtime, "err", err)
	default:
		if cs.c == nil && now.Sub(cs.firstSeen) >= t.opts.SettleTimeout {
			cs.c = c
			t.st.partial.Add(1)
		}
		wait := firstResolveWait << min(cs.tries, 7)
		cs.nextTry = now.Add(min(wait, maxResolveWait))
		if !errors.Is(err, errNotFound) || cs.tries > 3 {
			t.log.Debug("container metadata not ready", "id", cs.ref.ID, "runtime", c.Runtime, "err", err)
		}
	}
	t.lifecycleLocked(cs, now)
}

// expire forgets removed cgroups after RemovedTTL and old negative results.
func (t *Table) expire(now time.Time) {
	t.mu.Lock()
	for len(t.tombs) > 0 {
		id := t.tombs[0]
		e := t.byID[id]
		if e != nil && now.Sub(e.removedAt) < t.opts.RemovedTTL {
			break
		}
		t.tombs = t.tombs[1:]
		if e != nil && !e.removedAt.IsZero() {
			t.dropLocked(id, e)
		}
	}
	for id, at := range t.missing {
		if now.Sub(at) >= t.opts.RemovedTTL {
			delete(t.missing, id)
		}
	}
	t.mu.Unlock()
}

// deliver hands queued lifecycle events to OnLifecycle outside the lock.
func (t *Table) deliver() {
	t.mu.Lock()
	life := t.life
	t.life = nil
	t.mu.Unlock()
	if t.opts.OnLifecycle == nil {
		return
	}
	for _, ev := range life {
		t.opts.OnLifecycle(ev)
	}
}

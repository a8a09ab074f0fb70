package container

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mamori-dev/mamori/internal/event"
	"github.com/mamori-dev/mamori/internal/testenv"
)

// fakeStorage is a containers/storage graph root the test writes, standing
// in for podman's metadata so a test decides when metadata appears. The
// cgroups these tests use are real directories in the v2 hierarchy.
type fakeStorage struct{ root string }

func newFakeStorage(t testing.TB) *fakeStorage {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "overlay-containers"), 0o755); err != nil {
		t.Fatal(err)
	}
	return &fakeStorage{root: root}
}

func (s *fakeStorage) write(t testing.TB, ids map[string]string) {
	t.Helper()
	var list []storageContainer
	for id, name := range ids {
		list = append(list, storageContainer{ID: id, Names: []string{name}, Image: "img-" + name,
			Metadata: `{"image-name":"localhost/` + name + `:1"}`})
	}
	data, err := json.Marshal(list)
	if err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(s.root, "overlay-containers", "containers.json.tmp")
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(s.root, "overlay-containers", "containers.json")); err != nil {
		t.Fatal(err)
	}
}

type sink struct{ evs []*event.Event }

func (s *sink) emit(ev *event.Event) { s.evs = append(s.evs, ev) }

// drain flushes rc until n events came out or d passed.
func (s *sink) drain(rc *RetryCache, n int, d time.Duration) {
	deadline := time.After(d)
	for len(s.evs) < n {
		select {
		case <-rc.Wake():
		case <-time.After(20 * time.Millisecond):
		case <-deadline:
			return
		}
		rc.Flush(time.Now(), s.emit)
	}
}

func fakeContainerPath(t testing.TB) (path, id string) {
	id = randHex(t, 64)
	return "/mamori-test-" + randHex(t, 8) + "/libpod-" + id, id
}

func TestRetryCacheReleasesWhenResolved(t *testing.T) {
	testenv.RequireRoot(t)
	root := testRoot(t)
	store := newFakeStorage(t)
	tbl := startTable(t, Options{CgroupRoot: root, PodmanRoot: store.root, PodmanRunRoot: store.root,
		SettleTimeout: time.Hour, ResyncInterval: time.Hour})
	path, ctrID := fakeContainerPath(t)
	cgID := makeCgroup(t, root, path)

	rc := tbl.NewRetryCache(RetryOptions{MaxWait: 10 * time.Second})
	var out sink
	for i := 0; i < 3; i++ {
		rc.Offer(&event.Event{Kind: event.KindExec, Process: event.Process{PID: uint32(i), CgroupID: cgID}}, out.emit)
	}
	// The rescan finds the cgroup, but the runtime has no metadata yet.
	out.drain(rc, 1, 500*time.Millisecond)
	if len(out.evs) != 0 || rc.Len() != 3 {
		t.Fatalf("released %d events before metadata existed (held %d)", len(out.evs), rc.Len())
	}
	store.write(t, map[string]string{ctrID: "late"})
	out.drain(rc, 3, 5*time.Second)
	if len(out.evs) != 3 {
		t.Fatalf("released %d of 3 events after metadata appeared", len(out.evs))
	}
	for i, ev := range out.evs {
		if ev.Process.PID != uint32(i) {
			t.Errorf("event %d out of order: pid %d", i, ev.Process.PID)
		}
		if ev.Container == nil || ev.Container.ID != ctrID || ev.Container.Name != "late" || ev.Container.Image != "localhost/late:1" {
			t.Errorf("event %d container: %+v", i, ev.Container)
		}
	}
	// Once resolved, events pass straight through.
	rc.Offer(&event.Event{Process: event.Process{CgroupID: cgID}}, out.emit)
	if len(out.evs) != 4 || out.evs[3].Container == nil {
		t.Fatalf("resolved cgroup's event was held")
	}
	st := rc.Stats()
	if st.Held != 3 || st.Released != 3 || st.Expired != 0 || st.Dropped != 0 || st.Pending != 0 {
		t.Errorf("stats: %+v", st)
	}
}

func TestRetryCacheExpiresWithPartialIdentity(t *testing.T) {
	testenv.RequireRoot(t)
	root := testRoot(t)
	store := newFakeStorage(t) // never learns the container
	tbl := startTable(t, Options{CgroupRoot: root, PodmanRoot: store.root, PodmanRunRoot: store.root,
		SettleTimeout: time.Hour, ResyncInterval: time.Hour})
	path, ctrID := fakeContainerPath(t)
	cgID := makeCgroup(t, root, path)

	rc := tbl.NewRetryCache(RetryOptions{MaxWait: 300 * time.Millisecond})
	var out sink
	rc.Offer(&event.Event{Process: event.Process{CgroupID: cgID}}, out.emit)
	out.drain(rc, 1, 3*time.Second)
	if len(out.evs) != 1 {
		t.Fatal("event not released after MaxWait")
	}
	c := out.evs[0].Container
	if c == nil || c.ID != ctrID || c.Runtime != RuntimePodman {
		t.Fatalf("expired event should carry the identity its path gives: %+v", c)
	}
	if st := rc.Stats(); st.Expired != 1 || st.Released != 0 {
		t.Errorf("stats: %+v", st)
	}
}

func TestRetryCacheSettledPartialIsKnown(t *testing.T) {
	testenv.RequireRoot(t)
	root := testRoot(t)
	store := newFakeStorage(t)
	tbl := startTable(t, Options{CgroupRoot: root, PodmanRoot: store.root, PodmanRunRoot: store.root,
		SettleTimeout: 200 * time.Millisecond, ResyncInterval: time.Hour})
	path, ctrID := fakeContainerPath(t)
	cgID := makeCgroup(t, root, path)
	c := waitResolved(t, tbl, cgID, 3*time.Second, nil)
	if c == nil || c.ID != ctrID || c.Name != "" {
		t.Fatalf("after SettleTimeout the path identity should be published: %+v", c)
	}
	// Other containers on the machine are unknown to the fake storage
	// too, so count at least ours.
	if st := tbl.Stats(); st.Partial < 1 {
		t.Errorf("partial count: %+v", st)
	}
	// Metadata arriving later still replaces the partial identity.
	store.write(t, map[string]string{ctrID: "later"})
	waitResolved(t, tbl, cgID, 10*time.Second, func(c *event.Container) bool { return c != nil && c.Name == "later" })
}

func TestRetryCacheGoneAndDropped(t *testing.T) {
	testenv.RequireRoot(t)
	root := testRoot(t)
	tbl := startTable(t, Options{CgroupRoot: root, ResyncInterval: time.Hour, RescanInterval: 10 * time.Millisecond})

	// A cgroup that existed and is gone before the table ever saw it.
	path, _ := fakeContainerPath(t)
	goneID := makeCgroup(t, root, path)
	removeCgroupTree(root, path)

	rc := tbl.NewRetryCache(RetryOptions{Capacity: 2, MaxWait: 10 * time.Second})
	var out sink
	rc.Offer(&event.Event{Process: event.Process{CgroupID: goneID}}, out.emit)
	out.drain(rc, 1, 3*time.Second)
	if len(out.evs) != 1 || out.evs[0].Container != nil {
		t.Fatalf("event of a vanished cgroup: %d released", len(out.evs))
	}
	if st := rc.Stats(); st.Gone != 1 {
		t.Errorf("gone count: %+v", st)
	}
	// A later event of the same vanished cgroup leaves at once, counted.
	rc.Offer(&event.Event{Process: event.Process{CgroupID: goneID}}, out.emit)
	if len(out.evs) != 2 || rc.Stats().Gone != 2 {
		t.Errorf("second event of vanished cgroup: %d out, %+v", len(out.evs), rc.Stats())
	}

	// Overflow: capacity 2, a third held event is dropped and counted.
	unknown := uint64(1) << 62
	for i := 0; i < 3; i++ {
		rc.Offer(&event.Event{Process: event.Process{CgroupID: unknown + uint64(i)}}, out.emit)
	}
	if st := rc.Stats(); st.Dropped != 1 || st.Pending != 2 {
		t.Errorf("overflow stats: %+v", st)
	}

	// Events without a cgroup, or already enriched, pass through.
	n := len(out.evs)
	rc.Offer(&event.Event{}, out.emit)
	rc.Offer(&event.Event{Process: event.Process{CgroupID: unknown}, Container: &event.Container{ID: "x"}}, out.emit)
	if len(out.evs) != n+2 {
		t.Error("pass-through events were held")
	}
}

func TestRetryCacheRunStage(t *testing.T) {
	testenv.RequireRoot(t)
	root := testRoot(t)
	store := newFakeStorage(t)
	path, ctrID := fakeContainerPath(t)
	store.write(t, map[string]string{ctrID: "staged"})
	tbl := startTable(t, Options{CgroupRoot: root, PodmanRoot: store.root, PodmanRunRoot: store.root, ResyncInterval: time.Hour})
	cgID := makeCgroup(t, root, path)
	host := cgroupIDOf(t, root, cgroupOfPID(t, "self"))

	rc := tbl.NewRetryCache(RetryOptions{})
	in, out := make(chan *event.Event), make(chan *event.Event, 8)
	done := make(chan struct{})
	go func() { rc.Run(t.Context(), in, out); close(done) }()
	in <- &event.Event{Process: event.Process{PID: 1, CgroupID: cgID}}
	in <- &event.Event{Process: event.Process{PID: 2, CgroupID: host}}
	got := map[uint32]*event.Event{}
	for len(got) < 2 {
		select {
		case ev := <-out:
			got[ev.Process.PID] = ev
		case <-time.After(5 * time.Second):
			t.Fatalf("Run released %d of 2 events", len(got))
		}
	}
	if c := got[1].Container; c == nil || c.Name != "staged" {
		t.Errorf("container event: %+v", c)
	}
	if got[2].Container != nil {
		t.Errorf("host event got a container: %+v", got[2].Container)
	}
	close(in)
	<-done
}

// TestSensorNotifications feeds cgroup mkdir/rmdir as the sensor will,
// with periodic rescans off, and checks lifecycle events and expiry.
func TestSensorNotifications(t *testing.T) {
	testenv.RequireRoot(t)
	root := testRoot(t)
	store := newFakeStorage(t)
	path, ctrID := fakeContainerPath(t)
	store.write(t, map[string]string{ctrID: "notified"})
	rec := &lifeRecorder{}
	tbl := startTable(t, Options{CgroupRoot: root, PodmanRoot: store.root, PodmanRunRoot: store.root,
		ResyncInterval: time.Hour, RemovedTTL: 300 * time.Millisecond, OnLifecycle: rec.add})

	cgID := makeCgroup(t, root, path)
	parentID := cgroupIDOf(t, root, filepath.Dir(path))
	tbl.OnCgroupMkdir(parentID, filepath.Dir(path))
	tbl.OnCgroupMkdir(cgID, path)
	start := rec.wait(t, event.KindContainerStart, ctrID, 3*time.Second)
	if start.Container.Name != "notified" || start.Cgroup.ID != cgID || start.Cgroup.Level != 2 {
		t.Errorf("start event: %+v %+v", start.Container, start.Cgroup)
	}
	if c, known := tbl.Lookup(parentID); !known || c != nil {
		t.Errorf("parent cgroup should be a known host cgroup: %+v %v", c, known)
	}
	// A nested cgroup inherits the container without a second start.
	nestedID := makeCgroup(t, root, path+"/init.scope")
	tbl.OnCgroupMkdir(nestedID, path+"/init.scope")
	if c := waitResolved(t, tbl, nestedID, 2*time.Second, nil); c == nil || c.ID != ctrID {
		t.Errorf("nested cgroup: %+v", c)
	}

	removeCgroupTree(root, path+"/init.scope")
	tbl.OnCgroupRmdir(nestedID)
	tbl.OnCgroupRmdir(cgID)
	stop := rec.wait(t, event.KindContainerStop, ctrID, 3*time.Second)
	if stop.Container.ID != ctrID {
		t.Errorf("stop event: %+v", stop.Container)
	}
	if n := rec.count(event.KindContainerStart, ctrID); n != 1 {
		t.Errorf("%d start events", n)
	}
	// Still resolvable right after removal, forgotten after RemovedTTL.
	if c, known := tbl.Lookup(cgID); !known || c == nil {
		t.Error("removed cgroup not resolvable within its TTL")
	}
	deadline := time.Now().Add(3 * time.Second)
	for tbl.Stats().Evictions < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if st := tbl.Stats(); st.Evictions < 2 {
		t.Errorf("removed cgroups not evicted after TTL: %+v", st)
	}
}

// TestCapacity: a full table evicts removed cgroups first, then host
// cgroups, and never live containers (it counts what it could not keep).
func TestCapacity(t *testing.T) {
	testenv.RequireRoot(t)
	root := testRoot(t)
	tbl, err := New(Options{CgroupRoot: root, Capacity: 3, PodmanRoot: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ids := []uint64{}
	for i := 0; i < 3; i++ {
		path, _ := fakeContainerPath(t)
		ids = append(ids, uint64(1000+i))
		tbl.OnCgroupMkdir(ids[i], path)
	}
	path, _ := fakeContainerPath(t)
	tbl.OnCgroupMkdir(2000, path)
	if st := tbl.Stats(); st.TableFull != 1 || st.Cgroups != 3 {
		t.Fatalf("full of live containers: %+v", st)
	}
	tbl.OnCgroupRmdir(ids[0])
	tbl.OnCgroupMkdir(2000, path)
	if _, _, seen := tbl.peek(ids[0]); seen {
		t.Error("removed cgroup kept while a new one had no room")
	}
	if _, _, seen := tbl.peek(2000); !seen {
		t.Error("new cgroup not recorded after eviction")
	}
	if st := tbl.Stats(); st.Evictions != 1 || st.Cgroups != 3 {
		t.Errorf("after eviction: %+v", st)
	}
}

// TestECSMetadata uses an httptest server on loopback standing in for the
// ECS task metadata endpoint: ECS cannot run on this machine, so this is
// the one place a fake service is used. The cgroup is real.
func TestECSMetadata(t *testing.T) {
	testenv.RequireRoot(t)
	root := testRoot(t)
	store := newFakeStorage(t)
	path, ctrID := fakeContainerPath(t)
	store.write(t, map[string]string{ctrID: "app"})
	other := randHex(t, 64)
	otherPath := "/mamori-test-" + randHex(t, 8) + "/libpod-" + other
	store.write(t, map[string]string{ctrID: "app", other: "not-in-task"})

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v4/abc/task" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintf(w, `{"Cluster":"arn:aws:ecs:eu-west-1:111122223333:cluster/prod","TaskARN":"arn:aws:ecs:eu-west-1:111122223333:task/prod/0123","Family":"web","Revision":"7","LaunchType":"EC2",
			"Containers":[{"DockerId":%q,"Name":"web-app","Image":"nginx"}]}`, ctrID)
	}))
	defer srv.Close()
	tbl := startTable(t, Options{CgroupRoot: root, PodmanRoot: store.root, PodmanRunRoot: store.root,
		ECSMetadataURI: srv.URL + "/v4/abc/", ResyncInterval: time.Hour})

	cgID := makeCgroup(t, root, path)
	otherID := makeCgroup(t, root, otherPath)
	c := waitResolved(t, tbl, cgID, 3*time.Second, func(c *event.Container) bool { return c != nil && c.Name != "" })
	if c.ECS == nil || c.ECS.Cluster != "arn:aws:ecs:eu-west-1:111122223333:cluster/prod" ||
		c.ECS.TaskARN != "arn:aws:ecs:eu-west-1:111122223333:task/prod/0123" || c.ECS.TaskDefinition != "web:7" || c.ECS.ContainerName != "web-app" {
		t.Errorf("ECS identity: %+v", c.ECS)
	}
	o := waitResolved(t, tbl, otherID, 3*time.Second, func(c *event.Container) bool { return c != nil && c.Name != "" })
	if o.ECS != nil {
		t.Errorf("container outside the task got ECS identity %+v", o.ECS)
	}
}

package container

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mamori-dev/mamori/internal/event"
)

// TestCgroupNamedAfterALiveContainer: a user makes cgroups in their own
// delegated subtree named after a running container (whose id anyone
// reads in /proc/PID/cgroup). They are the host's, not that container's:
// its processes are not attributed to it, the container is not taken as
// restarted, and removing them does not stop it. A cgroup nested in the
// container's own is still the container's.
func TestCgroupNamedAfterALiveContainer(t *testing.T) {
	v := strings.Repeat("ab", 32)
	cg, opts := fakePodman(t, `[{"id":"`+v+`","names":["victim-db"],"image":"img","metadata":"{\"image-name\":\"postgres:16\"}"}]`)
	own := "/machine.slice/libpod-" + v + ".scope"
	mk := func(p string) uint64 { return mkCgroup(t, cg, p) }
	vid := mk(own)
	var rec lifeRecorder
	opts.OnLifecycle = rec.add
	tbl := startTable(t, opts)
	waitResolved(t, tbl, vid, 3*time.Second, func(c *event.Container) bool { return c != nil && c.Name == "victim-db" })
	time.Sleep(200 * time.Millisecond)
	starts := rec.count(event.KindContainerStart, v) // none: it ran before the table

	user := "/user.slice/user-1000.slice/user@1000.service/app.slice"
	for _, p := range []string{user + "/libpod-" + v + ".scope", user + "/libpod-" + v + ".scope/inner", user + "/x/libpod-" + v + ".scope/y"} {
		id := mk(p)
		tbl.OnCgroupMkdir(id, p)
		if c, known := tbl.Lookup(id); !known || c != nil {
			t.Errorf("%s: known %v, container %+v; want the host's", p, known, c)
		}
	}
	if n := tbl.Stats().Impostors; n != 3 {
		t.Errorf("impostors counted: %d, want 3", n)
	}
	nested := mk(own + "/init.scope")
	tbl.OnCgroupMkdir(nested, own+"/init.scope")
	if c, _ := tbl.Lookup(nested); c == nil || c.ID != v {
		t.Errorf("a cgroup nested in the container's own: %+v", c)
	}
	fake := user + "/libpod-" + v + ".scope"
	tbl.OnCgroupRmdir(cgroupIDOf(t, cg, fake))
	time.Sleep(300 * time.Millisecond)
	if n := rec.count(event.KindContainerStop, v); n != 0 {
		t.Errorf("removing the impostor stopped the container (%d stop events)", n)
	}
	if n := rec.count(event.KindContainerStart, v); n != starts {
		t.Errorf("the impostor restarted the container (%d start events)", n)
	}
	if c, _ := tbl.Lookup(vid); c == nil || c.Name != "victim-db" {
		t.Errorf("the container after the impostor: %+v", c)
	}
}

// TestNestedCgroupsCannotCrowdOutContainers: a container making cgroups
// inside its own until the table is full costs its own nested cgroups
// their place, not the next container its identity.
func TestNestedCgroupsCannotCrowdOutContainers(t *testing.T) {
	a, b := strings.Repeat("ab", 32), strings.Repeat("cd", 32)
	cg, opts := fakePodman(t, `[{"id":"`+a+`","names":["hostile"]},{"id":"`+b+`","names":["newcomer"]}]`)
	mk := func(p string) uint64 { return mkCgroup(t, cg, p) }
	aPath := "/machine.slice/libpod-" + a + ".scope"
	aid := mk(aPath)
	opts.Capacity = 64
	tbl := startTable(t, opts)
	for i := range 80 {
		p := fmt.Sprintf("%s/n%02d", aPath, i)
		tbl.OnCgroupMkdir(mk(p), p)
	}
	bPath := "/machine.slice/libpod-" + b + ".scope"
	bid := mk(bPath)
	tbl.OnCgroupMkdir(bid, bPath)
	waitResolved(t, tbl, bid, 3*time.Second, func(c *event.Container) bool { return c != nil && c.Name == "newcomer" })
	if c, _ := tbl.Lookup(aid); c == nil || c.Name != "hostile" {
		t.Errorf("the nesting container's own cgroup: %+v", c)
	}
	if st := tbl.Stats(); st.TableFull != 0 || st.Cgroups > 64 {
		t.Errorf("table: %+v", st)
	}
}

// TestDeeplyNestedCgroupKeepsItsContainer: a container nesting cgroups
// deeper than the rescan walks (64 levels) keeps its identity through
// rescans; before, the walk's not finding the cgroup removed it, and its
// events went out as the host's.
func TestDeeplyNestedCgroupKeepsItsContainer(t *testing.T) {
	a := strings.Repeat("ab", 32)
	cg, opts := fakePodman(t, `[{"id":"`+a+`","names":["deep"]}]`)
	deep := "/machine.slice/libpod-" + a + ".scope" + strings.Repeat("/d", 66)
	mkCgroup(t, cg, deep)
	opts.ResyncInterval, opts.RemovedTTL = 100*time.Millisecond, 100*time.Millisecond
	tbl := startTable(t, opts)
	id := cgroupIDOf(t, cg, deep)
	tbl.OnCgroupMkdir(id, deep)
	waitResolved(t, tbl, id, 2*time.Second, func(c *event.Container) bool { return c != nil && c.Name == "deep" })
	time.Sleep(600 * time.Millisecond) // rescans, and a removed cgroup's time to live
	if c, known := tbl.Lookup(id); !known || c == nil || c.Name != "deep" {
		t.Errorf("after rescans: known %v, container %+v", known, c)
	}
}

// fakePodman makes a cgroup tree and a podman storage holding containers
// (containers.json) in a temporary directory, and the options of a table
// reading them and nothing of the host's.
func fakePodman(t *testing.T, containers string) (cg string, opts Options) {
	t.Helper()
	tmp := t.TempDir()
	cg, storage := filepath.Join(tmp, "cg"), filepath.Join(tmp, "storage")
	if err := os.MkdirAll(filepath.Join(storage, "overlay-containers"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(storage, "overlay-containers", "containers.json"), []byte(containers), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(cg, 0o755); err != nil {
		t.Fatal(err)
	}
	return cg, Options{CgroupRoot: cg, ProcRoot: tmp, PodmanRoot: storage, PodmanRunRoot: filepath.Join(tmp, "run"),
		DockerSocket: filepath.Join(tmp, "nosock"), DockerRoot: filepath.Join(tmp, "nodocker"), ContainerdState: tmp,
		ContainerdRoot: tmp, ResyncInterval: time.Hour}
}

// mkCgroup makes the directory of a cgroup in a fake tree; its id is its inode.
func mkCgroup(t *testing.T, cg, p string) uint64 {
	t.Helper()
	if err := os.MkdirAll(cg+p, 0o755); err != nil {
		t.Fatal(err)
	}
	return cgroupIDOf(t, cg, p)
}

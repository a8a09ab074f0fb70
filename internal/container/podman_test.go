package container

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mamori-dev/mamori/internal/event"
	"github.com/mamori-dev/mamori/internal/testenv"
)

// TestPodmanContainer runs a real podman container and checks the table
// resolves its cgroup to podman's id, name, image, labels and writable
// layer, and reports its start and stop.
func TestPodmanContainer(t *testing.T) {
	testenv.EnsureImage(t)
	rec := &lifeRecorder{}
	tbl := startTable(t, Options{OnLifecycle: rec.add})

	name := "mamori-ct-" + randHex(t, 8)
	id := testenv.StartContainer(t, []string{"--name", name, "--label", "mamori.test=yes"}, "sleep", "1000")
	pid := testenv.Podman(t, "inspect", "-f", "{{.State.Pid}}", id)
	cgPath := cgroupOfPID(t, pid)
	cgID := cgroupIDOf(t, tbl.CgroupRoot(), cgPath)
	if ref, ok := ParsePath(cgPath); !ok || ref.ID != id || ref.Runtime != RuntimePodman {
		t.Fatalf("real podman cgroup path %q parsed as %+v %v", cgPath, ref, ok)
	}

	// The container started after the table: its first lookup is a miss
	// that triggers a rescan.
	c := waitResolved(t, tbl, cgID, 5*time.Second, func(c *event.Container) bool { return c != nil && c.Name != "" })
	if c.ID != id || c.Runtime != RuntimePodman {
		t.Fatalf("got id %q runtime %q, want %q podman", c.ID, c.Runtime, id)
	}
	if c.Name != name {
		t.Errorf("name = %q, want %q", c.Name, name)
	}
	if c.Image != testenv.TestImage {
		t.Errorf("image = %q, want %q", c.Image, testenv.TestImage)
	}
	if want := testenv.Podman(t, "inspect", "-f", "{{.Image}}", id); c.ImageID != want {
		t.Errorf("image id = %q, want %q", c.ImageID, want)
	}
	if c.Labels["mamori.test"] != "yes" {
		t.Errorf("labels = %v, want mamori.test=yes (from libpod's bolt db)", c.Labels)
	}
	if c.Privileged {
		t.Error("unprivileged container reported privileged")
	}
	started, err := time.Parse(time.RFC3339Nano, testenv.Podman(t, "inspect", "-f", "{{.State.StartedAt.Format \"2006-01-02T15:04:05.999999999Z07:00\"}}", id))
	if err != nil {
		t.Fatalf("parse podman start time: %v", err)
	}
	if d := c.StartedAt.Sub(started); d > time.Second || d < -5*time.Second {
		t.Errorf("StartedAt %v is %v from podman's %v", c.StartedAt, d, started)
	}

	// The writable layer: a file the container writes shows up there.
	if st, err := os.Stat(c.UpperDir); err != nil || !st.IsDir() {
		t.Fatalf("UpperDir %q: %v", c.UpperDir, err)
	}
	testenv.Exec(t, id, "sh", "-c", "echo mamori > /root/created-in-container")
	data, err := os.ReadFile(filepath.Join(c.UpperDir, "root", "created-in-container"))
	if err != nil || strings.TrimSpace(string(data)) != "mamori" {
		t.Fatalf("file written in container not in UpperDir %s: %q %v", c.UpperDir, data, err)
	}
	if _, err := os.Stat(filepath.Join(c.UpperDir, "bin", "busybox")); err == nil {
		t.Error("image file appears in UpperDir; it should hold only the container's writes")
	}

	// Lifecycle: start seen after the table started; stop once removed.
	start := rec.wait(t, event.KindContainerStart, id, 5*time.Second)
	if start.Container.Name != name || start.Cgroup == nil || start.Cgroup.ID != cgID || start.Cgroup.Path != cgPath {
		t.Errorf("start event: container %+v cgroup %+v", start.Container, start.Cgroup)
	}
	if len(tbl.Containers()) == 0 {
		t.Error("Containers() is empty with a running container")
	}
	if out, err := exec.Command("podman", "--runtime", "runc", "rm", "-f", "-t", "0", id).CombinedOutput(); err != nil {
		t.Fatalf("podman rm: %v: %s", err, out)
	}
	stop := rec.wait(t, event.KindContainerStop, id, 5*time.Second)
	if stop.Container.Name != name {
		t.Errorf("stop event container: %+v", stop.Container)
	}
	// A removed cgroup stays resolvable for late events.
	if c2, known := tbl.Lookup(cgID); !known || c2 == nil || c2.ID != id {
		t.Errorf("lookup after removal: %+v %v", c2, known)
	}
	if n := rec.count(event.KindContainerStart, id); n != 1 {
		t.Errorf("%d start events, want 1", n)
	}
}

// TestPodmanSeededAndPrivileged starts containers before the table: they
// resolve from the seed scan, without start events, and --privileged is
// reported.
func TestPodmanSeededAndPrivileged(t *testing.T) {
	testenv.EnsureImage(t)
	priv := testenv.StartContainer(t, []string{"--privileged"}, "sleep", "1000")
	plain := testenv.StartContainer(t, nil, "sleep", "1000")
	rec := &lifeRecorder{}
	tbl := startTable(t, Options{OnLifecycle: rec.add})

	for _, tc := range []struct {
		id   string
		priv bool
	}{{priv, true}, {plain, false}} {
		pid := testenv.Podman(t, "inspect", "-f", "{{.State.Pid}}", tc.id)
		cgID := cgroupIDOf(t, tbl.CgroupRoot(), cgroupOfPID(t, pid))
		c := waitResolved(t, tbl, cgID, 5*time.Second, func(c *event.Container) bool { return c != nil && c.Name != "" })
		if c.ID != tc.id || c.Privileged != tc.priv {
			t.Errorf("container %s: id %q privileged %v, want %v", tc.id, c.ID, c.Privileged, tc.priv)
		}
	}
	time.Sleep(300 * time.Millisecond)
	if n := rec.count(event.KindContainerStart, priv) + rec.count(event.KindContainerStart, plain); n != 0 {
		t.Errorf("%d start events for containers running before the table started", n)
	}
	st := tbl.Stats()
	if st.Containers < 2 || st.Rescans == 0 {
		t.Errorf("stats: %+v", st)
	}
}

// TestHostCgroupResolvesNil: the test's own cgroup is a host cgroup.
func TestHostCgroupResolvesNil(t *testing.T) {
	testenv.RequireRoot(t)
	tbl := startTable(t, Options{})
	self := cgroupOfPID(t, "self")
	if _, ok := ParsePath(self); ok {
		t.Skipf("test runs inside a container cgroup %s", self)
	}
	id := cgroupIDOf(t, tbl.CgroupRoot(), self)
	c, known := tbl.Lookup(id)
	if !known || c != nil {
		t.Fatalf("host cgroup %s: %+v known=%v", self, c, known)
	}
}

// A container on a directory of the host with an overlay (--rootfs DIR:O)
// has no layer in storage; its writes are still its writable layer.
func TestPodmanRootfsOverlay(t *testing.T) {
	testenv.EnsureImage(t)
	tbl := startTable(t, Options{})
	root := t.TempDir()
	if out, err := exec.Command("sh", "-c", "c=$(podman create "+testenv.TestImage+" true) && podman export $c | tar -x -C "+root+"; podman rm -f $c >/dev/null").CombinedOutput(); err != nil {
		t.Fatalf("make a root directory: %v\n%s", err, out)
	}
	id := testenv.Podman(t, "run", "-d", "--rootfs", root+":O", "sleep", "1000")
	t.Cleanup(func() { _ = exec.Command("podman", "--runtime", "runc", "rm", "-f", "-t", "0", id).Run() })
	pid := testenv.Podman(t, "inspect", "-f", "{{.State.Pid}}", id)
	cgID := cgroupIDOf(t, tbl.CgroupRoot(), cgroupOfPID(t, pid))
	c := waitResolved(t, tbl, cgID, 5*time.Second, func(c *event.Container) bool { return c != nil && c.UpperDir != "" })
	testenv.Exec(t, id, "sh", "-c", "echo mamori > /root/created-in-container")
	if data, err := os.ReadFile(filepath.Join(c.UpperDir, "root", "created-in-container")); err != nil || strings.TrimSpace(string(data)) != "mamori" {
		t.Fatalf("file written in the container not in UpperDir %s: %q %v", c.UpperDir, data, err)
	}
	if _, err := os.Stat(filepath.Join(root, "root", "created-in-container")); err == nil {
		t.Error("the write went to the host's directory, not the overlay")
	}
}

// A podman container's annotations are its runner's to write: claiming a
// Kubernetes pod or another image through them (as CRI-O's say) is not
// believed.
func TestPodmanAnnotationsClaimNoPod(t *testing.T) {
	tbl := startTable(t, Options{})
	id := testenv.StartContainer(t, []string{"--annotation", "io.kubernetes.pod.name=kube-apiserver-node1",
		"--annotation", "io.kubernetes.pod.namespace=kube-system", "--annotation", "io.kubernetes.container.name=kube-apiserver",
		"--annotation", "io.kubernetes.cri-o.ImageName=registry.k8s.io/kube-apiserver:v1.31.0"}, "sleep", "1000")
	pid := testenv.Podman(t, "inspect", "-f", "{{.State.Pid}}", id)
	cgID := cgroupIDOf(t, tbl.CgroupRoot(), cgroupOfPID(t, pid))
	c := waitResolved(t, tbl, cgID, 5*time.Second, func(c *event.Container) bool { return c != nil && c.Image != "" })
	if c.Pod != nil || c.Image != testenv.TestImage || c.Name == "kube-apiserver" {
		t.Errorf("a podman container's annotations were believed: pod %+v image %q name %q", c.Pod, c.Image, c.Name)
	}
}

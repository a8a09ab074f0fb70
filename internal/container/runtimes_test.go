package container

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mamori-dev/mamori/internal/event"
	"github.com/mamori-dev/mamori/internal/testenv"
)

// run runs a command and returns trimmed stdout, failing the test on error.
func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// daemon is a runtime daemon a test started in a private directory.
type daemon struct {
	dir string
	cmd *exec.Cmd
}

// startDaemon starts name with args, waits until ready() succeeds, and at
// cleanup stops it and removes dir with any mounts left under it.
func startDaemon(t testing.TB, dir string, ready func() error, name string, args ...string) *daemon {
	t.Helper()
	logf, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	d := &daemon{dir: dir, cmd: cmd}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		logf.Close()
		unmountUnder(dir)
		_ = os.RemoveAll(dir)
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := ready()
		if err == nil {
			return d
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logf.Name())
			t.Fatalf("%s not ready: %v\n%s", name, err, log)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// unmountUnder lazily unmounts every mount below dir, deepest first.
func unmountUnder(dir string) {
	mounts, err := readMountinfo("/proc/self/mountinfo")
	if err != nil {
		return
	}
	for i := len(mounts) - 1; i >= 0; i-- {
		if strings.HasPrefix(mounts[i].point, dir+"/") {
			_ = syscall.Unmount(mounts[i].point, syscall.MNT_DETACH)
		}
	}
}

// saveTestImage writes the shared busybox test image as a docker-archive
// tarball both containerd and Docker can load.
func saveTestImage(t testing.TB, dir string) string {
	t.Helper()
	testenv.EnsureImage(t)
	tar := filepath.Join(dir, "image.tar")
	run(t, "podman", "save", "--format", "docker-archive", "-o", tar, testenv.TestImage)
	return tar
}

// TestContainerdCRI runs real containerd (in a private root/state) and
// creates tasks the way the CRI plugin does: a kubepods cgroup and the
// io.kubernetes.cri.* annotations in the bundle spec. What is not proven
// here: the kubelet and CRI plugin themselves (no Kubernetes on this
// machine), and the systemd cgroup driver (no systemd); the systemd-style
// cgroup names are created through runc's cgroupfs driver instead.
func TestContainerdCRI(t *testing.T) {
	requireBinaries(t, "containerd", "ctr", "containerd-shim-runc-v2", "runc", "podman")
	root := testRoot(t)
	dir, err := os.MkdirTemp("", "mamori-ctrd-")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "c.sock")
	cfg := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfg, []byte("version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	startDaemon(t, dir, func() error {
		return exec.Command("ctr", "-a", sock, "version").Run()
	}, "containerd", "--config", cfg, "--root", filepath.Join(dir, "root"), "--state", filepath.Join(dir, "state"), "--address", sock)
	ctr := func(args ...string) string {
		return run(t, "ctr", append([]string{"-a", sock, "-n", "k8s.io"}, args...)...)
	}
	ctr("images", "import", saveTestImage(t, dir))

	podUID := "0f1e2d3c-4b5a-6978-8796-" + randHex(t, 12)
	criID, plainID := randHex(t, 64), randHex(t, 64)
	criCg := "/kubepods/besteffort/pod" + podUID + "/" + criID
	plainCg := "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + strings.ReplaceAll(podUID, "-", "_") +
		".slice/cri-containerd-" + plainID + ".scope"
	t.Cleanup(func() {
		for _, id := range []string{criID, plainID} {
			_ = exec.Command("ctr", "-a", sock, "-n", "k8s.io", "task", "kill", "-s", "KILL", id).Run()
			time.Sleep(200 * time.Millisecond)
			_ = exec.Command("ctr", "-a", sock, "-n", "k8s.io", "task", "rm", "-f", id).Run()
			_ = exec.Command("ctr", "-a", sock, "-n", "k8s.io", "container", "rm", id).Run()
		}
		removeCgroupTree(root, filepath.Dir(criCg))
		removeCgroupTree(root, filepath.Dir(plainCg))
	})
	ctr("run", "-d", "--cgroup", criCg,
		"--annotation", annoContainerType+"=container",
		"--annotation", annoSandboxName+"=web-0",
		"--annotation", annoSandboxNS+"=shop",
		"--annotation", annoSandboxUID+"="+podUID,
		"--annotation", annoContainerName+"=app",
		"--annotation", annoImageName+"=registry.example/app:1.0",
		"--label", "mamori.test=cri",
		testenv.TestImage, criID, "sleep", "1000")
	ctr("run", "-d", "--privileged", "--cgroup", plainCg, "--label", "mamori.test=plain", testenv.TestImage, plainID, "sleep", "1000")
	// Not made by the CRI plugin, outside Kubernetes' cgroups, with pod
	// labels (as an image's would be, merged by a client): no pod.
	claimID := randHex(t, 64)
	claimCg := "/mamori-test.slice/cri-containerd-" + claimID + ".scope"
	t.Cleanup(func() {
		_ = exec.Command("ctr", "-a", sock, "-n", "k8s.io", "task", "kill", "-s", "KILL", claimID).Run()
		time.Sleep(200 * time.Millisecond)
		_ = exec.Command("ctr", "-a", sock, "-n", "k8s.io", "task", "rm", "-f", claimID).Run()
		_ = exec.Command("ctr", "-a", sock, "-n", "k8s.io", "container", "rm", claimID).Run()
		removeCgroupTree(root, claimCg)
	})
	ctr("run", "-d", "--cgroup", claimCg, "--label", "io.kubernetes.pod.name=kube-apiserver-node1",
		"--label", "io.kubernetes.pod.namespace=kube-system", testenv.TestImage, claimID, "sleep", "1000")

	tbl := startTable(t, Options{CgroupRoot: root, ContainerdState: filepath.Join(dir, "state"), ContainerdRoot: filepath.Join(dir, "root")})

	c := waitResolved(t, tbl, cgroupIDOf(t, root, criCg), 5*time.Second, func(c *event.Container) bool { return c != nil && c.Pod != nil && c.Pod.Name != "" })
	if c.ID != criID || c.Runtime != RuntimeContainerd || c.Name != "app" || c.Image != "registry.example/app:1.0" {
		t.Errorf("CRI container: %+v", c)
	}
	if want := (event.Pod{Name: "web-0", Namespace: "shop", UID: podUID, ContainerName: "app"}); *c.Pod != want {
		t.Errorf("pod = %+v, want %+v", *c.Pod, want)
	}
	if c.Labels["mamori.test"] != "cri" || c.Privileged {
		t.Errorf("labels %v privileged %v", c.Labels, c.Privileged)
	}
	ctr("task", "exec", "--exec-id", "w1", criID, "sh", "-c", "echo mamori > /root/written")
	if data, err := os.ReadFile(filepath.Join(c.UpperDir, "root", "written")); err != nil || strings.TrimSpace(string(data)) != "mamori" {
		t.Errorf("file written in container not under UpperDir %q: %v", c.UpperDir, err)
	}

	p := waitResolved(t, tbl, cgroupIDOf(t, root, plainCg), 5*time.Second, func(c *event.Container) bool { return c != nil && c.Image != "" })
	if p.ID != plainID || p.Runtime != RuntimeContainerd || p.Name != plainID || p.Image != testenv.TestImage || !p.Privileged {
		t.Errorf("plain containerd container: %+v", p)
	}
	if p.Labels["mamori.test"] != "plain" || p.Pod == nil || p.Pod.UID != podUID || p.Pod.Name != "" {
		t.Errorf("plain container labels %v pod %+v (uid only, from the path)", p.Labels, p.Pod)
	}
	if p.UpperDir == "" || !isDir(p.UpperDir) {
		t.Errorf("plain container UpperDir %q", p.UpperDir)
	}
	cl := waitResolved(t, tbl, cgroupIDOf(t, root, claimCg), 5*time.Second, func(c *event.Container) bool { return c != nil && c.Image != "" })
	if cl.Pod != nil || cl.Labels["io.kubernetes.pod.name"] != "kube-apiserver-node1" {
		t.Errorf("a container claiming a pod by its labels: pod %+v labels %v", cl.Pod, cl.Labels)
	}
}

// TestDocker runs a real dockerd (private data root and socket) and checks
// resolution through the Engine API and through its files when the API is
// unreachable.
func TestDocker(t *testing.T) {
	requireBinaries(t, "dockerd", "docker", "podman")
	root := testRoot(t)
	dir, err := os.MkdirTemp("", "mamori-dk-")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "d.sock")
	dataRoot := filepath.Join(dir, "root")
	docker := func(args ...string) string {
		return run(t, "docker", append([]string{"-H", "unix://" + sock}, args...)...)
	}
	startDaemon(t, dir, func() error {
		return exec.Command("docker", "-H", "unix://"+sock, "version").Run()
	}, "dockerd", "--iptables=false", "--bridge=none", "--data-root", dataRoot,
		"--exec-root", filepath.Join(dir, "exec"), "--pidfile", filepath.Join(dir, "pid"), "-H", "unix://"+sock)
	docker("load", "-i", saveTestImage(t, dir))

	name := "mamori-dk-" + randHex(t, 8)
	// Pod labels on a container Kubernetes did not make (as an image's
	// labels would be) claim nothing.
	id := docker("run", "-d", "--network", "none", "--name", name, "--label", "mamori.test=docker",
		"--label", "io.kubernetes.pod.name=kube-apiserver-node1", "--label", "io.kubernetes.pod.namespace=kube-system",
		testenv.TestImage, "sleep", "1000")
	// No --privileged case: Docker gives such containers every capability,
	// and this VM lacks CAP_SYS_RESOURCE, so runc refuses to start them.
	t.Cleanup(func() { _ = exec.Command("docker", "-H", "unix://"+sock, "rm", "-f", id).Run() })
	cgPath := cgroupOfPID(t, docker("inspect", "-f", "{{.State.Pid}}", id))
	if ref, ok := ParsePath(cgPath); !ok || ref.Runtime != RuntimeDocker || ref.ID != id {
		t.Fatalf("real docker cgroup %q parsed as %+v %v", cgPath, ref, ok)
	}
	cgID := cgroupIDOf(t, root, cgPath)
	imageID := docker("inspect", "-f", "{{.Image}}", id)

	// Each mode is denied the other's source, so each proves its own.
	for _, mode := range []struct {
		name, socket, root string
	}{{"api", sock, filepath.Join(dir, "no-such-root")}, {"files", filepath.Join(dir, "no-such.sock"), dataRoot}} {
		t.Run(mode.name, func(t *testing.T) {
			tbl := startTable(t, Options{CgroupRoot: root, DockerSocket: mode.socket, DockerRoot: mode.root})
			c := waitResolved(t, tbl, cgID, 5*time.Second, func(c *event.Container) bool { return c != nil && c.Name != "" })
			if c.ID != id || c.Runtime != RuntimeDocker || c.Name != name || c.Image != testenv.TestImage || c.ImageID != imageID {
				t.Errorf("docker container: %+v (want image id %s)", c, imageID)
			}
			if c.Labels["mamori.test"] != "docker" || c.Privileged || c.Pod != nil {
				t.Errorf("labels %v privileged %v pod %+v", c.Labels, c.Privileged, c.Pod)
			}
			file := "written-" + mode.name
			docker("exec", id, "sh", "-c", "echo mamori > /root/"+file)
			if data, err := os.ReadFile(filepath.Join(c.UpperDir, "root", file)); err != nil || strings.TrimSpace(string(data)) != "mamori" {
				t.Errorf("file written in container not under UpperDir %q: %v", c.UpperDir, err)
			}
		})
	}
}

package container

import (
	"bytes"
	"encoding/binary"
	"hash/fnv"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/mamori-dev/mamori/internal/event"
)

func TestParseMountinfo(t *testing.T) {
	data := []byte(`30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
41 99 0:37 /kubepods /host/cg rw - cgroup2 cgroup2 rw
45 41 0:39 / /var/lib/containers/storage/overlay/abc/merged rw,relatime - overlay overlay rw,lowerdir=/l/A:/l/B,upperdir=/var/lib/with\054comma\040space/diff,workdir=/w
garbage line
46 41 0:39 / /mnt/x rw shared:4 master:2 - overlay overlay rw,upperdir=/u2
47 41 0:39 / /trunc rw -
`)
	m := parseMountinfo(data)
	if got := cgroup2Root(m); got != "/sys/fs/cgroup/unified" {
		t.Errorf("cgroup2Root = %q", got)
	}
	if got := upperDirAt(m, "/var/lib/containers/storage/overlay/abc/merged"); got != "/var/lib/with,comma space/diff" {
		t.Errorf("upperDirAt = %q", got)
	}
	if got := upperDirAt(m, "/mnt/x"); got != "/u2" {
		t.Errorf("upperDirAt with optional fields = %q", got)
	}
	if got := upperDirAt(m, "/nope"); got != "" {
		t.Errorf("upperDirAt(missing) = %q", got)
	}
	pure := parseMountinfo([]byte("25 1 0:22 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"))
	if got := cgroup2Root(pure); got != "/sys/fs/cgroup" {
		t.Errorf("pure v2 cgroup2Root = %q", got)
	}
	for _, s := range []string{`\`, `\0`, `\05`, `\777x`, `a\134b`} {
		_ = unescapeOctal(s) // must not panic
	}
	if got := unescapeOctal(`a\134b\040`); got != `a\b ` {
		t.Errorf("unescapeOctal = %q", got)
	}
}

func TestDetectCgroup2RootHere(t *testing.T) {
	root, err := detectCgroup2Root("/proc/self/mountinfo")
	if err != nil {
		t.Skipf("no cgroup v2 here: %v", err)
	}
	if _, _, err := statCgroup(root); err != nil {
		t.Fatalf("detected root %s: %v", root, err)
	}
}

func TestSpecPrivileged(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) *ociSpec {
		p := filepath.Join(dir, "config.json")
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		sp, err := readSpec(p)
		if err != nil {
			t.Fatal(err)
		}
		return sp
	}
	priv := write(`{"process":{"capabilities":{"bounding":["CAP_CHOWN","CAP_SYS_ADMIN"]}},"linux":{}}`)
	if !priv.looksPrivileged() {
		t.Error("all caps and no masked paths should look privileged")
	}
	def := write(`{"process":{"capabilities":{"bounding":["CAP_SYS_ADMIN"]}},"linux":{"maskedPaths":["/proc/kcore"]}}`)
	if def.looksPrivileged() {
		t.Error("masked paths mean not privileged")
	}
	if sp := write(`{"root":{"path":"rootfs"}}`); sp.rootPath("/b") != "/b/rootfs" {
		t.Errorf("relative root = %q", sp.rootPath("/b"))
	}
	if _, err := readSpec(filepath.Join(dir, "missing.json")); err == nil {
		t.Error("missing spec should fail")
	}
	if err := os.WriteFile(filepath.Join(dir, "bad.json"), []byte(`{"annotations":[1,2`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readSpec(filepath.Join(dir, "bad.json")); err == nil {
		t.Error("garbage spec should fail")
	}
}

func TestCriOAnnotations(t *testing.T) {
	// The annotation names cri-o writes into the bundle (cri-o cannot run
	// here; podman, which shares the format, is tested for real).
	c := &event.Container{ID: hexA, Runtime: RuntimeCRIO}
	applyStorageAnnotations(c, map[string]string{
		"io.kubernetes.pod.name":        "web-0",
		"io.kubernetes.pod.namespace":   "shop",
		"io.kubernetes.pod.uid":         "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
		"io.kubernetes.container.name":  "nginx",
		"io.kubernetes.cri-o.ImageName": "docker.io/library/nginx:1.27",
		"io.kubernetes.cri-o.Labels":    `{"app":"web","io.kubernetes.pod.name":"web-0"}`,
	})
	if c.Name != "nginx" || c.Image != "docker.io/library/nginx:1.27" || c.Pod == nil ||
		c.Pod.Name != "web-0" || c.Pod.Namespace != "shop" || c.Pod.ContainerName != "nginx" || c.Labels["app"] != "web" {
		t.Fatalf("cri-o annotations: %+v pod %+v", c, c.Pod)
	}
}

func TestCopyLabelsBounded(t *testing.T) {
	big := map[string]string{}
	for i := 0; i < 1000; i++ {
		big[string(rune('a'+i%26))+string(bytes.Repeat([]byte{'k'}, i))] = string(bytes.Repeat([]byte{'v'}, 5000))
	}
	out := copyLabels(big)
	if len(out) != maxLabels {
		t.Fatalf("labels kept: %d", len(out))
	}
	for k, v := range out {
		if len(k) > maxLabelLen || len(v) > maxLabelLen {
			t.Fatalf("label not clipped: %d/%d", len(k), len(v))
		}
	}
}

// buildBolt writes a tiny valid bolt file by hand: two meta pages and one
// leaf page holding a bucket "b" with an inline leaf {"k": "v"}.
func buildBolt(t testing.TB) []byte {
	const ps = 4096
	le := binary.LittleEndian
	file := make([]byte, 4*ps)
	for i := 0; i < 2; i++ {
		p := file[i*ps:]
		le.PutUint64(p, uint64(i))
		le.PutUint16(p[8:], 0x04)
		m := p[boltPageHeader:]
		le.PutUint32(m[0:], boltMagic)
		le.PutUint32(m[4:], 2)
		le.PutUint32(m[8:], ps)
		le.PutUint64(m[16:], 3) // root bucket page
		le.PutUint64(m[32:], 2) // freelist
		le.PutUint64(m[40:], 4)
		le.PutUint64(m[48:], uint64(i)) // txid
		h := fnv.New64a()
		h.Write(m[:56])
		le.PutUint64(m[56:], h.Sum64())
	}
	// inline bucket value: header {root 0, seq 0} + leaf page with k=v
	inline := make([]byte, 16+boltPageHeader+boltElemSize+2)
	ip := inline[16:]
	le.PutUint16(ip[8:], boltLeafPage)
	le.PutUint16(ip[10:], 1)
	le.PutUint32(ip[boltPageHeader+4:], boltElemSize) // pos from element start
	le.PutUint32(ip[boltPageHeader+8:], 1)
	le.PutUint32(ip[boltPageHeader+12:], 1)
	copy(ip[boltPageHeader+boltElemSize:], "kv")
	// root leaf page 3 with element "b" → inline bucket
	p := file[3*ps:]
	le.PutUint64(p, 3)
	le.PutUint16(p[8:], boltLeafPage)
	le.PutUint16(p[10:], 1)
	le.PutUint32(p[boltPageHeader:], boltBucketLeaf)
	le.PutUint32(p[boltPageHeader+4:], boltElemSize)
	le.PutUint32(p[boltPageHeader+8:], 1)
	le.PutUint32(p[boltPageHeader+12:], uint32(len(inline)))
	copy(p[boltPageHeader+boltElemSize:], "b")
	copy(p[boltPageHeader+boltElemSize+1:], inline)
	return file
}

func TestBoltSynthetic(t *testing.T) {
	file := buildBolt(t)
	db, err := openBolt(bytes.NewReader(file), int64(len(file)))
	if err != nil {
		t.Fatal(err)
	}
	b, ok, err := db.rootBucket().sub("b")
	if err != nil || !ok {
		t.Fatalf("sub b: %v %v", ok, err)
	}
	v, ok, err := b.value("k")
	if err != nil || !ok || string(v) != "v" {
		t.Fatalf("b/k = %q %v %v", v, ok, err)
	}
	if _, ok, _ := b.value("x"); ok {
		t.Fatal("found a missing key")
	}
}

// TestBoltGarbage flips random bytes in a valid file: every read must end
// in a value or an error, never a panic or a hang.
func TestBoltGarbage(t *testing.T) {
	orig := buildBolt(t)
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 20000; i++ {
		f := append([]byte(nil), orig...)
		for j := 0; j < 1+rng.Intn(8); j++ {
			f[rng.Intn(len(f))] = byte(rng.Intn(256))
		}
		if i%7 == 0 {
			f = f[:rng.Intn(len(f))]
		}
		db, err := openBolt(bytes.NewReader(f), int64(len(f)))
		if err != nil {
			continue
		}
		if b, ok, err := db.rootBucket().sub("b"); err == nil && ok {
			_, _, _ = b.value("k")
			_, _ = b.stringMap(10)
		}
	}
}

func FuzzBolt(f *testing.F) {
	f.Add(buildBolt(f))
	f.Fuzz(func(t *testing.T, data []byte) {
		db, err := openBolt(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		_, _, _ = db.rootBucket().subPath("ctr", "x")
		_ = db.rootBucket().walk(func(boltElem) error { return nil })
	})
}

func FuzzMountinfo(f *testing.F) {
	f.Add([]byte("45 41 0:39 / /m rw - overlay overlay rw,upperdir=/u\\040x\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m := parseMountinfo(data)
		_ = cgroup2Root(m)
		for _, x := range m {
			_ = x.option("upperdir")
		}
	})
}

// A Docker container's pod labels count only on a container Kubernetes
// named: Docker merges the image's labels into the container's, so an
// image could otherwise claim any pod.
func TestDockerPodNeedsKubernetesName(t *testing.T) {
	labels := map[string]string{"io.kubernetes.pod.name": "kube-apiserver-node1", "io.kubernetes.pod.namespace": "kube-system",
		"io.kubernetes.pod.uid": "0a1b2c3d-0000-4000-8000-000000000001", "io.kubernetes.container.name": "kube-apiserver"}
	for name, want := range map[string]bool{
		"k8s_kube-apiserver_kube-apiserver-node1_kube-system_0a1b2c3d-0000-4000-8000-000000000001_0": true,
		"k8s_POD_kube-apiserver-node1_kube-system_0a1b2c3d-0000-4000-8000-000000000001_0":            true,
		"evil-miner": false,
		"k8s_kube-apiserver_kube-apiserver-node1_default_0a1b2c3d-0000-4000-8000-000000000001_0": false,
		"k8s_kube-apiserver_other_kube-system_0a1b2c3d-0000-4000-8000-000000000001_0":            false,
		"k8s_x_kube-apiserver-node1_kube-system_0a1b2c3d-0000-4000-8000-000000000001":            false,
	} {
		if p := dockerPod(name, labels); (p != nil) != want {
			t.Errorf("%s: pod %+v, want one: %v", name, p, want)
		}
	}
}

// The writable layer is the container's to shape: a link it makes there
// must not lead the agent to the host's files.
func TestInUpperLayerFollowsNoLinks(t *testing.T) {
	up := t.TempDir()
	if err := os.MkdirAll(filepath.Join(up, "usr", "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(up, "usr", "bin", "dropped"), []byte("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, target := range map[string]string{"lnk": "/usr/bin", "rel": "../../../../../../usr/bin", "file": "/usr/bin/env"} {
		if err := os.Symlink(target, filepath.Join(up, name)); err != nil {
			t.Fatal(err)
		}
	}
	c := &event.Container{UpperDir: up}
	for path, want := range map[string]bool{
		"/usr/bin/dropped":             true,
		"/lnk/env":                     false, // the host's /usr/bin/env, through the link
		"/rel/env":                     false,
		"/file":                        false,
		"/usr/../../../../usr/bin/env": false,
		"/usr/bin/missing":             false,
		"/":                            false,
		"relative":                     false,
	} {
		if got := InUpperLayer(c, path); got != want {
			t.Errorf("InUpperLayer(%q) = %v, want %v", path, got, want)
		}
	}
}

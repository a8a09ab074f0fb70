package container

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/mamori-dev/mamori/internal/event"
)

// containerd keeps a running task's OCI bundle in
// <state>/io.containerd.runtime.v2.task/<namespace>/<id>/config.json. The
// CRI plugin writes the pod identity into that spec's annotations, so
// Kubernetes containers are identified from a file that exists before the
// task's cgroup does. The metadata database adds the image reference and
// labels for containers created outside Kubernetes (ctr, nerdctl, Docker's
// own containerd namespace "moby").

const (
	annoContainerType = "io.kubernetes.cri.container-type"
	annoSandboxName   = "io.kubernetes.cri.sandbox-name"
	annoSandboxNS     = "io.kubernetes.cri.sandbox-namespace"
	annoSandboxUID    = "io.kubernetes.cri.sandbox-uid"
	annoContainerName = "io.kubernetes.cri.container-name"
	annoImageName     = "io.kubernetes.cri.image-name"
	maxNamespaces     = 64
)

type containerdReader struct {
	state string // /run/containerd
	root  string // /var/lib/containerd
}

// resolve fills c from the task bundle; errNotFound when no namespace has
// a bundle for the id.
func (r *containerdReader) resolve(c *event.Container, mounts func() []mount) error {
	tasks := filepath.Join(r.state, "io.containerd.runtime.v2.task")
	nss, err := os.ReadDir(tasks)
	if err != nil {
		return err
	}
	if len(nss) > maxNamespaces {
		nss = nss[:maxNamespaces]
	}
	for _, ns := range nss {
		bundle := filepath.Join(tasks, ns.Name(), c.ID)
		spec, err := readSpec(filepath.Join(bundle, "config.json"))
		if err != nil {
			continue
		}
		r.apply(c, ns.Name(), bundle, spec, mounts)
		return nil
	}
	return errNotFound
}

func (r *containerdReader) apply(c *event.Container, ns, bundle string, spec *ociSpec, mounts func() []mount) {
	a := spec.Annotations
	c.Name = c.ID // containerd containers have only an id unless CRI names them
	if a[annoSandboxName] != "" {
		c.Pod = &event.Pod{
			Name:          a[annoSandboxName],
			Namespace:     a[annoSandboxNS],
			UID:           a[annoSandboxUID],
			ContainerName: a[annoContainerName],
		}
		switch {
		case a[annoContainerName] != "":
			c.Name = a[annoContainerName]
		case a[annoContainerType] == "sandbox":
			// The pause container: name it after its pod, as kubectl does.
			c.Name = a[annoSandboxName]
		}
	}
	c.Image = a[annoImageName]
	c.Privileged = spec.looksPrivileged()
	if root := spec.rootPath(bundle); root != "" {
		c.UpperDir = upperDirAt(mounts(), root)
	}
	if r.root == "" {
		return
	}
	image, labels, err := containerdMeta(filepath.Join(r.root, "io.containerd.metadata.v1.bolt", "meta.db"), ns, c.ID)
	if err != nil {
		return
	}
	if c.Image == "" {
		c.Image = image
	}
	c.Labels = copyLabels(labels)
	// The CRI plugin labels its containers with their pod, over the image's
	// labels it merges, and marks them with io.cri-containerd.kind. Other
	// clients (nerdctl) may carry an image's labels: they claim no pod.
	if c.Pod == nil && labels["io.cri-containerd.kind"] != "" {
		c.Pod = podFromLabels(labels)
	}
}

// containerdMeta reads v1/<ns>/containers/<id>/{image,labels} from
// containerd's metadata database.
func containerdMeta(dbPath, ns, id string) (string, map[string]string, error) {
	db, closeFn, err := openBoltFile(dbPath)
	if err != nil {
		return "", nil, err
	}
	defer closeFn()
	b, ok, err := db.rootBucket().subPath("v1", ns, "containers", id)
	if err != nil || !ok {
		return "", nil, fmt.Errorf("containerd db %s: %s/%s not found: %v", dbPath, ns, id, err)
	}
	img, _, err := b.value("image")
	if err != nil {
		return "", nil, fmt.Errorf("containerd db %s: image of %s: %w", dbPath, id, err)
	}
	var labels map[string]string
	if lb, ok, err := b.sub("labels"); err == nil && ok {
		labels, _ = lb.stringMap(maxLabels)
	}
	return clip(string(img), maxLabelLen), labels, nil
}

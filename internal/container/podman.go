package container

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/mamori-dev/mamori/internal/event"
)

// containers/storage is shared by podman and cri-o: containers.json names
// each container and its writable layer, images.json names images, and the
// OCI bundle config.json sits in overlay-containers/<id>/userdata. Layout
// checked against podman 4.3 with the overlay driver.

type storageContainer struct {
	ID       string   `json:"id"`
	Names    []string `json:"names"`
	Image    string   `json:"image"`
	Layer    string   `json:"layer"`
	Metadata string   `json:"metadata"` // JSON in a string: image-name, name
}

type storageImage struct {
	ID    string   `json:"id"`
	Names []string `json:"names"`
}

// fileCache keeps one parsed file until its size or mtime changes, so a
// burst of container starts does not re-read containers.json each time.
type fileCache[T any] struct {
	mtime time.Time
	size  int64
	val   T
	ok    bool
}

func (c *fileCache[T]) load(path string, parse func([]byte) (T, error)) (T, error) {
	st, err := os.Stat(path)
	if err != nil {
		var zero T
		return zero, err
	}
	if c.ok && st.ModTime().Equal(c.mtime) && st.Size() == c.size {
		return c.val, nil
	}
	data, err := readBounded(path, maxJSONFile)
	if err != nil {
		var zero T
		return zero, err
	}
	v, err := parse(data)
	if err != nil {
		var zero T
		return zero, fmt.Errorf("parse %s: %w", path, err)
	}
	c.mtime, c.size, c.val, c.ok = st.ModTime(), st.Size(), v, true
	return v, nil
}

type storageReader struct {
	root    string // graph root, /var/lib/containers/storage
	runRoot string // /run/containers/storage
	ctrs    fileCache[map[string]storageContainer]
	imgs    fileCache[map[string]storageImage]
}

func parseStorageContainers(data []byte) (map[string]storageContainer, error) {
	var list []storageContainer
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, err
	}
	m := make(map[string]storageContainer, len(list))
	for _, c := range list {
		m[c.ID] = c
	}
	return m, nil
}

func parseStorageImages(data []byte) (map[string]storageImage, error) {
	var list []storageImage
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, err
	}
	m := make(map[string]storageImage, len(list))
	for _, i := range list {
		m[i.ID] = i
	}
	return m, nil
}

var errNotFound = errors.New("container not found")

// resolve fills c (ID and Runtime already set) from containers/storage.
// It returns errNotFound when the storage does not know the id (yet).
func (s *storageReader) resolve(c *event.Container, mounts func() []mount) error {
	ctrs, err := s.ctrs.load(filepath.Join(s.root, "overlay-containers", "containers.json"), parseStorageContainers)
	if err != nil {
		return err
	}
	sc, ok := ctrs[c.ID]
	if !ok {
		return errNotFound
	}
	if len(sc.Names) > 0 {
		c.Name = sc.Names[0]
	}
	c.ImageID = sc.Image
	var meta struct {
		ImageName string `json:"image-name"`
	}
	if sc.Metadata != "" && json.Unmarshal([]byte(sc.Metadata), &meta) == nil {
		c.Image = meta.ImageName
	}
	if c.Image == "" && sc.Image != "" {
		if imgs, err := s.imgs.load(filepath.Join(s.root, "overlay-images", "images.json"), parseStorageImages); err == nil {
			if im, ok := imgs[sc.Image]; ok && len(im.Names) > 0 {
				c.Image = im.Names[0]
			}
		}
	}

	spec, bundle := s.spec(c.ID)
	if spec != nil {
		// CRI-O writes its pod's identity in the annotations. Podman's are
		// the runner's (--annotation): a podman container claiming a
		// Kubernetes pod or another image through them is not believed.
		if c.Runtime == RuntimeCRIO {
			applyStorageAnnotations(c, spec.Annotations)
		}
		if spec.Annotations["io.podman.annotations.privileged"] == "TRUE" || spec.looksPrivileged() {
			c.Privileged = true
		}
	}
	// A container on a directory of the host (--rootfs DIR:O) writes to an
	// overlay podman keeps beside its run state (mounted in the container's
	// namespace only); the storage layer it also has stays empty.
	if s.runRoot != "" {
		if up := filepath.Join(s.runRoot, "overlay-containers", c.ID, "rootfs", "upper"); isDir(up) {
			c.UpperDir = up
		}
	}
	if c.UpperDir == "" && sc.Layer != "" {
		if up := filepath.Join(s.root, "overlay", sc.Layer, "diff"); isDir(up) {
			c.UpperDir = up
		}
	}
	if c.UpperDir == "" && spec != nil {
		// Another storage driver or layout: ask the mount table.
		if root := spec.rootPath(bundle); root != "" {
			c.UpperDir = upperDirAt(mounts(), root)
		}
	}
	if c.Runtime == RuntimePodman {
		if labels, err := podmanLabels(filepath.Join(s.root, "libpod", "bolt_state.db"), c.ID); err == nil && len(labels) > 0 {
			c.Labels = copyLabels(labels)
		}
	}
	return nil
}

// spec reads the container's bundle config.json from the graph root, or
// the run root where cri-o may keep it.
func (s *storageReader) spec(id string) (*ociSpec, string) {
	for _, root := range []string{s.root, s.runRoot} {
		if root == "" {
			continue
		}
		bundle := filepath.Join(root, "overlay-containers", id, "userdata")
		if sp, err := readSpec(filepath.Join(bundle, "config.json")); err == nil {
			return sp, bundle
		}
	}
	return nil, ""
}

// applyStorageAnnotations reads cri-o's Kubernetes annotations (podman
// shares the bundle format and sets none of them).
func applyStorageAnnotations(c *event.Container, a map[string]string) {
	if p := podFromLabels(a); p != nil {
		c.Pod = p
		if p.ContainerName != "" {
			c.Name = p.ContainerName
		}
	}
	if img := a["io.kubernetes.cri-o.ImageName"]; img != "" {
		c.Image = img
	}
	if raw := a["io.kubernetes.cri-o.Labels"]; raw != "" && len(raw) < maxSmallFile {
		var l map[string]string
		if json.Unmarshal([]byte(raw), &l) == nil {
			c.Labels = copyLabels(l)
		}
	}
}

// podmanLabels reads a container's labels from libpod's bolt database,
// the only place podman keeps them (bucket ctr/<id>, key config).
// podman 5 defaults to a SQLite database instead; there labels stay empty.
func podmanLabels(dbPath, id string) (map[string]string, error) {
	db, closeFn, err := openBoltFile(dbPath)
	if err != nil {
		return nil, err
	}
	defer closeFn()
	b, ok, err := db.rootBucket().subPath("ctr", id)
	if err != nil || !ok {
		return nil, fmt.Errorf("podman db %s: container %s not found: %v", dbPath, id, err)
	}
	raw, ok, err := b.value("config")
	if err != nil || !ok {
		return nil, fmt.Errorf("podman db %s: no config for %s: %v", dbPath, id, err)
	}
	var cfg struct {
		ID     string            `json:"id"`
		Labels map[string]string `json:"labels"`
	}
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return nil, fmt.Errorf("podman db %s: decode config of %s: %w", dbPath, id, err)
	}
	if cfg.ID != id {
		return nil, fmt.Errorf("podman db %s: config id %q does not match %s", dbPath, cfg.ID, id)
	}
	return cfg.Labels, nil
}

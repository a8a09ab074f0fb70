package container

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mamori-dev/mamori/internal/event"
)

// Docker is asked over its Engine API (GET /containers/<id>/json on the
// unix socket). When the daemon does not answer, the same facts are read
// from its data root (containers/<id>/config.v2.json and hostconfig.json),
// so a hung dockerd cannot leave containers unnamed.

const (
	dockerTimeout  = 1 * time.Second
	dockerCooldown = 5 * time.Second
	maxDockerBody  = 4 << 20
)

// dockerInspect is the part of the inspect document (and of config.v2.json,
// which has the same shape) that we use.
type dockerInspect struct {
	ID     string `json:"Id"`
	Name   string `json:"Name"`
	Image  string `json:"Image"`
	Config *struct {
		Image  string            `json:"Image"`
		Labels map[string]string `json:"Labels"`
	} `json:"Config"`
	HostConfig *struct {
		Privileged bool `json:"Privileged"`
	} `json:"HostConfig"`
	GraphDriver *struct {
		Data map[string]string `json:"Data"`
	} `json:"GraphDriver"`
}

type dockerReader struct {
	socket string // /var/run/docker.sock
	root   string // /var/lib/docker
	client *http.Client
	// downUntil skips the API after a failure so one hung daemon costs one
	// timeout per cooldown, not one per container.
	downUntil time.Time
}

func newDockerReader(socket, root string) *dockerReader {
	d := &dockerReader{socket: socket, root: root}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", socket)
		},
		DisableCompression: true,
		MaxIdleConns:       1,
		IdleConnTimeout:    30 * time.Second,
	}
	d.client = &http.Client{Transport: tr, Timeout: dockerTimeout}
	return d
}

func (d *dockerReader) resolve(ctx context.Context, c *event.Container) error {
	info, err := d.inspectAPI(ctx, c.ID)
	if err != nil {
		var ferr error
		if info, ferr = d.inspectFiles(c.ID); ferr != nil {
			return fmt.Errorf("docker %s: api: %v; files: %w", c.ID, err, ferr)
		}
	}
	c.Name = strings.TrimPrefix(info.Name, "/")
	c.ImageID = info.Image
	if info.Config != nil {
		c.Image = info.Config.Image
		c.Labels = copyLabels(info.Config.Labels)
		c.Pod = dockerPod(c.Name, info.Config.Labels)
	}
	if info.HostConfig != nil {
		c.Privileged = info.HostConfig.Privileged
	}
	if info.GraphDriver != nil {
		c.UpperDir = info.GraphDriver.Data["UpperDir"]
	}
	if c.UpperDir == "" {
		c.UpperDir = d.upperFromLayerDB(c.ID)
	}
	return nil
}

// dockerPod is the pod of a container that Kubernetes made through
// dockershim or cri-dockerd: they name it k8s_<container>_<pod>_<namespace>_
// <pod uid>_<attempt> and label it to match. The labels alone prove
// nothing: Docker merges an image's labels into its containers', so any
// image run on a plain Docker host could claim to be kube-system's.
func dockerPod(name string, labels map[string]string) *event.Pod {
	p := podFromLabels(labels)
	if p == nil {
		return nil
	}
	f := strings.Split(name, "_")
	if len(f) != 6 || f[0] != "k8s" || f[1] == "" || f[2] != p.Name || f[3] != p.Namespace || f[4] != p.UID {
		return nil
	}
	return p
}

func (d *dockerReader) inspectAPI(ctx context.Context, id string) (*dockerInspect, error) {
	if d.socket == "" {
		return nil, fmt.Errorf("no docker socket configured")
	}
	if time.Now().Before(d.downUntil) {
		return nil, fmt.Errorf("docker api unavailable (cooling down)")
	}
	if _, err := os.Stat(d.socket); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, dockerTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker/containers/"+id+"/json", nil)
	if err != nil {
		return nil, err
	}
	resp, err := d.client.Do(req)
	if err != nil {
		d.downUntil = time.Now().Add(dockerCooldown)
		return nil, fmt.Errorf("docker api: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDockerBody+1))
	if err != nil {
		return nil, fmt.Errorf("docker api: read: %w", err)
	}
	if resp.StatusCode == http.StatusNotFound {
		return nil, errNotFound
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("docker api: %s", resp.Status)
	}
	if len(body) > maxDockerBody {
		return nil, fmt.Errorf("docker api: inspect body over %d bytes", maxDockerBody)
	}
	var info dockerInspect
	if err := json.Unmarshal(body, &info); err != nil {
		return nil, fmt.Errorf("docker api: decode: %w", err)
	}
	if info.ID != id {
		return nil, fmt.Errorf("docker api: asked for %s, got %q", id, info.ID)
	}
	return &info, nil
}

func (d *dockerReader) inspectFiles(id string) (*dockerInspect, error) {
	if d.root == "" {
		return nil, errNotFound
	}
	dir := filepath.Join(d.root, "containers", id)
	data, err := readBounded(filepath.Join(dir, "config.v2.json"), maxJSONFile)
	if err != nil {
		return nil, err
	}
	var info dockerInspect
	if err := json.Unmarshal(data, &info); err != nil {
		return nil, fmt.Errorf("decode config.v2.json: %w", err)
	}
	if info.ID != id {
		return nil, fmt.Errorf("config.v2.json of %s names %q", id, info.ID)
	}
	if hc, err := readBounded(filepath.Join(dir, "hostconfig.json"), maxJSONFile); err == nil {
		var h struct{ Privileged bool }
		if json.Unmarshal(hc, &h) == nil {
			info.HostConfig = &struct {
				Privileged bool `json:"Privileged"`
			}{h.Privileged}
		}
	}
	return &info, nil
}

// upperFromLayerDB finds the overlay2 upper dir through the container's
// mount id, for when the API did not report it.
func (d *dockerReader) upperFromLayerDB(id string) string {
	if d.root == "" {
		return ""
	}
	raw, err := readBounded(filepath.Join(d.root, "image", "overlay2", "layerdb", "mounts", id, "mount-id"), 256)
	if err != nil {
		return ""
	}
	mid := strings.TrimSpace(string(raw))
	if mid == "" || strings.ContainsAny(mid, "/.") {
		return ""
	}
	up := filepath.Join(d.root, "overlay2", mid, "diff")
	if !isDir(up) {
		return ""
	}
	return up
}

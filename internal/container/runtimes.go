package container

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// RuntimeStatus says whether the agent can read one container runtime's
// metadata. Containers of an unreachable runtime still get their id from
// the cgroup path, but no name, image or labels: coverage reports it.
type RuntimeStatus struct {
	Name      string
	Path      string // what the agent reads: a socket, database or directory
	Reachable bool
	Error     string
}

// runtimeProbeTimeout bounds a socket check, so a hung daemon delays a
// heartbeat by at most this much.
const runtimeProbeTimeout = 2 * time.Second

// Runtimes checks every runtime installed on this node. A runtime counts as
// installed when its daemon's socket exists (Docker, containerd) or its
// storage root does (podman, cri-o); one that is not installed is not
// listed, so a host without Docker is not Unhealthy for it.
func (t *Table) Runtimes(ctx context.Context) []RuntimeStatus {
	var out []RuntimeStatus
	o := t.opts
	if isDir(o.PodmanRoot) {
		out = append(out, checkStorageRoot(o.PodmanRoot))
	}
	if sock := filepath.Join(o.ContainerdState, "containerd.sock"); exists(sock) {
		db := filepath.Join(o.ContainerdRoot, "io.containerd.metadata.v1.bolt", "meta.db")
		st := RuntimeStatus{Name: RuntimeContainerd, Path: db, Reachable: true}
		if _, closeDB, err := openBoltFile(db); err != nil {
			st.Reachable, st.Error = false, err.Error()
		} else {
			closeDB()
		}
		out = append(out, st)
	}
	if exists(o.DockerSocket) {
		out = append(out, t.pingDocker(ctx))
	}
	return out
}

// checkStorageRoot checks the containers/storage graph root podman and
// cri-o share: its container list must be readable (absent is fine: no
// container was ever made).
func checkStorageRoot(root string) RuntimeStatus {
	st := RuntimeStatus{Name: RuntimePodman, Path: root, Reachable: true}
	list := filepath.Join(root, "overlay-containers", "containers.json")
	f, err := os.Open(list)
	switch {
	case err == nil:
		f.Close()
	case errors.Is(err, os.ErrNotExist):
		if _, err := os.ReadDir(root); err != nil {
			st.Reachable, st.Error = false, err.Error()
		}
	default:
		st.Reachable, st.Error = false, err.Error()
	}
	return st
}

// pingDocker asks the Docker daemon's API for /_ping.
func (t *Table) pingDocker(ctx context.Context) RuntimeStatus {
	st := RuntimeStatus{Name: RuntimeDocker, Path: t.opts.DockerSocket}
	ctx, cancel := context.WithTimeout(ctx, runtimeProbeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker/_ping", nil)
	if err != nil {
		st.Error = err.Error()
		return st
	}
	res, err := t.docker.client.Do(req)
	if err != nil {
		st.Error = err.Error()
		return st
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 1<<10))
	if res.StatusCode != http.StatusOK {
		st.Error = fmt.Sprintf("GET /_ping: %s", res.Status)
		return st
	}
	st.Reachable = true
	return st
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

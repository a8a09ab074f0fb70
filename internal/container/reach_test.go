package container

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mamori-dev/mamori/internal/testenv"
)

// statusOf returns the listed status of runtime name, or nil.
func statusOf(list []RuntimeStatus, name string) *RuntimeStatus {
	for i := range list {
		if list[i].Name == name {
			return &list[i]
		}
	}
	return nil
}

// unixListener listens on a fresh socket under dir.
func unixListener(t *testing.T, path string) net.Listener {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// Runtimes lists what is installed, reachable or not, with the path and the
// reason; what is not installed is not listed.
func TestRuntimeReachability(t *testing.T) {
	root := testRoot(t)
	dir := t.TempDir()
	none := filepath.Join(dir, "absent")

	t.Run("nothing installed", func(t *testing.T) {
		tbl := startTable(t, Options{CgroupRoot: root, PodmanRoot: none, ContainerdState: none, DockerSocket: none})
		if got := tbl.Runtimes(context.Background()); len(got) != 0 {
			t.Fatalf("runtimes listed on a node without any: %+v", got)
		}
	})

	t.Run("podman on this host", func(t *testing.T) {
		testenv.RequirePodman(t)
		testenv.EnsureImage(t)
		tbl := startTable(t, Options{CgroupRoot: root, ContainerdState: none, DockerSocket: none})
		st := statusOf(tbl.Runtimes(context.Background()), RuntimePodman)
		if st == nil || !st.Reachable || st.Path != "/var/lib/containers/storage" {
			t.Fatalf("podman: %+v", st)
		}
	})

	t.Run("docker daemon dead or alive", func(t *testing.T) {
		// A socket whose daemon hangs up: installed, unreachable.
		dead := filepath.Join(dir, "dead.sock")
		testenv.HangUp(t, "unix", dead)
		tbl := startTable(t, Options{CgroupRoot: root, PodmanRoot: none, ContainerdState: none, DockerSocket: dead})
		st := statusOf(tbl.Runtimes(context.Background()), RuntimeDocker)
		if st == nil || st.Reachable || st.Path != dead || st.Error == "" {
			t.Fatalf("docker with a dead socket: %+v", st)
		}
		// A socket answering the Engine API's ping (the real dockerd is
		// exercised by TestDocker): reachable.
		alive := filepath.Join(dir, "alive.sock")
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/_ping" {
				http.NotFound(w, r)
				return
			}
			_, _ = w.Write([]byte("OK"))
		})}
		al := unixListener(t, alive)
		go func() { _ = srv.Serve(al) }()
		t.Cleanup(func() { srv.Close() })
		tbl = startTable(t, Options{CgroupRoot: root, PodmanRoot: none, ContainerdState: none, DockerSocket: alive})
		if st := statusOf(tbl.Runtimes(context.Background()), RuntimeDocker); st == nil || !st.Reachable {
			t.Fatalf("docker answering ping: %+v", st)
		}
	})

	t.Run("containerd without its metadata", func(t *testing.T) {
		state := filepath.Join(dir, "ctrd-state")
		if err := os.MkdirAll(state, 0o700); err != nil {
			t.Fatal(err)
		}
		unixListener(t, filepath.Join(state, "containerd.sock"))
		ctrdRoot := filepath.Join(dir, "ctrd-root")
		tbl := startTable(t, Options{CgroupRoot: root, PodmanRoot: none, DockerSocket: none, ContainerdState: state, ContainerdRoot: ctrdRoot})
		st := statusOf(tbl.Runtimes(context.Background()), RuntimeContainerd)
		if st == nil || st.Reachable || !strings.HasSuffix(st.Path, "meta.db") || !strings.Contains(st.Error, "no such file") {
			t.Fatalf("containerd without meta.db: %+v", st)
		}
	})
}

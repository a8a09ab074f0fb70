package container

import (
	"strings"
	"testing"
)

const (
	hexA = "81c7df8b807432dbc9888d93602514047a25ee07632ae39d25950575086b2cee"
	hexB = "c375b15de1daa104f9832da914f5d336de7a13c580069b3f899bb8ba9e3434fa"
)

func TestParsePath(t *testing.T) {
	cases := []struct {
		path string
		want Ref
		ok   bool
	}{
		// podman, cgroupfs manager (this machine) and systemd manager
		{"/libpod_parent/libpod-" + hexA, Ref{Runtime: RuntimePodman, ID: hexA, Own: true}, true},
		{"/machine.slice/libpod-" + hexA + ".scope", Ref{Runtime: RuntimePodman, ID: hexA, Own: true}, true},
		{"/machine.slice/libpod-" + hexA + ".scope/container", Ref{Runtime: RuntimePodman, ID: hexA}, true},
		{"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-" + hexA + ".scope", Ref{Runtime: RuntimePodman, ID: hexA, Own: true}, true},
		// conmon runs on the host, not in the container
		{"/machine.slice/libpod-conmon-" + hexA + ".scope", Ref{}, false},
		{"/libpod_parent/conmon", Ref{}, false},
		// docker, cgroupfs and systemd drivers
		{"/docker/" + hexA, Ref{Runtime: RuntimeDocker, ID: hexA, Own: true}, true},
		{"/system.slice/docker-" + hexA + ".scope", Ref{Runtime: RuntimeDocker, ID: hexA, Own: true}, true},
		{"/docker/" + hexA + "/docker/" + hexB, Ref{Runtime: RuntimeDocker, ID: hexA}, true}, // nested: outer wins
		{"/system.slice/docker.service", Ref{}, false},
		// containerd CRI, systemd driver
		{"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0f1e2d3c_4b5a_6978_8796_a5b4c3d2e1f0.slice/cri-containerd-" + hexA + ".scope",
			Ref{Runtime: RuntimeContainerd, ID: hexA, PodUID: "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", Own: true}, true},
		{"/kubepods.slice/kubepods-pod0f1e2d3c_4b5a_6978_8796_a5b4c3d2e1f0.slice/cri-containerd-" + hexA + ".scope",
			Ref{Runtime: RuntimeContainerd, ID: hexA, PodUID: "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", Own: true}, true},
		// cri-o, systemd driver (and its conmon)
		{"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f1e2d3c_4b5a_6978_8796_a5b4c3d2e1f0.slice/crio-" + hexA + ".scope",
			Ref{Runtime: RuntimeCRIO, ID: hexA, PodUID: "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", Own: true}, true},
		{"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f1e2d3c_4b5a_6978_8796_a5b4c3d2e1f0.slice/crio-conmon-" + hexA + ".scope", Ref{}, false},
		// kubepods, cgroupfs driver: runtime must be probed
		{"/kubepods/besteffort/pod0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/" + hexA,
			Ref{Runtime: runtimeCRI, ID: hexA, PodUID: "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", Own: true}, true},
		{"/kubepods/pod0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/" + hexA,
			Ref{Runtime: runtimeCRI, ID: hexA, PodUID: "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", Own: true}, true},
		{"/kubepods/burstable/pod0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/crio-" + hexA,
			Ref{Runtime: RuntimeCRIO, ID: hexA, PodUID: "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", Own: true}, true},
		{"/kubepods/besteffort/pod0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", Ref{}, false},
		// ECS on EC2 (Docker ids) and Fargate (containerd "<task>-<n>")
		{"/ecs/5a8d1e2f3c4b4a5e9f7d6c5b4a3e2d1f/" + hexA, Ref{Runtime: RuntimeDocker, ID: hexA, Own: true}, true},
		{"/ecs/5a8d1e2f3c4b4a5e9f7d6c5b4a3e2d1f/5a8d1e2f3c4b4a5e9f7d6c5b4a3e2d1f-1234567890", Ref{Runtime: RuntimeContainerd, ID: "5a8d1e2f3c4b4a5e9f7d6c5b4a3e2d1f-1234567890", Own: true}, true},
		{"/ecs/5a8d1e2f3c4b4a5e9f7d6c5b4a3e2d1f", Ref{}, false},
		// host cgroups
		{"/", Ref{}, false},
		{"", Ref{}, false},
		{"/init.scope", Ref{}, false},
		{"/system.slice/sshd.service", Ref{}, false},
		{"/libpod_parent", Ref{}, false},
		// near misses must not match
		{"/libpod_parent/libpod-" + hexA[:63], Ref{}, false},
		{"/libpod_parent/libpod-" + strings.ToUpper(hexA), Ref{}, false},
		{"/docker/" + hexA + "x", Ref{}, false},
		{"/notdocker/" + hexA, Ref{}, false},
		{"/" + hexA, Ref{}, false},
	}
	for _, c := range cases {
		got, ok := ParsePath(c.path)
		if ok != c.ok || got != c.want {
			t.Errorf("ParsePath(%q) = %+v, %v; want %+v, %v", c.path, got, ok, c.want, c.ok)
		}
	}
}

func TestLevel(t *testing.T) {
	for p, want := range map[string]int{"/": 0, "/a": 1, "/libpod_parent/libpod-x": 2, "/a/b/c/": 3} {
		if got := level(p); got != want {
			t.Errorf("level(%q) = %d, want %d", p, got, want)
		}
	}
}

func FuzzParsePath(f *testing.F) {
	f.Add("/libpod_parent/libpod-" + hexA)
	f.Add("/kubepods/besteffort/pod0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/" + hexA)
	f.Add("/ecs/x/y")
	f.Fuzz(func(t *testing.T, p string) {
		r, ok := ParsePath(p)
		if ok && (r.ID == "" || r.Runtime == "") {
			t.Fatalf("ParsePath(%q) matched with empty fields: %+v", p, r)
		}
	})
}

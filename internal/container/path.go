package container

import "strings"

// Runtime names as they appear in event.Container.Runtime.
const (
	RuntimePodman     = "podman"
	RuntimeDocker     = "docker"
	RuntimeContainerd = "containerd"
	RuntimeCRIO       = "cri-o"
	// RuntimeUnknown is a container whose cgroup says it is one (a
	// Kubernetes pod's cgroupfs-driver path) but whose runtime kept no
	// metadata we could find.
	RuntimeUnknown = "unknown"
	// runtimeCRI marks a kubepods cgroupfs path whose runtime must be
	// found by probing each runtime's metadata.
	runtimeCRI = "cri"
)

// Ref is what a cgroup path alone says about its container.
type Ref struct {
	Runtime string // one of the Runtime* names, or "cri" before probing
	ID      string // container id as the runtime spells it
	PodUID  string // Kubernetes pod uid when the path carries it
	// Own is true when the path is the container's own cgroup, false for
	// a cgroup nested inside it (systemd or a runtime inside the container).
	Own bool
}

// ParsePath maps a cgroup v2 path (relative to the hierarchy root, as the
// kernel's cgroup_mkdir tracepoint and /proc/PID/cgroup give it) to its
// container. ok is false for host cgroups.
//
// The outermost container-looking segment wins: a container's processes may
// sit in sub-cgroups it creates itself (systemd in a container, a nested
// runtime), and only the outer container is known to this host's runtimes.
// Conmon's own scopes (libpod-conmon-<id>, crio-conmon-<id>) are host
// processes and do not match because the id must follow the prefix directly.
func ParsePath(path string) (r Ref, ok bool) {
	if len(path) > 4096 {
		return Ref{}, false
	}
	segs := strings.Split(strings.Trim(path, "/"), "/")
	podUID := ""
	for i, seg := range segs {
		if uid := podUIDOf(seg); uid != "" {
			podUID = uid
			continue
		}
		rt, id := "", ""
		switch {
		case i == 2 && segs[0] == "ecs":
			// ECS: /ecs/<task id>/<container id>. EC2 tasks run under Docker
			// (64-hex ids); Fargate's containerd ids look like "<task>-<n>".
			if !isECSID(seg) {
				continue
			}
			rt, id = RuntimeContainerd, seg
			if isHex64(seg) {
				rt = RuntimeDocker
			}
		case i > 0 && segs[i-1] == "docker" && isHex64(seg):
			rt, id = RuntimeDocker, seg
		case i > 0 && podUIDOf(segs[i-1]) != "" && isHex64(seg):
			// kubepods with the cgroupfs driver: the runtime is not in the
			// name; the resolver probes containerd, cri-o and docker.
			rt, id = runtimeCRI, seg
		default:
			rt, id = scopeID(seg)
		}
		if rt == "" {
			continue
		}
		return Ref{Runtime: rt, ID: id, PodUID: podUID, Own: i == len(segs)-1}, true
	}
	return Ref{}, false
}

// scopeID recognises the "<prefix><64hex>[.scope]" names runtimes give
// their containers' cgroups, under systemd or cgroupfs.
func scopeID(seg string) (runtime, id string) {
	s := strings.TrimSuffix(seg, ".scope")
	for _, p := range []struct{ prefix, runtime string }{
		{"libpod-", RuntimePodman},
		{"docker-", RuntimeDocker},
		{"cri-containerd-", RuntimeContainerd},
		{"crio-", RuntimeCRIO},
	} {
		if rest, ok := strings.CutPrefix(s, p.prefix); ok && isHex64(rest) {
			return p.runtime, rest
		}
	}
	return "", ""
}

// podUIDOf extracts the pod uid from "pod<uid>" (cgroupfs driver) or
// "kubepods[-<qos>]-pod<uid_with_underscores>.slice" (systemd driver).
func podUIDOf(seg string) string {
	var raw string
	if s, ok := strings.CutSuffix(seg, ".slice"); ok && strings.HasPrefix(s, "kubepods") {
		i := strings.LastIndex(s, "-pod")
		if i < 0 {
			return ""
		}
		raw = strings.ReplaceAll(s[i+4:], "_", "-")
	} else if s, ok := strings.CutPrefix(seg, "pod"); ok {
		raw = s
	} else {
		return ""
	}
	if !isUID(raw) {
		return ""
	}
	return raw
}

// isUID accepts a Kubernetes uid: hex and dashes, as the API server makes
// them (static pods use a 32-hex hash).
func isUID(s string) bool {
	if len(s) < 8 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c == '-') {
			return false
		}
	}
	return true
}

func isHex64(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// isECSID accepts the characters ECS container ids use.
func isECSID(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-') {
			return false
		}
	}
	return true
}

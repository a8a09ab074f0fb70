package container

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/mamori-dev/mamori/internal/event"
)

// Caps on label maps copied from runtime files: a container's creator
// chooses its labels, and they ride on every event of the container.
const (
	maxLabels   = 128
	maxLabelLen = 1024
)

// ociSpec is the part of an OCI runtime bundle's config.json we read.
type ociSpec struct {
	Root *struct {
		Path string `json:"path"`
	} `json:"root"`
	Annotations map[string]string `json:"annotations"`
	Process     *struct {
		Capabilities *struct {
			Bounding []string `json:"bounding"`
		} `json:"capabilities"`
	} `json:"process"`
	Linux *struct {
		MaskedPaths   []string `json:"maskedPaths"`
		ReadonlyPaths []string `json:"readonlyPaths"`
	} `json:"linux"`
}

// readSpec reads and decodes a bundle config.json.
func readSpec(path string) (*ociSpec, error) {
	data, err := readBounded(path, maxJSONFile)
	if err != nil {
		return nil, err
	}
	var s ociSpec
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("decode %s: %w", path, err)
	}
	return &s, nil
}

// rootPath resolves the spec's root.path against the bundle directory.
func (s *ociSpec) rootPath(bundle string) string {
	if s.Root == nil || s.Root.Path == "" {
		return ""
	}
	if filepath.IsAbs(s.Root.Path) {
		return filepath.Clean(s.Root.Path)
	}
	return filepath.Join(bundle, s.Root.Path)
}

// looksPrivileged infers --privileged from the spec where the runtime keeps
// no flag for it: privileged containers get every capability and no masked
// or read-only /proc and /sys paths; no default profile gives both.
func (s *ociSpec) looksPrivileged() bool {
	if s.Process == nil || s.Process.Capabilities == nil || s.Linux == nil {
		return false
	}
	if len(s.Linux.MaskedPaths) > 0 || len(s.Linux.ReadonlyPaths) > 0 {
		return false
	}
	for _, c := range s.Process.Capabilities.Bounding {
		if c == "CAP_SYS_ADMIN" {
			return true
		}
	}
	return false
}

// podFromLabels reads the io.kubernetes.* labels kubelet puts on every
// container (CRI labels in containerd and Docker, annotations in cri-o).
func podFromLabels(m map[string]string) *event.Pod {
	if m["io.kubernetes.pod.name"] == "" {
		return nil
	}
	return &event.Pod{
		Name:          m["io.kubernetes.pod.name"],
		Namespace:     m["io.kubernetes.pod.namespace"],
		UID:           m["io.kubernetes.pod.uid"],
		ContainerName: m["io.kubernetes.container.name"],
	}
}

// copyLabels copies at most maxLabels entries (in key order, so the cut is
// stable) with keys and values cut to maxLabelLen.
func copyLabels(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if len(keys) > maxLabels {
		keys = keys[:maxLabels]
	}
	out := make(map[string]string, len(keys))
	for _, k := range keys {
		out[clip(k, maxLabelLen)] = clip(m[k], maxLabelLen)
	}
	return out
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func isDir(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.IsDir()
}

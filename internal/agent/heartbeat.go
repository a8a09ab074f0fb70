package agent

import (
	"context"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mamori-dev/mamori/internal/server/coverage"
)

// HeartbeatInfo is what the agent cannot know by itself.
type HeartbeatInfo struct {
	Version  string
	Cluster  string
	Platform string
	Interval time.Duration
	Labels   map[string]string
}

// Heartbeat reports the agent's health for coverage: its hooks with their
// errors, every loss counter, the last event time, the kernel, and whether
// each installed container runtime's metadata can be read.
func (a *Agent) Heartbeat(info HeartbeatInfo) coverage.Heartbeat {
	st := a.Stats()
	host, _ := os.Hostname()
	var u unix.Utsname
	kernel := ""
	if unix.Uname(&u) == nil {
		kernel = unix.ByteSliceToString(u.Release[:])
	}
	_, btfErr := os.Stat("/sys/kernel/btf/vmlinux")
	hb := coverage.Heartbeat{
		NodeID: a.opts.NodeID, Hostname: host, Cluster: info.Cluster, Platform: info.Platform,
		AgentVersion: info.Version, Kernel: kernel, BTF: btfErr == nil, BPFObjects: a.BPFObjects(),
		Time: time.Now().UTC(), Started: st.Started.UTC(), IntervalSeconds: int(info.Interval / time.Second),
		LastEvent: st.Sensor.LastEvent.UTC(), Labels: info.Labels,
		Drops: map[string]uint64{
			"kernel":         st.Sensor.TotalKernelDrops(),
			"decode":         st.Sensor.DecodeErrors,
			"bpf_recursion":  st.Sensor.ProgramMisses,
			"retry":          st.Retry.Dropped,
			"lifecycle":      st.LifecycleLost + st.Containers.LifecycleDropped,
			"hash":           st.Processes.HashDropped + st.HashEventsLost,
			"container_full": st.Containers.TableFull,
		},
	}
	if a.ctrs != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		for _, r := range a.ctrs.Runtimes(ctx) {
			hb.Runtimes = append(hb.Runtimes, coverage.Runtime{Name: r.Name, Socket: r.Path, Reachable: r.Reachable, Error: r.Error})
		}
		cancel()
	}
	for _, h := range a.Hooks() {
		hb.Hooks = append(hb.Hooks, coverage.Hook{Program: h.Program, Family: h.Family, Hook: h.Hook,
			Attached: h.Attached, Optional: h.Optional, Error: h.Error, DetachedAt: h.DetachedAt, Detaches: h.Detaches})
	}
	if st.Sensor.LastEvent.IsZero() {
		hb.LastEvent = time.Time{}
	}
	return hb
}

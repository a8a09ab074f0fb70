// Package coverage says, for every node and cluster, whether mamori is
// actually protecting it, and when not, why.
//
// Agents send a Heartbeat every interval (transport kind "heartbeat"). The
// Monitor keeps one row per node in the store and evaluates it into
// Healthy or Unhealthy; an Unhealthy node always carries an issue string
// "TYPE:extra information" naming the cause, the most important first:
//
//	EXCLUDED_BY_LABEL    excluded by label mamori.io/managed=false
//	AGENT_EXITED         agent exited with code 1: <reason>
//	AGENT_NOT_REPORTING  agent not reporting since 2026-03-01T12:00:00Z
//	SERVER_BEHIND        no heartbeat stored since T while the server is behind on agent messages (...)
//	                     — or: while the server refuses agent messages: <why> (...),
//	                       while the server cannot store agent messages: its database is unavailable (...)
//	KERNEL_NO_BTF        kernel 5.4.0 lacks BTF (/sys/kernel/btf/vmlinux)
//	SENSOR_FAILED        sensor failed to load: <error>
//	HOOK_ATTACH_FAILED   hook tracepoint/syscalls/sys_enter_mount failed to attach: <error>
//	EVENTS_DROPPED       events dropped 120 in the last minute (kernel 100, queue 20)
//	RUNTIME_UNREACHABLE  container runtime unreachable at /run/containerd/containerd.sock: <error>
//	NO_HEARTBEAT         no heartbeat since enrollment at 2026-03-01T12:00:00Z
//	HOOK_DETACHED        hook cgroup_skb/ingress was detached by another process at T (re-attached; ...)
//
// Every issue found is listed in NodeStatus.Issues. "Not reporting" is
// judged on the server's clock from when heartbeats were received; drop
// rates are judged on the agent's own clock from its cumulative counters,
// so spooled heartbeats replayed late do not distort them.
//
// Status changes are logged in the store (so every replica sees them) and
// delivered to subscribers (Monitor.Subscribe) for the API and console.
package coverage

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	jsonv2 "github.com/go-json-experiment/json"
)

// ManagedLabel opts a node out of coverage when set to "false".
const ManagedLabel = "mamori.io/managed"

// MaxHeartbeatBytes bounds one encoded heartbeat.
const MaxHeartbeatBytes = 256 << 10

// Heartbeat is what an agent reports about itself every interval.
type Heartbeat struct {
	NodeID   string `json:"nodeId"`
	Hostname string `json:"hostname,omitempty"`
	Cluster  string `json:"cluster,omitempty"`
	// Platform is "kubernetes", "ecs" or "host" [host].
	Platform     string `json:"platform,omitempty"`
	AgentVersion string `json:"agentVersion"`
	Kernel       string `json:"kernel,omitempty"`
	BTF          bool   `json:"btf"`
	// BPFObjects says which build of the sensor's BPF objects is loaded:
	// "default", or "compat: " and why (a kernel before 5.17 lacks helpers).
	BPFObjects string `json:"bpfObjects,omitempty"`
	// SensorError is set when the sensor could not be loaded at all.
	SensorError string `json:"sensorError,omitempty"`
	// Time is when the agent made this heartbeat (its clock); Started when
	// the agent process started.
	Time    time.Time `json:"time"`
	Started time.Time `json:"started,omitempty"`
	// IntervalSeconds is how often the agent sends heartbeats [30].
	IntervalSeconds int    `json:"intervalSeconds,omitempty"`
	Hooks           []Hook `json:"hooks,omitempty"`
	// HooksDigest names the hook list (HooksDigest). A heartbeat whose
	// list did not change since the agent last sent it carries only the
	// digest; the server restores the list (see HookElision).
	HooksDigest string `json:"hooksDigest,omitempty"`
	// Drops are cumulative loss counters since Started, by where the loss
	// happened ("kernel", "decode", "queue", "retry", "spool", ...).
	Drops     map[string]uint64 `json:"drops,omitempty"`
	LastEvent time.Time         `json:"lastEvent,omitempty"`
	Runtimes  []Runtime         `json:"runtimes,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
	// Exit is set on the last heartbeat of an agent that is stopping.
	Exit *Exit `json:"exit,omitempty"`
}

// Hook is one sensor hook's state. Its fields match sensor.HookStatus, so
// an agent converts with coverage.Hook(status).
type Hook struct {
	Program  string `json:"program"`
	Family   string `json:"family"`
	Hook     string `json:"hook"`
	Attached bool   `json:"attached"`
	Optional bool   `json:"optional,omitempty"`
	Error    string `json:"error,omitempty"`
	// DetachedAt is when another process last detached the hook (the agent
	// re-attaches it); Detaches counts it since the agent started.
	DetachedAt time.Time `json:"detachedAt,omitzero"`
	Detaches   int       `json:"detaches,omitempty"`
}

// Runtime is one container runtime the agent talks to.
type Runtime struct {
	Name      string `json:"name"`
	Socket    string `json:"socket"`
	Reachable bool   `json:"reachable"`
	Error     string `json:"error,omitempty"`
}

// Exit says why an agent stopped.
type Exit struct {
	Code   int    `json:"code"`
	Reason string `json:"reason,omitempty"`
}

// Limits on heartbeat contents.
const (
	maxHooks    = 512
	maxRuntimes = 16
	maxDrops    = 64
	maxLabels   = 128
	maxText     = 1024
)

// DefaultInterval is the heartbeat interval assumed when an agent does not
// say.
const DefaultInterval = 30 * time.Second

// Interval is the agent's announced heartbeat interval, bounded to 1s..1h.
func (h *Heartbeat) Interval() time.Duration {
	if h.IntervalSeconds <= 0 {
		return DefaultInterval
	}
	return time.Duration(min(h.IntervalSeconds, 3600)) * time.Second
}

// Validate checks a heartbeat's shape and sizes.
func (h *Heartbeat) Validate() error {
	var bad []string
	text := func(name, v string, limit int) {
		if len(v) > limit || !utf8.ValidString(v) || strings.ContainsRune(v, 0) {
			bad = append(bad, fmt.Sprintf("%s must be valid text of at most %d bytes", name, limit))
		}
	}
	if h.NodeID == "" {
		bad = append(bad, "nodeId is required")
	}
	text("nodeId", h.NodeID, 128)
	text("hostname", h.Hostname, 255)
	text("cluster", h.Cluster, 255)
	text("agentVersion", h.AgentVersion, 128)
	text("kernel", h.Kernel, 255)
	text("bpfObjects", h.BPFObjects, 512)
	text("sensorError", h.SensorError, maxText)
	text("hooksDigest", h.HooksDigest, 64)
	switch h.Platform {
	case "", "host", "kubernetes", "ecs":
	default:
		bad = append(bad, fmt.Sprintf("platform %q (want host, kubernetes or ecs)", h.Platform))
	}
	if h.Time.IsZero() {
		bad = append(bad, "time is required")
	}
	if h.IntervalSeconds < 0 {
		bad = append(bad, "intervalSeconds is negative")
	}
	if len(h.Hooks) > maxHooks || len(h.Runtimes) > maxRuntimes || len(h.Drops) > maxDrops || len(h.Labels) > maxLabels {
		bad = append(bad, fmt.Sprintf("too many entries (hooks %d/%d, runtimes %d/%d, drops %d/%d, labels %d/%d)",
			len(h.Hooks), maxHooks, len(h.Runtimes), maxRuntimes, len(h.Drops), maxDrops, len(h.Labels), maxLabels))
	}
	for _, k := range h.Hooks {
		text("hook", k.Hook, 255)
		text("hook program", k.Program, 255)
		text("hook family", k.Family, 255)
		text("hook error", k.Error, maxText)
	}
	for _, r := range h.Runtimes {
		text("runtime name", r.Name, 64)
		text("runtime socket", r.Socket, 4096)
		text("runtime error", r.Error, maxText)
	}
	for k := range h.Drops {
		text("drop counter name", k, 64)
	}
	for k, v := range h.Labels {
		text("label name", k, 317)
		text("label value", v, 255)
	}
	if h.Exit != nil {
		text("exit reason", h.Exit.Reason, maxText)
	}
	if len(bad) > 0 {
		return fmt.Errorf("invalid heartbeat: %s", strings.Join(bad, "; "))
	}
	return nil
}

// Decode parses and validates one heartbeat document: at most
// MaxHeartbeatBytes, one JSON object, no trailing data. Unknown fields are
// ignored, so a newer agent keeps reporting to an older server during a
// rolling upgrade.
func Decode(data []byte) (*Heartbeat, error) {
	if len(data) > MaxHeartbeatBytes {
		return nil, fmt.Errorf("heartbeat is %d bytes, limit %d", len(data), MaxHeartbeatBytes)
	}
	// One strict pass: exact names, each once, valid UTF-8, no trailing
	// data; unknown names are skipped.
	var h Heartbeat
	if err := jsonv2.Unmarshal(data, &h); err != nil {
		return nil, fmt.Errorf("decode heartbeat: %w", err)
	}
	if err := h.Validate(); err != nil {
		return nil, err
	}
	return &h, nil
}

// resourceType names what the node is in the finding vocabulary.
func (h *Heartbeat) resourceType() string {
	switch h.Platform {
	case "kubernetes":
		return "EKSCluster"
	case "ecs":
		return "ECSCluster"
	}
	return "Instance"
}

// sortedKeys lists a map's keys in order (stable issue strings).
func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}

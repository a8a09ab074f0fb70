// Package finding is mamori's finding model: the typed, scored,
// deduplicated alert users act on. Its JSON follows the reference
// product's finding shape and field names so that users can carry rules
// and dashboards across; see ../../../shared/reference/guardduty-runtime.md §3.
package finding

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"time"

	"github.com/mamori-dev/mamori/internal/event"
)

// SchemaVersion is the version of the finding JSON.
const SchemaVersion = "2.0"

// Finding is one finding.
type Finding struct {
	ID            string    `json:"id"`
	Type          string    `json:"type"`
	Severity      float64   `json:"severity"`
	SeverityLabel string    `json:"severityLabel"`
	Title         string    `json:"title"`
	Description   string    `json:"description"`
	CreatedAt     time.Time `json:"createdAt"`
	UpdatedAt     time.Time `json:"updatedAt"`
	SchemaVersion string    `json:"schemaVersion"`
	Resource      Resource  `json:"resource"`
	Service       Service   `json:"service"`
}

// Resource is what the finding is about.
type Resource struct {
	ResourceType      string             `json:"resourceType"` // Container, Instance, EKSCluster, ECSCluster
	InstanceDetails   *InstanceDetails   `json:"instanceDetails,omitempty"`
	ContainerDetails  *ContainerDetails  `json:"containerDetails,omitempty"`
	KubernetesDetails *KubernetesDetails `json:"kubernetesDetails,omitempty"`
	ECSClusterDetails *ECSClusterDetails `json:"ecsClusterDetails,omitempty"`
}

// InstanceDetails names the node.
type InstanceDetails struct {
	NodeID   string `json:"nodeId"`
	Hostname string `json:"hostname,omitempty"`
}

// ContainerDetails is the container the behaviour came from.
type ContainerDetails struct {
	ContainerRuntime string            `json:"containerRuntime"`
	ID               string            `json:"id"`
	Name             string            `json:"name,omitempty"`
	Image            string            `json:"image,omitempty"`
	ImagePrefix      string            `json:"imagePrefix,omitempty"`
	SecurityContext  *SecurityContext  `json:"securityContext,omitempty"`
	Labels           map[string]string `json:"labels,omitempty"`
}

// SecurityContext of a container.
type SecurityContext struct {
	Privileged bool `json:"privileged"`
}

// KubernetesDetails carries the pod's workload.
type KubernetesDetails struct {
	KubernetesWorkloadDetails KubernetesWorkload `json:"kubernetesWorkloadDetails"`
}

// KubernetesWorkload is the pod, as the CRI labels name it.
type KubernetesWorkload struct {
	Name      string `json:"name"`
	Type      string `json:"type"`
	UID       string `json:"uid,omitempty"`
	Namespace string `json:"namespace"`
}

// ECSClusterDetails carries the ECS task.
type ECSClusterDetails struct {
	Name        string `json:"name,omitempty"`
	TaskDetails struct {
		ARN           string `json:"arn,omitempty"`
		DefinitionArn string `json:"definitionArn,omitempty"`
	} `json:"taskDetails"`
}

// Service is the detection's own data.
type Service struct {
	FeatureName    string          `json:"featureName"`
	Count          int64           `json:"count"`
	EventFirstSeen time.Time       `json:"eventFirstSeen"`
	EventLastSeen  time.Time       `json:"eventLastSeen"`
	Archived       bool            `json:"archived"`
	Evidence       *Evidence       `json:"evidence,omitempty"`
	AdditionalInfo AdditionalInfo  `json:"additionalInfo"`
	RuntimeDetails RuntimeDetails  `json:"runtimeDetails"`
	Detector       *DetectorDetail `json:"detector,omitempty"`
}

// Evidence lists the threat intelligence that matched.
type Evidence struct {
	ThreatIntelligenceDetails []ThreatIntel `json:"threatIntelligenceDetails"`
}

// ThreatIntel is one matched list entry.
type ThreatIntel struct {
	ThreatListName string   `json:"threatListName"`
	ThreatNames    []string `json:"threatNames,omitempty"`
	Indicator      string   `json:"indicator,omitempty"`
}

// AdditionalInfo carries the agent and sample marker.
type AdditionalInfo struct {
	Sample       bool         `json:"sample"`
	AgentDetails AgentDetails `json:"agentDetails"`
}

// AgentDetails names the reporting agent.
type AgentDetails struct {
	AgentID      string `json:"agentId"`
	AgentVersion string `json:"agentVersion"`
}

// DetectorDetail says which detector or rule raised the finding and its
// MITRE ATT&CK place: mamori adds it so users can tune and trace.
type DetectorDetail struct {
	Name      string `json:"name"`
	Rule      string `json:"rule,omitempty"` // custom rule id
	Tactic    string `json:"tactic"`
	Technique string `json:"technique"`
}

// RuntimeDetails is the acting process and type-specific context.
type RuntimeDetails struct {
	Process *Process       `json:"process,omitempty"`
	Context map[string]any `json:"context,omitempty"`
}

// Process is the acting process with its lineage.
type Process struct {
	Name             string           `json:"name"`
	ExecutablePath   string           `json:"executablePath,omitempty"`
	ExecutableSha256 string           `json:"executableSha256,omitempty"`
	NamespacePid     uint32           `json:"namespacePid"`
	Pwd              string           `json:"pwd,omitempty"`
	Pid              uint32           `json:"pid"`
	StartTime        time.Time        `json:"startTime"`
	UUID             string           `json:"uuid"`
	ParentUUID       string           `json:"parentUuid,omitempty"`
	User             string           `json:"user,omitempty"`
	UserID           uint32           `json:"userId"`
	Euid             uint32           `json:"euid"`
	Args             []string         `json:"args,omitempty"`
	Lineage          []event.Ancestor `json:"lineage,omitempty"`
	// ExeImage is the executed file's identity on the agent (never sent):
	// a hash made later is added only to findings about that very file.
	ExeImage string `json:"-"`
}

// Agent identifies the node and agent raising findings.
type Agent struct {
	NodeID   string
	Hostname string
	Version  string
}

// New builds a finding of type typ for ev. Severity, title and
// description come from the catalogue unless the caller overrides them
// afterwards. keyActor is the dedup key's actor (see Key).
func New(typ string, ev *event.Event, agent Agent, keyActor string, ctx map[string]any) *Finding {
	k, ok := Lookup(typ)
	if !ok {
		k = &Kind{Type: typ, Severity: Medium, Title: typ, Description: "Detection " + typ + " matched."}
	}
	now := time.Now().UTC()
	seen := ev.Time
	if seen.IsZero() {
		seen = now
	}
	f := &Finding{
		Type: typ, Severity: k.Severity, SeverityLabel: SeverityLabel(k.Severity), Title: k.Title,
		Description: k.Description, CreatedAt: now, UpdatedAt: now, SchemaVersion: SchemaVersion,
		Resource: resourceOf(ev, agent),
		Service: Service{
			FeatureName: "RuntimeMonitoring", Count: 1, EventFirstSeen: seen, EventLastSeen: seen,
			AdditionalInfo: AdditionalInfo{AgentDetails: AgentDetails{AgentID: agent.NodeID, AgentVersion: agent.Version}},
			RuntimeDetails: RuntimeDetails{Process: processOf(&ev.Process), Context: ctx},
			Detector:       &DetectorDetail{Tactic: k.Tactic, Technique: k.Technique},
		},
	}
	f.ID = ID(Key(f, keyActor))
	return f
}

func resourceOf(ev *event.Event, agent Agent) Resource {
	r := Resource{ResourceType: "Instance", InstanceDetails: &InstanceDetails{NodeID: agent.NodeID, Hostname: agent.Hostname}}
	c := ev.Container
	if c == nil {
		return r
	}
	r.ResourceType = "Container"
	r.ContainerDetails = &ContainerDetails{
		ContainerRuntime: c.Runtime, ID: c.ID, Name: c.Name, Image: c.Image, ImagePrefix: imagePrefix(c.Image),
		SecurityContext: &SecurityContext{Privileged: c.Privileged},
	}
	if p := c.Pod; p != nil {
		r.ResourceType = "EKSCluster"
		r.KubernetesDetails = &KubernetesDetails{KubernetesWorkloadDetails: KubernetesWorkload{
			Name: p.Name, Type: "Pods", UID: p.UID, Namespace: p.Namespace}}
	}
	if e := c.ECS; e != nil {
		r.ResourceType = "ECSCluster"
		r.ECSClusterDetails = &ECSClusterDetails{Name: e.Cluster}
		r.ECSClusterDetails.TaskDetails.ARN = e.TaskARN
		r.ECSClusterDetails.TaskDetails.DefinitionArn = e.TaskDefinition
	}
	return r
}

// imagePrefix is the registry part of an image reference.
func imagePrefix(image string) string {
	if i := strings.IndexByte(image, '/'); i > 0 && strings.ContainsAny(image[:i], ".:") {
		return image[:i]
	}
	return ""
}

func processOf(p *event.Process) *Process {
	if p.PID == 0 {
		return nil
	}
	return &Process{
		Name: p.Comm, ExecutablePath: p.Exe, ExecutableSha256: p.ExeSHA256, NamespacePid: p.NSPID,
		Pwd: p.Cwd, Pid: p.PID, StartTime: p.Start, UUID: p.UUID, ParentUUID: p.ParentUUID,
		User: p.User, UserID: p.UID, Euid: p.EUID, Args: p.Args, Lineage: p.Lineage, ExeImage: p.ExeImage,
	}
}

// Key is the dedup key: type, resource (node, and container when there is
// one) and the key actor the detector names — the executable, domain,
// address or file that makes two occurrences "the same activity". When the
// detector names none, the acting executable is the actor. Time, pid and
// process uuid are not part of it, so the same activity by a new process
// merges. Each field is length-prefixed, so no value can imitate another
// field's boundary.
func Key(f *Finding, keyActor string) string {
	node, ctr := "", ""
	if d := f.Resource.InstanceDetails; d != nil {
		node = d.NodeID
	}
	if c := f.Resource.ContainerDetails; c != nil {
		ctr = c.ID
	}
	if keyActor == "" && f.Service.RuntimeDetails.Process != nil {
		keyActor = f.Service.RuntimeDetails.Process.ExecutablePath
	}
	var b strings.Builder
	for _, v := range []string{f.Type, node, ctr, keyActor} {
		b.WriteString(strconv.Itoa(len(v)))
		b.WriteByte(':')
		b.WriteString(v)
	}
	return b.String()
}

// ID is the stable finding id of a dedup key: 32 hex characters.
func ID(key string) string {
	s := sha256.Sum256([]byte(key))
	return hex.EncodeToString(s[:16])
}

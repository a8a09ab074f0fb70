package finding

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

var idPattern = regexp.MustCompile(`^[0-9a-f]{32}$`)

// Validate checks a finding against the finding schema: the rules every
// finding mamori emits — real or sample — must meet. It returns every
// violation, joined.
func Validate(f *Finding) error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if !idPattern.MatchString(f.ID) {
		bad("id %q is not 32 lowercase hex characters", f.ID)
	}
	if _, ok := Lookup(f.Type); !ok && !strings.HasPrefix(f.Type, "Custom:Runtime/") {
		bad("type %q is neither in the catalogue nor Custom:Runtime/...", f.Type)
	}
	if f.Severity < 0.1 || f.Severity > 10 {
		bad("severity %v outside 0.1..10", f.Severity)
	}
	if f.SeverityLabel != SeverityLabel(f.Severity) {
		bad("severityLabel %q does not match severity %v", f.SeverityLabel, f.Severity)
	}
	if f.Title == "" || f.Description == "" {
		bad("title and description are required")
	}
	if f.CreatedAt.IsZero() || f.UpdatedAt.Before(f.CreatedAt) {
		bad("createdAt must be set and not after updatedAt")
	}
	if f.SchemaVersion != SchemaVersion {
		bad("schemaVersion %q, want %q", f.SchemaVersion, SchemaVersion)
	}
	r := f.Resource
	switch r.ResourceType {
	case "Instance":
		if r.InstanceDetails == nil || r.InstanceDetails.NodeID == "" {
			bad("Instance resource without instanceDetails.nodeId")
		}
	case "Container", "EKSCluster", "ECSCluster":
		if r.ContainerDetails == nil || r.ContainerDetails.ID == "" || r.ContainerDetails.ContainerRuntime == "" {
			bad("%s resource without containerDetails id and runtime", r.ResourceType)
		}
		if r.ResourceType == "EKSCluster" && r.KubernetesDetails == nil {
			bad("EKSCluster resource without kubernetesDetails")
		}
		if r.ResourceType == "ECSCluster" && r.ECSClusterDetails == nil {
			bad("ECSCluster resource without ecsClusterDetails")
		}
	default:
		bad("resourceType %q unknown", r.ResourceType)
	}
	s := f.Service
	if s.FeatureName != "RuntimeMonitoring" {
		bad("service.featureName %q", s.FeatureName)
	}
	if s.Count < 1 {
		bad("service.count %d < 1", s.Count)
	}
	if s.EventFirstSeen.IsZero() || s.EventLastSeen.Before(s.EventFirstSeen) {
		bad("eventFirstSeen must be set and not after eventLastSeen")
	}
	if s.AdditionalInfo.AgentDetails.AgentID == "" {
		bad("additionalInfo.agentDetails.agentId is required")
	}
	if p := s.RuntimeDetails.Process; p != nil && (p.Pid == 0 || p.UUID == "") {
		bad("runtimeDetails.process needs pid and uuid")
	}
	if k, ok := Lookup(f.Type); ok {
		if k.Intel && (s.Evidence == nil || len(s.Evidence.ThreatIntelligenceDetails) == 0) {
			bad("%s is raised from threat intel but has no evidence.threatIntelligenceDetails", f.Type)
		}
		for key := range s.RuntimeDetails.Context {
			if !slices.Contains(k.Context, key) && !slices.Contains(CommonContext, key) {
				bad("runtimeDetails.context.%s is not a context key of %s (declare it in the catalogue)", key, f.Type)
			}
		}
	}
	return errors.Join(errs...)
}

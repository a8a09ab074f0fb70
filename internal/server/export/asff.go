package export

import (
	"encoding/json"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mamori-dev/mamori/internal/finding"
)

// ASFFSchemaVersion is the AWS Security Finding Format version.
const ASFFSchemaVersion = "2018-10-08"

// ASFF field limits, as Security Hub enforces them on import.
const (
	asffTitleMax         = 256
	asffDescriptionMax   = 1024
	asffProductFieldsMax = 50
	asffFieldValueMax    = 2048
	asffIndicatorsMax    = 5
)

// ASFFFinding is one finding in the AWS Security Finding Format, ready for
// BatchImportFindings.
type ASFFFinding struct {
	SchemaVersion         string              `json:"SchemaVersion"`
	ID                    string              `json:"Id"`
	ProductArn            string              `json:"ProductArn"`
	ProductName           string              `json:"ProductName"`
	CompanyName           string              `json:"CompanyName"`
	Region                string              `json:"Region"`
	GeneratorID           string              `json:"GeneratorId"`
	AwsAccountID          string              `json:"AwsAccountId"`
	Types                 []string            `json:"Types"`
	FirstObservedAt       string              `json:"FirstObservedAt"`
	LastObservedAt        string              `json:"LastObservedAt"`
	CreatedAt             string              `json:"CreatedAt"`
	UpdatedAt             string              `json:"UpdatedAt"`
	Severity              ASFFSeverity        `json:"Severity"`
	Title                 string              `json:"Title"`
	Description           string              `json:"Description"`
	ProductFields         map[string]string   `json:"ProductFields"`
	Resources             []ASFFResource      `json:"Resources"`
	Process               *ASFFProcess        `json:"Process,omitempty"`
	Network               *ASFFNetwork        `json:"Network,omitempty"`
	ThreatIntelIndicators []ASFFIntel         `json:"ThreatIntelIndicators,omitempty"`
	Workflow              ASFFWorkflow        `json:"Workflow"`
	RecordState           string              `json:"RecordState"`
	Sample                bool                `json:"Sample"`
	FindingProviderFields *ASFFProviderFields `json:"FindingProviderFields,omitempty"`
}

// ASFFSeverity carries label and 0-100 score.
type ASFFSeverity struct {
	Label      string `json:"Label"`
	Normalized int    `json:"Normalized"`
	Original   string `json:"Original"`
}

// ASFFResource is one affected resource.
type ASFFResource struct {
	Type      string              `json:"Type"`
	ID        string              `json:"Id"`
	Partition string              `json:"Partition"`
	Region    string              `json:"Region"`
	Details   ASFFResourceDetails `json:"Details"`
}

// ASFFResourceDetails holds the resource-type specific details.
type ASFFResourceDetails struct {
	Container *ASFFContainer    `json:"Container,omitempty"`
	Other     map[string]string `json:"Other,omitempty"`
}

// ASFFContainer is a container resource's details.
type ASFFContainer struct {
	Name       string `json:"Name,omitempty"`
	ImageID    string `json:"ImageId,omitempty"`
	ImageName  string `json:"ImageName,omitempty"`
	Privileged bool   `json:"Privileged"`
}

// ASFFProcess is the acting process.
type ASFFProcess struct {
	Name       string `json:"Name,omitempty"`
	Path       string `json:"Path,omitempty"`
	Pid        uint32 `json:"Pid"`
	ParentPid  uint32 `json:"ParentPid,omitempty"`
	LaunchedAt string `json:"LaunchedAt,omitempty"`
}

// ASFFNetwork is the remote side of a network finding.
type ASFFNetwork struct {
	Direction         string `json:"Direction"`
	DestinationIPV4   string `json:"DestinationIpV4,omitempty"`
	DestinationIPV6   string `json:"DestinationIpV6,omitempty"`
	DestinationPort   int    `json:"DestinationPort,omitempty"`
	DestinationDomain string `json:"DestinationDomain,omitempty"`
}

// ASFFIntel is one matched threat intel indicator.
type ASFFIntel struct {
	Type   string `json:"Type"`
	Value  string `json:"Value"`
	Source string `json:"Source,omitempty"`
}

// ASFFWorkflow is the finding's workflow state.
type ASFFWorkflow struct {
	Status string `json:"Status"`
}

// ASFFProviderFields repeats severity and types where Security Hub lets
// only the provider set them.
type ASFFProviderFields struct {
	Severity ASFFSeverity `json:"Severity"`
	Types    []string     `json:"Types"`
}

func asffTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

// asffSeverity maps the 0.1-10 severity onto Security Hub's 0-100 scale;
// Security Hub's label bands (40 Medium, 70 High, 90 Critical) then agree
// with the finding model's.
func asffSeverity(sev float64) ASFFSeverity {
	n := int(math.Round(sev * 10))
	n = min(max(n, 0), 100)
	return ASFFSeverity{Label: strings.ToUpper(finding.SeverityLabel(sev)), Normalized: n,
		Original: strconv.FormatFloat(sev, 'f', -1, 64)}
}

// asffType maps a finding to an ASFF type "namespace/category/classifier";
// the classifier is the finding type with '/' replaced, as '/' separates
// the parts.
func asffType(f *finding.Finding) string {
	prefix := "Unusual Behaviors/Process"
	if d := f.Service.Detector; d != nil {
		switch d.Tactic {
		case "":
		case "Impact":
			prefix = "Effects/Resource Consumption"
		case "Exfiltration":
			prefix = "Effects/Data Exfiltration"
		default:
			if t, ok := mitreTactics[d.Tactic]; ok {
				prefix = "TTPs/" + t.Name
			}
		}
	}
	return prefix + "/" + strings.ReplaceAll(f.Type, "/", "-")
}

// ASFF maps f to an ASFF finding.
func ASFF(f *finding.Finding, o Options) *ASFFFinding {
	o = o.withDefaults()
	s := f.Service
	nodeID, host := nodeOf(f)
	gen := "mamori/" + f.Type
	if d := s.Detector; d != nil && d.Rule != "" {
		gen = "mamori/rule/" + d.Rule
	}
	sev := asffSeverity(f.Severity)
	types := []string{asffType(f)}
	a := &ASFFFinding{
		SchemaVersion: ASFFSchemaVersion,
		ID:            "mamori/" + clusterOf(f, o) + "/finding/" + f.ID,
		ProductArn:    o.ProductArn, ProductName: "mamori", CompanyName: "mamori", Region: o.Region,
		GeneratorID: gen, AwsAccountID: o.AwsAccountID, Types: types,
		FirstObservedAt: asffTime(s.EventFirstSeen), LastObservedAt: asffTime(s.EventLastSeen),
		CreatedAt: asffTime(f.CreatedAt), UpdatedAt: asffTime(f.UpdatedAt),
		Severity: sev, Title: truncate(f.Title, asffTitleMax), Description: truncate(f.Description, asffDescriptionMax),
		Workflow: ASFFWorkflow{Status: "NEW"}, RecordState: "ACTIVE", Sample: s.AdditionalInfo.Sample,
		FindingProviderFields: &ASFFProviderFields{Severity: sev, Types: types},
	}
	if s.Archived {
		a.RecordState = "ARCHIVED"
	}
	node := ASFFResource{Type: "Other", ID: "node/" + nodeID, Partition: "aws", Region: o.Region,
		Details: ASFFResourceDetails{Other: map[string]string{"nodeId": nodeID, "cluster": clusterOf(f, o)}}}
	if host != "" {
		node.Details.Other["hostname"] = host
	}
	if c := f.Resource.ContainerDetails; c != nil {
		ctr := ASFFResource{Type: "Container", ID: c.ID, Partition: "aws", Region: o.Region,
			Details: ASFFResourceDetails{Container: &ASFFContainer{Name: c.Name, ImageName: c.Image, ImageID: c.Image,
				Privileged: c.SecurityContext != nil && c.SecurityContext.Privileged}}}
		a.Resources = append(a.Resources, ctr)
	}
	if k := f.Resource.KubernetesDetails; k != nil {
		w := k.KubernetesWorkloadDetails
		a.Resources = append(a.Resources, ASFFResource{Type: "Other", ID: "kubernetes/" + w.Namespace + "/" + w.Name,
			Partition: "aws", Region: o.Region, Details: ASFFResourceDetails{Other: map[string]string{
				"kind": w.Type, "namespace": w.Namespace, "name": w.Name, "uid": w.UID}}})
	}
	if e := f.Resource.ECSClusterDetails; e != nil && e.TaskDetails.ARN != "" {
		a.Resources = append(a.Resources, ASFFResource{Type: "Other", ID: e.TaskDetails.ARN, Partition: "aws", Region: o.Region,
			Details: ASFFResourceDetails{Other: map[string]string{"cluster": e.Name, "taskDefinitionArn": e.TaskDetails.DefinitionArn}}})
	}
	a.Resources = append(a.Resources, node)
	if p := s.RuntimeDetails.Process; p != nil {
		ap := &ASFFProcess{Name: p.Name, Path: p.ExecutablePath, Pid: p.Pid}
		if !p.StartTime.IsZero() {
			ap.LaunchedAt = asffTime(p.StartTime)
		}
		if len(p.Lineage) > 0 {
			ap.ParentPid = p.Lineage[0].PID
		}
		a.Process = ap
	}
	if e := ocsfEndpoint(f); e != nil {
		n := &ASFFNetwork{Direction: "OUT", DestinationPort: e.Port, DestinationDomain: e.Hostname}
		if ip, err := netip.ParseAddr(e.IP); err == nil {
			if ip.Is4() {
				n.DestinationIPV4 = ip.String()
			} else {
				n.DestinationIPV6 = ip.String()
			}
		}
		a.Network = n
	}
	if ev := s.Evidence; ev != nil {
		for _, t := range ev.ThreatIntelligenceDetails {
			if len(a.ThreatIntelIndicators) == asffIndicatorsMax || t.Indicator == "" {
				continue
			}
			a.ThreatIntelIndicators = append(a.ThreatIntelIndicators, ASFFIntel{Type: indicatorType(t.Indicator),
				Value: truncate(t.Indicator, 512), Source: truncate(t.ThreatListName, 64)})
		}
	}
	a.ProductFields = asffProductFields(f, o)
	return a
}

func asffProductFields(f *finding.Finding, o Options) map[string]string {
	s := f.Service
	pf := map[string]string{
		"mamori/Type": f.Type, "mamori/FindingId": f.ID, "mamori/Count": strconv.FormatInt(s.Count, 10),
		"mamori/ResourceType": f.Resource.ResourceType, "mamori/AgentId": s.AdditionalInfo.AgentDetails.AgentID,
		"mamori/AgentVersion": s.AdditionalInfo.AgentDetails.AgentVersion, "mamori/ProductVersion": o.ProductVersion,
	}
	if d := s.Detector; d != nil {
		for k, v := range map[string]string{"mamori/Detector": d.Name, "mamori/Rule": d.Rule,
			"mamori/Tactic": d.Tactic, "mamori/Technique": d.Technique} {
			if v != "" {
				pf[k] = v
			}
		}
	}
	if p := s.RuntimeDetails.Process; p != nil {
		if cl := commandLine(p.Args); cl != "" {
			pf["mamori/CommandLine"] = truncate(cl, asffFieldValueMax)
		}
		if p.ExecutableSha256 != "" {
			pf["mamori/ExecutableSha256"] = p.ExecutableSha256
		}
	}
	// Context keys in a stable order, until the field limit.
	keys := make([]string, 0, len(s.RuntimeDetails.Context))
	for k := range s.RuntimeDetails.Context {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if len(pf) >= asffProductFieldsMax {
			break
		}
		v := s.RuntimeDetails.Context[k]
		str, ok := v.(string)
		if !ok {
			b, err := json.Marshal(v)
			if err != nil {
				continue
			}
			str = string(b)
		}
		pf["mamori/context/"+truncate(k, 100)] = truncate(str, asffFieldValueMax)
	}
	return pf
}

// indicatorType names an indicator's ASFF type from its shape.
func indicatorType(v string) string {
	if ip, err := netip.ParseAddr(v); err == nil {
		if ip.Is4() {
			return "IPV4_ADDRESS"
		}
		return "IPV6_ADDRESS"
	}
	if _, err := netip.ParsePrefix(v); err == nil {
		if strings.Contains(v, ":") {
			return "IPV6_ADDRESS"
		}
		return "IPV4_ADDRESS"
	}
	if isHex(v) {
		switch len(v) {
		case 32:
			return "HASH_MD5"
		case 40:
			return "HASH_SHA1"
		case 64:
			return "HASH_SHA256"
		case 128:
			return "HASH_SHA512"
		}
	}
	if strings.Contains(v, "://") {
		return "URL"
	}
	return "DOMAIN"
}

func isHex(s string) bool {
	for _, r := range s {
		if !('0' <= r && r <= '9' || 'a' <= r && r <= 'f' || 'A' <= r && r <= 'F') {
			return false
		}
	}
	return s != ""
}

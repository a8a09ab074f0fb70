package export

import (
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mamori-dev/mamori/internal/finding"
)

// OCSFVersion is the OCSF schema version the Detection Finding follows.
const OCSFVersion = "1.3.0"

// OCSF class and activity identifiers of a Detection Finding.
const (
	OCSFClassDetectionFinding = 2004
	OCSFCategoryFindings      = 2
	OCSFActivityCreate        = 1
	OCSFActivityUpdate        = 2
)

// OCSFFinding is an OCSF Detection Finding (class_uid 2004) with the host
// profile. Timestamps are milliseconds since the epoch (timestamp_t).
type OCSFFinding struct {
	ActivityID   int    `json:"activity_id"`
	ActivityName string `json:"activity_name"`
	CategoryUID  int    `json:"category_uid"`
	CategoryName string `json:"category_name"`
	ClassUID     int    `json:"class_uid"`
	ClassName    string `json:"class_name"`
	TypeUID      int    `json:"type_uid"`
	TypeName     string `json:"type_name"`
	Time         int64  `json:"time"`
	SeverityID   int    `json:"severity_id"`
	Severity     string `json:"severity"`
	StatusID     int    `json:"status_id"`
	Status       string `json:"status"`
	Message      string `json:"message"`
	IsAlert      bool   `json:"is_alert"`
	Count        int64  `json:"count"`
	StartTime    int64  `json:"start_time"`
	EndTime      int64  `json:"end_time"`

	Metadata    OCSFMetadata     `json:"metadata"`
	FindingInfo OCSFFindingInfo  `json:"finding_info"`
	Device      *OCSFDevice      `json:"device,omitempty"`
	Resources   []OCSFResource   `json:"resources,omitempty"`
	Evidences   []OCSFEvidence   `json:"evidences,omitempty"`
	Observables []OCSFObservable `json:"observables,omitempty"`
	Unmapped    map[string]any   `json:"unmapped,omitempty"`
}

// OCSFMetadata is the event's metadata object.
type OCSFMetadata struct {
	Version  string      `json:"version"`
	UID      string      `json:"uid"`
	Product  OCSFProduct `json:"product"`
	Profiles []string    `json:"profiles"`
	LogName  string      `json:"log_name"`
	Labels   []string    `json:"labels,omitempty"`
}

// OCSFProduct names mamori and the detector that fired.
type OCSFProduct struct {
	Name       string       `json:"name"`
	VendorName string       `json:"vendor_name"`
	Version    string       `json:"version"`
	Feature    *OCSFFeature `json:"feature,omitempty"`
}

// OCSFFeature is the product feature (detector) that raised the finding.
type OCSFFeature struct {
	Name string `json:"name"`
}

// OCSFFindingInfo is the finding_info object.
type OCSFFindingInfo struct {
	UID           string        `json:"uid"`
	Title         string        `json:"title"`
	Desc          string        `json:"desc"`
	Types         []string      `json:"types"`
	CreatedTime   int64         `json:"created_time"`
	ModifiedTime  int64         `json:"modified_time"`
	FirstSeenTime int64         `json:"first_seen_time"`
	LastSeenTime  int64         `json:"last_seen_time"`
	Analytic      *OCSFAnalytic `json:"analytic,omitempty"`
	Attacks       []OCSFAttack  `json:"attacks,omitempty"`
}

// OCSFAnalytic is the rule or detector behind the finding.
type OCSFAnalytic struct {
	Name   string `json:"name"`
	UID    string `json:"uid"`
	Type   string `json:"type"`
	TypeID int    `json:"type_id"`
}

// OCSFAttack is one MITRE ATT&CK placement.
type OCSFAttack struct {
	Tactic       *OCSFEntity `json:"tactic,omitempty"`
	Technique    *OCSFEntity `json:"technique,omitempty"`
	SubTechnique *OCSFEntity `json:"sub_technique,omitempty"`
	Version      string      `json:"version"`
}

// OCSFEntity is a {uid, name} pair.
type OCSFEntity struct {
	UID  string `json:"uid"`
	Name string `json:"name,omitempty"`
}

// OCSFDevice is the node (host profile).
type OCSFDevice struct {
	TypeID   int    `json:"type_id"`
	Type     string `json:"type"`
	UID      string `json:"uid"`
	Hostname string `json:"hostname,omitempty"`
	Name     string `json:"name,omitempty"`
}

// OCSFResource is one affected resource (resource_details).
type OCSFResource struct {
	UID       string   `json:"uid"`
	Name      string   `json:"name,omitempty"`
	Type      string   `json:"type"`
	Namespace string   `json:"namespace,omitempty"`
	Hostname  string   `json:"hostname,omitempty"`
	Labels    []string `json:"labels,omitempty"`
}

// OCSFEvidence is one evidence artifact.
type OCSFEvidence struct {
	Process     *OCSFProcess   `json:"process,omitempty"`
	Container   *OCSFContainer `json:"container,omitempty"`
	File        *OCSFFile      `json:"file,omitempty"`
	DstEndpoint *OCSFEndpoint  `json:"dst_endpoint,omitempty"`
	Device      *OCSFDevice    `json:"device,omitempty"`
	Data        map[string]any `json:"data,omitempty"`
}

// OCSFProcess is a process object (with the container profile).
type OCSFProcess struct {
	PID           uint32         `json:"pid"`
	UID           string         `json:"uid,omitempty"`
	Name          string         `json:"name,omitempty"`
	CmdLine       string         `json:"cmd_line,omitempty"`
	CreatedTime   int64          `json:"created_time,omitempty"`
	File          *OCSFFile      `json:"file,omitempty"`
	User          *OCSFUser      `json:"user,omitempty"`
	ParentProcess *OCSFProcess   `json:"parent_process,omitempty"`
	Lineage       []string       `json:"lineage,omitempty"`
	NamespacePID  uint32         `json:"namespace_pid,omitempty"`
	Container     *OCSFContainer `json:"container,omitempty"`
}

// OCSFFile is a file object.
type OCSFFile struct {
	Name   string            `json:"name"`
	Path   string            `json:"path,omitempty"`
	TypeID int               `json:"type_id"`
	Type   string            `json:"type"`
	Hashes []OCSFFingerprint `json:"hashes,omitempty"`
}

// OCSFFingerprint is a file hash.
type OCSFFingerprint struct {
	AlgorithmID int    `json:"algorithm_id"`
	Algorithm   string `json:"algorithm"`
	Value       string `json:"value"`
}

// OCSFUser is a user object.
type OCSFUser struct {
	Name string `json:"name,omitempty"`
	UID  string `json:"uid"`
}

// OCSFContainer is a container object.
type OCSFContainer struct {
	UID          string     `json:"uid"`
	Name         string     `json:"name,omitempty"`
	Runtime      string     `json:"runtime,omitempty"`
	Image        *OCSFImage `json:"image,omitempty"`
	PodUUID      string     `json:"pod_uuid,omitempty"`
	Orchestrator string     `json:"orchestrator,omitempty"`
}

// OCSFImage is a container image.
type OCSFImage struct {
	UID  string `json:"uid"`
	Name string `json:"name"`
	Tag  string `json:"tag,omitempty"`
}

// OCSFEndpoint is a network endpoint.
type OCSFEndpoint struct {
	IP       string `json:"ip,omitempty"`
	Port     int    `json:"port,omitempty"`
	Hostname string `json:"hostname,omitempty"`
}

// OCSFObservable is one indicator pulled out for search.
type OCSFObservable struct {
	Name   string `json:"name"`
	Type   string `json:"type"`
	TypeID int    `json:"type_id"`
	Value  string `json:"value"`
}

// mitreTactics maps the catalogue's tactic names to ATT&CK ids and names.
var mitreTactics = map[string]OCSFEntity{
	"Reconnaissance":      {"TA0043", "Reconnaissance"},
	"ResourceDevelopment": {"TA0042", "Resource Development"},
	"InitialAccess":       {"TA0001", "Initial Access"},
	"Execution":           {"TA0002", "Execution"},
	"Persistence":         {"TA0003", "Persistence"},
	"PrivilegeEscalation": {"TA0004", "Privilege Escalation"},
	"DefenseEvasion":      {"TA0005", "Defense Evasion"},
	"CredentialAccess":    {"TA0006", "Credential Access"},
	"Discovery":           {"TA0007", "Discovery"},
	"LateralMovement":     {"TA0008", "Lateral Movement"},
	"Collection":          {"TA0009", "Collection"},
	"Exfiltration":        {"TA0010", "Exfiltration"},
	"CommandAndControl":   {"TA0011", "Command and Control"},
	"Impact":              {"TA0040", "Impact"},
}

// ocsfSeverity maps a finding severity to OCSF severity_id and caption;
// the bands are the finding model's.
func ocsfSeverity(sev float64) (int, string) {
	switch finding.SeverityLabel(sev) {
	case "Critical":
		return 5, "Critical"
	case "High":
		return 4, "High"
	case "Medium":
		return 3, "Medium"
	default:
		return 2, "Low"
	}
}

func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// OCSF maps f to an OCSF Detection Finding: activity Create for a new
// finding, Update for a later revision.
func OCSF(f *finding.Finding, isNew bool, o Options) *OCSFFinding {
	o = o.withDefaults()
	act, actName := OCSFActivityUpdate, "Update"
	if isNew {
		act, actName = OCSFActivityCreate, "Create"
	}
	sevID, sev := ocsfSeverity(f.Severity)
	status, statusName := 1, "New"
	if f.Service.Archived {
		status, statusName = 5, "Archived"
	}
	s := f.Service
	out := &OCSFFinding{
		ActivityID: act, ActivityName: actName,
		CategoryUID: OCSFCategoryFindings, CategoryName: "Findings",
		ClassUID: OCSFClassDetectionFinding, ClassName: "Detection Finding",
		TypeUID: OCSFClassDetectionFinding*100 + act, TypeName: "Detection Finding: " + actName,
		Time: ms(f.UpdatedAt), SeverityID: sevID, Severity: sev, StatusID: status, Status: statusName,
		Message: f.Title, IsAlert: !s.Archived, Count: s.Count,
		StartTime: ms(s.EventFirstSeen), EndTime: ms(s.EventLastSeen),
		Metadata: OCSFMetadata{
			Version: OCSFVersion, UID: RecordID(f), LogName: "findings",
			Product:  OCSFProduct{Name: "mamori", VendorName: "mamori", Version: o.ProductVersion},
			Profiles: []string{"host", "container"},
		},
		FindingInfo: OCSFFindingInfo{
			UID: f.ID, Title: f.Title, Desc: f.Description, Types: []string{f.Type},
			CreatedTime: ms(f.CreatedAt), ModifiedTime: ms(f.UpdatedAt),
			FirstSeenTime: ms(s.EventFirstSeen), LastSeenTime: ms(s.EventLastSeen),
		},
	}
	if s.AdditionalInfo.Sample {
		out.Metadata.Labels = []string{"sample"}
	}
	if d := s.Detector; d != nil {
		name, uid, typ := d.Name, f.Type, "Behavioral"
		typeID := 2
		if d.Rule != "" {
			uid, typ, typeID = d.Rule, "Rule", 1
		}
		if name == "" {
			name = f.Type
		}
		out.Metadata.Product.Feature = &OCSFFeature{Name: name}
		out.FindingInfo.Analytic = &OCSFAnalytic{Name: name, UID: uid, Type: typ, TypeID: typeID}
		if a, ok := ocsfAttack(d.Tactic, d.Technique); ok {
			out.FindingInfo.Attacks = []OCSFAttack{a}
		}
	}
	nodeID, host := nodeOf(f)
	out.Device = &OCSFDevice{TypeID: 1, Type: "Server", UID: nodeID, Hostname: host, Name: host}
	out.Resources = ocsfResources(f, nodeID, host)
	ev := OCSFEvidence{Container: ocsfContainer(f)}
	if p := s.RuntimeDetails.Process; p != nil {
		ev.Process = ocsfProcess(p)
		ev.Process.Container = ev.Container
	}
	ev.File = ocsfContextFile(f)
	ev.DstEndpoint = ocsfEndpoint(f)
	if len(s.RuntimeDetails.Context) > 0 {
		ev.Data = s.RuntimeDetails.Context
	}
	if ev.Process != nil || ev.Container != nil || ev.File != nil || ev.DstEndpoint != nil {
		out.Evidences = []OCSFEvidence{ev}
	} else {
		// evidences needs at least one artifact: the node is always known.
		out.Evidences = []OCSFEvidence{{Device: out.Device, Data: ev.Data}}
	}
	out.Observables = ocsfObservables(f, ev)
	unmapped := map[string]any{"resourceType": f.Resource.ResourceType, "schemaVersion": f.SchemaVersion,
		"agentDetails": s.AdditionalInfo.AgentDetails}
	if s.Evidence != nil {
		unmapped["threatIntelligenceDetails"] = s.Evidence.ThreatIntelligenceDetails
	}
	out.Unmapped = unmapped
	return out
}

func ocsfAttack(tactic, technique string) (OCSFAttack, bool) {
	if tactic == "" && technique == "" {
		return OCSFAttack{}, false
	}
	a := OCSFAttack{Version: "v15"}
	if t, ok := mitreTactics[tactic]; ok {
		a.Tactic = &t
	} else if tactic != "" {
		a.Tactic = &OCSFEntity{Name: tactic}
	}
	if technique != "" {
		base, _, sub := strings.Cut(technique, ".")
		a.Technique = &OCSFEntity{UID: base}
		if sub {
			a.SubTechnique = &OCSFEntity{UID: technique}
		}
	}
	return a, true
}

func ocsfResources(f *finding.Finding, nodeID, host string) []OCSFResource {
	r := f.Resource
	out := []OCSFResource{{UID: nodeID, Name: host, Hostname: host, Type: "Instance"}}
	if c := r.ContainerDetails; c != nil {
		out = append(out, OCSFResource{UID: c.ID, Name: c.Name, Type: "Container", Labels: labelList(c.Labels)})
	}
	if k := r.KubernetesDetails; k != nil {
		w := k.KubernetesWorkloadDetails
		uid := w.UID
		if uid == "" {
			uid = w.Namespace + "/" + w.Name
		}
		out = append(out, OCSFResource{UID: uid, Name: w.Name, Type: "Kubernetes " + strings.TrimSuffix(w.Type, "s"), Namespace: w.Namespace})
	}
	if e := r.ECSClusterDetails; e != nil && e.TaskDetails.ARN != "" {
		out = append(out, OCSFResource{UID: e.TaskDetails.ARN, Name: e.Name, Type: "ECS Task"})
	}
	return out
}

func labelList(m map[string]string) []string {
	if len(m) == 0 {
		return nil
	}
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	slices.Sort(out)
	return out
}

func ocsfContainer(f *finding.Finding) *OCSFContainer {
	c := f.Resource.ContainerDetails
	if c == nil {
		return nil
	}
	oc := &OCSFContainer{UID: c.ID, Name: c.Name, Runtime: c.ContainerRuntime}
	if c.Image != "" {
		repo, tag := splitImage(c.Image)
		oc.Image = &OCSFImage{UID: c.Image, Name: repo, Tag: tag}
	}
	if k := f.Resource.KubernetesDetails; k != nil {
		oc.PodUUID, oc.Orchestrator = k.KubernetesWorkloadDetails.UID, "Kubernetes"
	}
	if f.Resource.ECSClusterDetails != nil {
		oc.Orchestrator = "ECS"
	}
	return oc
}

func ocsfProcess(p *finding.Process) *OCSFProcess {
	op := &OCSFProcess{PID: p.Pid, UID: p.UUID, Name: p.Name, CmdLine: commandLine(p.Args),
		CreatedTime: ms(p.StartTime), NamespacePID: p.NamespacePid,
		User: &OCSFUser{Name: p.User, UID: strconv.FormatUint(uint64(p.UserID), 10)}}
	if p.ExecutablePath != "" {
		op.File = ocsfFile(p.ExecutablePath, p.ExecutableSha256)
	}
	// OCSF lineage runs from the oldest ancestor to the process itself;
	// the finding's lineage starts at the parent.
	if len(p.Lineage) > 0 {
		for _, a := range slices.Backward(p.Lineage) {
			op.Lineage = append(op.Lineage, a.Exe)
		}
		op.Lineage = append(op.Lineage, p.ExecutablePath)
	}
	if len(p.Lineage) > 0 {
		a := p.Lineage[0]
		pp := &OCSFProcess{PID: a.PID, UID: a.UUID, Name: a.Name, CmdLine: commandLine(a.Args),
			CreatedTime: ms(a.Start), NamespacePID: a.NSPID,
			User: &OCSFUser{Name: a.User, UID: strconv.FormatUint(uint64(a.UID), 10)}}
		if a.Exe != "" {
			pp.File = ocsfFile(a.Exe, "")
		}
		op.ParentProcess = pp
	}
	return op
}

func ocsfFile(p, sha256 string) *OCSFFile {
	f := &OCSFFile{Name: path.Base(p), Path: p, TypeID: 1, Type: "Regular File"}
	if sha256 != "" {
		f.Hashes = []OCSFFingerprint{{AlgorithmID: 3, Algorithm: "SHA-256", Value: sha256}}
	}
	return f
}

// fileContextKeys are the context keys naming the file a finding is about,
// most specific first.
var fileContextKeys = []string{"threatFilePath", "filePath", "scriptPath", "libraryPath", "moduleFilePath", "binaryPath", "shellHistoryFilePath", "socketPath", "releaseAgentPath"}

func ocsfContextFile(f *finding.Finding) *OCSFFile {
	for _, k := range fileContextKeys {
		if p := contextString(f, k); p != "" {
			hash := contextString(f, "threatFileSha256")
			if k == "moduleFilePath" {
				hash = contextString(f, "moduleSha256")
			}
			return ocsfFile(p, hash)
		}
	}
	return nil
}

func ocsfEndpoint(f *finding.Finding) *OCSFEndpoint {
	ctx := f.Service.RuntimeDetails.Context
	var e OCSFEndpoint
	if ip, ok := ctx["remoteIpDetails"].(map[string]any); ok {
		for _, k := range []string{"ipAddressV4", "ipAddressV6"} {
			if s, ok := ip[k].(string); ok && s != "" {
				e.IP = s
				break
			}
		}
	}
	if e.IP == "" {
		e.IP = contextString(f, "remoteAddress")
	}
	e.Port = intOf(ctx["remotePort"])
	e.Hostname = contextString(f, "domain")
	if e == (OCSFEndpoint{}) {
		return nil
	}
	return &e
}

// intOf reads a JSON number that may be an int (in memory) or a float64
// (after a JSON round trip).
func intOf(v any) int {
	switch n := v.(type) {
	case int:
		return n
	case int64:
		return int(n)
	case uint16:
		return int(n)
	case uint32:
		return int(n)
	case float64:
		return int(n)
	}
	return 0
}

// OCSF observable type ids used here.
const (
	obsHostname    = 1
	obsIP          = 2
	obsFileName    = 7
	obsHash        = 8
	obsProcessName = 9
)

func ocsfObservables(f *finding.Finding, ev OCSFEvidence) []OCSFObservable {
	var out []OCSFObservable
	add := func(name, typ string, id int, v string) {
		if v != "" {
			out = append(out, OCSFObservable{Name: name, Type: typ, TypeID: id, Value: v})
		}
	}
	if p := ev.Process; p != nil {
		add("evidences[0].process.name", "Process Name", obsProcessName, p.Name)
		if p.File != nil {
			for _, h := range p.File.Hashes {
				add("evidences[0].process.file.hashes.value", "Hash", obsHash, h.Value)
			}
		}
	}
	if e := ev.DstEndpoint; e != nil {
		add("evidences[0].dst_endpoint.ip", "IP Address", obsIP, e.IP)
		add("evidences[0].dst_endpoint.hostname", "Hostname", obsHostname, e.Hostname)
	}
	if fl := ev.File; fl != nil {
		add("evidences[0].file.name", "File Name", obsFileName, fl.Name)
	}
	return out
}

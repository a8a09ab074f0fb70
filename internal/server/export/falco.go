package export

import (
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/mamori-dev/mamori/internal/finding"
)

// FalcoAlert is the JSON Falco writes for one alert (json_output: true), the
// input falcosidekick forwards to its destinations.
type FalcoAlert struct {
	Output       string         `json:"output"`
	Priority     string         `json:"priority"`
	Rule         string         `json:"rule"`
	Time         string         `json:"time"`
	OutputFields map[string]any `json:"output_fields"`
	Source       string         `json:"source"`
	Tags         []string       `json:"tags"`
	Hostname     string         `json:"hostname"`
}

// falcoPriority maps the severity bands onto Falco's syslog-style
// priorities: Critical stays Critical, High is Error, Medium Warning, Low
// Notice (Falco has no "High"; Error is what its own high-risk rules use).
func falcoPriority(sev float64) string {
	switch finding.SeverityLabel(sev) {
	case "Critical":
		return "Critical"
	case "High":
		return "Error"
	case "Medium":
		return "Warning"
	default:
		return "Notice"
	}
}

// Falco maps f to a Falco alert. The alert time is the last time the
// activity was seen; output_fields use Falco's field names where Falco has
// one (proc.*, container.*, k8s.*, user.*, fd.*) and mamori.* otherwise.
func Falco(f *finding.Finding, o Options) *FalcoAlert {
	o = o.withDefaults()
	s := f.Service
	at := s.EventLastSeen
	if at.IsZero() {
		at = f.UpdatedAt
	}
	at = at.UTC()
	nodeID, host := nodeOf(f)
	if host == "" {
		host = nodeID
	}
	fields := map[string]any{
		"evt.time": at.UnixNano(), "evt.hostname": host,
		"mamori.finding.id": f.ID, "mamori.finding.type": f.Type, "mamori.severity": f.Severity,
		"mamori.count": s.Count, "mamori.node.id": nodeID, "mamori.cluster": clusterOf(f, o),
	}
	// text holds "name=value" pairs for the output line, in Falco's style.
	var text []string
	put := func(field, short string, v any) {
		if v == nil || v == "" {
			return
		}
		fields[field] = v
		if short != "" {
			text = append(text, short+"="+falcoValue(v))
		}
	}
	if p := s.RuntimeDetails.Process; p != nil {
		put("user.name", "user", p.User)
		put("user.uid", "user_uid", p.UserID)
		put("proc.name", "process", p.Name)
		put("proc.exepath", "exepath", p.ExecutablePath)
		if cl := falcoCmdline(p); cl != "" {
			// Already escaped argument by argument; shown unquoted as Falco does.
			fields["proc.cmdline"] = cl
			text = append(text, "command="+cl)
		}
		put("proc.pid", "pid", p.Pid)
		if p.NamespacePid != 0 {
			put("proc.vpid", "", p.NamespacePid)
		}
		put("proc.cwd", "", p.Pwd)
		put("mamori.proc.sha256", "", p.ExecutableSha256)
		if len(p.Lineage) > 0 {
			a := p.Lineage[0]
			put("proc.ppid", "", a.PID)
			put("proc.pname", "parent", a.Name)
			put("proc.pexepath", "", a.Exe)
		}
	}
	if c := f.Resource.ContainerDetails; c != nil {
		short := c.ID
		if len(short) > 12 {
			short = short[:12] // Falco's container.id is the short id
		}
		repo, tag := splitImage(c.Image)
		put("container.id", "container_id", short)
		put("container.full_id", "", c.ID)
		put("container.name", "container_name", c.Name)
		put("container.image", "image", c.Image)
		put("container.image.repository", "", repo)
		put("container.image.tag", "", tag)
		put("mamori.container.runtime", "", c.ContainerRuntime)
		fields["container.privileged"] = c.SecurityContext != nil && c.SecurityContext.Privileged
	} else {
		fields["container.id"] = "host"
		text = append(text, "container_id=host")
	}
	if k := f.Resource.KubernetesDetails; k != nil {
		w := k.KubernetesWorkloadDetails
		put("k8s.ns.name", "k8s_ns", w.Namespace)
		put("k8s.pod.name", "k8s_pod", w.Name)
		put("k8s.pod.uid", "", w.UID)
	}
	if e := f.Resource.ECSClusterDetails; e != nil {
		put("mamori.ecs.cluster", "", e.Name)
		put("mamori.ecs.task_arn", "", e.TaskDetails.ARN)
	}
	if fl := ocsfContextFile(f); fl != nil {
		put("fd.name", "file", fl.Path)
		put("fd.filename", "", path.Base(fl.Path))
	}
	if e := ocsfEndpoint(f); e != nil {
		if e.IP != "" {
			put("fd.sip", "", e.IP)
			if e.Port != 0 {
				put("fd.sport", "", e.Port)
				put("fd.name", "connection", e.IP+":"+strconv.Itoa(e.Port))
			} else {
				put("fd.name", "connection", e.IP)
			}
		}
		put("fd.sip.name", "domain", e.Hostname)
	}
	if d := s.Detector; d != nil {
		put("mamori.detector", "", d.Name)
		put("mamori.rule", "", d.Rule)
	}
	prio := falcoPriority(f.Severity)
	output := at.Format("15:04:05.000000000") + ": " + prio + " " + f.Title + " (" + strings.Join(append(text, "type="+f.Type), " ") + ")"
	return &FalcoAlert{
		Output: output, Priority: prio, Rule: f.Title, Time: at.Format(time.RFC3339Nano),
		OutputFields: fields, Source: "syscall", Tags: falcoTags(f), Hostname: host,
	}
}

// falcoCmdline is Falco's proc.cmdline: the process name and its arguments
// after argv[0].
func falcoCmdline(p *finding.Process) string {
	args := p.Args
	if len(args) > 0 {
		args = args[1:]
	}
	return commandLine(append([]string{p.Name}, args...))
}

// falcoValue renders a value for the output line; strings with spaces or
// control characters are quoted so they cannot fake another field.
func falcoValue(v any) string {
	switch x := v.(type) {
	case string:
		if strings.ContainsFunc(x, func(r rune) bool { return r == ' ' || r == '=' || r == '"' || !unicode.IsPrint(r) }) {
			return strconv.Quote(x)
		}
		return x
	case uint32:
		return strconv.FormatUint(uint64(x), 10)
	case int:
		return strconv.Itoa(x)
	}
	return ""
}

// falcoTags follow Falco's tag style: "container" or "host", "mitre_<tactic>"
// and the technique id.
func falcoTags(f *finding.Finding) []string {
	tags := []string{"mamori"}
	if f.Resource.ContainerDetails != nil {
		tags = append(tags, "container")
	} else {
		tags = append(tags, "host")
	}
	if d := f.Service.Detector; d != nil {
		if t, ok := mitreTactics[d.Tactic]; ok {
			tags = append(tags, "mitre_"+strings.ReplaceAll(strings.ToLower(t.Name), " ", "_"))
		}
		if d.Technique != "" {
			tags = append(tags, d.Technique)
		}
	}
	if f.Service.AdditionalInfo.Sample {
		tags = append(tags, "sample")
	}
	slices.Sort(tags)
	return tags
}

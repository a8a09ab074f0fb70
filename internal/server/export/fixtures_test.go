package export

import (
	"time"

	"github.com/mamori-dev/mamori/internal/event"
	"github.com/mamori-dev/mamori/internal/finding"
)

var t0 = time.Date(2025, 3, 14, 9, 26, 53, 589_000_000, time.UTC)

// fixtures are findings of three shapes, with fixed times so that their
// encodings can be compared with golden files: a reverse shell in a
// Kubernetes pod, a threat-intel DNS finding on the host, and a custom
// rule's finding in a podman container with hostile strings, archived.
func fixtures() map[string]*finding.Finding {
	agent := finding.Agent{NodeID: "node-7f3a", Hostname: "worker-1", Version: "0.1.0"}
	proc := event.Process{PID: 4242, NSPID: 7, UID: 0, EUID: 0, Comm: "sh", UUID: "7d9c2a52-6c1e-4f0e-9a55-3f1a2b3c4d5e",
		ParentUUID: "1b2c3d4e-0000-4000-8000-000000000001", Exe: "/bin/sh", Args: []string{"sh", "-i"},
		ExeSHA256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", Cwd: "/app", User: "root",
		Start: t0.Add(-3 * time.Second),
		Lineage: []event.Ancestor{{PID: 4200, UUID: "1b2c3d4e-0000-4000-8000-000000000001", Name: "python3",
			Exe: "/usr/bin/python3.11", Args: []string{"python3", "-c", "import socket,os"}, Start: t0.Add(-time.Minute)}}}
	shell := finding.New("Execution:Runtime/ReverseShell", &event.Event{Time: t0, Process: proc,
		Container: &event.Container{ID: "4c6b9f2e8d7a1b3c5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d", Name: "web",
			Runtime: "containerd", Image: "registry.example.com/shop/web:2.4.1",
			Pod: &event.Pod{Name: "web-5d8f7c9b4-x2x7k", Namespace: "shop", UID: "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"}}},
		agent, "", map[string]any{"shell": "/bin/sh", "remoteAddress": "203.0.113.50", "result": "success"})
	shell.Service.Detector.Name = "reverse-shell"
	shell.Service.Count = 3
	shell.Service.EventLastSeen = t0.Add(2 * time.Minute)
	shell.CreatedAt, shell.UpdatedAt = t0, t0.Add(2*time.Minute+time.Second)

	dnsProc := proc
	dnsProc.Comm, dnsProc.Exe, dnsProc.Args, dnsProc.Lineage = "curl", "/usr/bin/curl", []string{"curl", "-s", "http://c2.guarddutyc2activityb.com/"}, nil
	dns := finding.New("Backdoor:Runtime/C&CActivity.B!DNS", &event.Event{Time: t0, Process: dnsProc}, agent, "c2.guarddutyc2activityb.com",
		map[string]any{"domain": "c2.guarddutyc2activityb.com", "queryType": "A", "dnsServer": "10.0.0.2", "protocol": "udp"})
	dns.Service.Detector.Name = "intel-dns"
	dns.Service.Evidence = &finding.Evidence{ThreatIntelligenceDetails: []finding.ThreatIntel{{
		ThreatListName: "mamori-builtin", ThreatNames: []string{"test C&C domain"}, Indicator: "guarddutyc2activityb.com"}}}
	dns.CreatedAt, dns.UpdatedAt = t0, t0

	ruleProc := proc
	ruleProc.Comm, ruleProc.Exe, ruleProc.ExeSHA256, ruleProc.Lineage = "evil\x1b[2J", "/tmp/x y/evil", "", nil
	ruleProc.Args = []string{"evil", "--name=\"a b\"", "line1\nline2"}
	custom := finding.New("Custom:Runtime/WriteBelowEtc", &event.Event{Time: t0, Process: ruleProc,
		Container: &event.Container{ID: "9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0", Name: "db",
			Runtime: "podman", Image: "localhost/postgres@sha256:0000", Privileged: true,
			Labels: map[string]string{"app": "db", "tier": "data"}}},
		agent, "", map[string]any{"filePath": "/etc/passwd", "ruleId": "write-below-etc", "result": "EACCES"})
	custom.Severity, custom.SeverityLabel = 9.5, "Critical"
	custom.Title, custom.Description = "Write below /etc", "A process wrote below /etc: \"/etc/passwd\"."
	custom.Service.Detector.Name, custom.Service.Detector.Rule = "rule:write-below-etc", "write-below-etc"
	custom.Service.Detector.Tactic, custom.Service.Detector.Technique = "Persistence", "T1543"
	custom.Resource.ContainerDetails.Labels = map[string]string{"app": "db", "tier": "data"}
	custom.Service.Archived = true
	custom.CreatedAt, custom.UpdatedAt = t0, t0.Add(time.Hour)
	custom.Service.EventLastSeen = t0.Add(time.Hour)
	return map[string]*finding.Finding{"reverse-shell": shell, "intel-dns": dns, "custom-rule": custom}
}

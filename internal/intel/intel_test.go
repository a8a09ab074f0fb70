package intel

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func write(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestBuiltinMostSpecificSuffixWins(t *testing.T) {
	s, err := NewStore("")
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]Family{
		"guarddutyc2activityb.com":                  CommandAndControl,
		"x.c2.GuardDutyC2ActivityB.com.":            CommandAndControl,
		"crypto.guarddutyc2activityb.com":           CryptoCurrency,
		"a.suspicious-rep.guarddutyc2activityb.com": SuspiciousReputation,
		"guarddutydgaactivity.com":                  DGA,
	} {
		m := s.Set().Domain(name)
		if len(m) != 1 || m[0].Family != want {
			t.Errorf("%s: %+v, want %s", name, m, want)
		}
	}
	if m := s.Set().Domain("notguarddutyc2activityb.com"); m != nil {
		t.Errorf("suffix matched across a label boundary: %+v", m)
	}
}

func TestFormatsAndErrors(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "cc.txt", "# C2 servers\n10.9.8.7\n192.0.2.0/24\nevil.example\n")
	write(t, dir, "feed.csv", "indicator,family,name\n203.0.113.5,tor,relay-1\n"+strings.Repeat("a", 64)+",malware,EICAR-like\n")
	write(t, dir, "stix.json", `{"type":"bundle","id":"bundle--1","objects":[
	 {"type":"indicator","spec_version":"2.1","id":"indicator--1","name":"pool","pattern":"[domain-name:value = 'pool.mine.example'] OR [ipv4-addr:value = '198.51.100.9']","pattern_type":"stix","indicator_types":["malicious-activity"],"x_mamori_family":"crypto"},
	 {"type":"malware","id":"malware--1","name":"ignored"}]}`)
	write(t, dir, "bad.txt", "# family: dga\nok.example\nnot a domain!\n")
	s, err := NewStore(dir)
	if err == nil || !strings.Contains(err.Error(), "bad.txt:3:") {
		t.Fatalf("want an error naming bad.txt:3, got %v", err)
	}
	set := s.Set()
	check := func(what string, m []Match, fam Family) {
		t.Helper()
		if len(m) != 1 || m[0].Family != fam {
			t.Errorf("%s: %+v, want %s", what, m, fam)
		}
	}
	check("ip", set.IP("10.9.8.7"), CommandAndControl)
	check("cidr", set.IP("192.0.2.77"), CommandAndControl)
	check("mapped v4", set.IP("::ffff:10.9.8.7"), CommandAndControl)
	check("domain", set.Domain("www.evil.example"), CommandAndControl)
	check("csv ip", set.IP("203.0.113.5"), Tor)
	check("csv hash", set.Hash(strings.Repeat("A", 64)), Malware)
	check("stix domain", set.Domain("pool.mine.example"), CryptoCurrency)
	check("stix ip", set.IP("198.51.100.9"), CryptoCurrency)
	check("good line of a bad file", set.Domain("ok.example"), DGA)
	if set.IP("10.9.8.8") != nil {
		t.Error("unlisted IP matched")
	}
}

func TestReloadWithoutRestart(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "cc.txt", "10.0.0.1\n")
	s, err := NewStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	defer close(stop)
	go s.Watch(stop, 20*time.Millisecond, nil)
	time.Sleep(30 * time.Millisecond)
	write(t, dir, "cc.txt", "10.0.0.2\n")
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) && s.Set().IP("10.0.0.2") == nil {
		time.Sleep(10 * time.Millisecond)
	}
	if s.Set().IP("10.0.0.2") == nil || s.Set().IP("10.0.0.1") != nil {
		t.Fatal("list change not picked up")
	}
}

func FuzzLoad(f *testing.F) {
	f.Add("10.0.0.1\n# family: tor\n1.2.3.4/8\n", "x.csv")
	f.Add("indicator,family\nevil.example,cc\n", "cc.csv")
	f.Add(`{"type":"bundle","objects":[{"type":"indicator","pattern":"[ipv4-addr:value = '1.2.3.4']","x_mamori_family":"cc"}]}`, "s.json")
	f.Fuzz(func(t *testing.T, content, name string) {
		if strings.ContainsAny(name, "/\x00") || name == "" || name == "." || name == ".." {
			return
		}
		dir := t.TempDir()
		if os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644) != nil {
			return
		}
		b := NewBuilder()
		_ = loadFile(b, filepath.Join(dir, name)) // must not panic
		set := b.Set()
		set.Domain(content)
		set.IP(content)
	})
}

package intel

import (
	"fmt"
	"net/netip"
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

func TestCIDRsMostSpecificWins(t *testing.T) {
	b := NewBuilder()
	for v, f := range map[string]Family{"10.0.0.0/8": CommandAndControl, "10.1.0.0/16": Tor, "10.1.2.3": DropPoint,
		"2001:db8::/32": BlackHole, "2001:db8:1::/48": CryptoCurrency, "::ffff:192.0.2.0/120": Phishing, "0.0.0.0/0": DGA} {
		if !b.Add(v, Match{Family: f, List: "t"}) {
			t.Fatalf("%s refused", v)
		}
	}
	s := b.Set()
	for addr, want := range map[string]Family{
		"10.9.9.9": CommandAndControl, "10.1.9.9": Tor, "10.1.2.3": DropPoint, "::ffff:10.1.2.3": DropPoint,
		"2001:db8:2::1": BlackHole, "2001:db8:1::1": CryptoCurrency, "192.0.2.200": Phishing, "8.8.8.8": DGA,
		"fe80::1%eth0": "",
	} {
		m := s.IP(addr)
		got := Family("")
		if len(m) > 0 {
			got = m[0].Family
		}
		if got != want {
			t.Errorf("%s: %s, want %q", addr, got, want)
		}
	}
}

func TestDomainNormalisation(t *testing.T) {
	b := NewBuilder()
	b.Add("*.Wild.Example.", Match{Family: Phishing})
	b.Add("exact.example", Match{Family: DGA})
	s := b.Set()
	for name, want := range map[string]bool{"wild.example": true, "a.b.wild.example.": true, "WILD.EXAMPLE": true,
		"exact.example": true, "x.exact.example": true, "example": false, "wild.example.org": false, "xwild.example": false} {
		if got := s.Domain(name) != nil; got != want {
			t.Errorf("%s: matched %v, want %v", name, got, want)
		}
	}
	if b2 := NewBuilder(); b2.Add("not a domain", Match{}) || b2.Add("localhost", Match{}) || b2.Add("a..b/c", Match{}) {
		t.Error("junk accepted as a domain")
	}
}

func TestSTIXValidityAndHashes(t *testing.T) {
	sum := strings.Repeat("ab", 32)
	bundle := `{"type":"bundle","id":"bundle--2","objects":[
	 {"type":"indicator","id":"indicator--a","name":"current","pattern":"[domain-name:value = 'current.example']","pattern_type":"stix","valid_from":"2020-01-01T00:00:00Z","labels":["phishing"]},
	 {"type":"indicator","id":"indicator--b","name":"revoked","revoked":true,"pattern":"[domain-name:value = 'revoked.example']","labels":["phishing"]},
	 {"type":"indicator","id":"indicator--c","name":"expired","valid_until":"2021-01-01T00:00:00Z","pattern":"[domain-name:value = 'expired.example']","labels":["phishing"]},
	 {"type":"indicator","id":"indicator--d","name":"future","valid_from":"2999-01-01T00:00:00Z","pattern":"[domain-name:value = 'future.example']","labels":["phishing"]},
	 {"type":"indicator","id":"indicator--e","name":"trojan","pattern":"[file:hashes.'SHA-256' = '` + sum + `' AND file:name = 'x']","indicator_types":["malicious-activity"]},
	 {"type":"indicator","id":"indicator--f","name":"net","pattern":"[ipv4-addr:value = '203.0.113.0/24'] OR [ipv6-addr:value = '2001:db8::1']","x_mamori_family":"c&c"},
	 {"type":"indicator","id":"indicator--g","name":"yara","pattern":"rule x {}","pattern_type":"yara","labels":["malware"]}]}`
	b := NewBuilder()
	err := b.Load("malware-feed.json", strings.NewReader(bundle))
	if err == nil || !strings.Contains(err.Error(), `pattern_type "yara" unsupported`) {
		t.Errorf("unsupported pattern not reported: %v", err)
	}
	s := b.Set()
	for name, want := range map[string]bool{"current.example": true, "revoked.example": false, "expired.example": false, "future.example": false} {
		if got := s.Domain(name) != nil; got != want {
			t.Errorf("%s listed %v, want %v", name, got, want)
		}
	}
	if m := s.Hash(sum); len(m) != 1 || m[0].Family != Malware || m[0].Name != "trojan" {
		t.Errorf("hash from the file name's family: %+v", m)
	}
	if m := s.IP("203.0.113.77"); len(m) != 1 || m[0].Family != CommandAndControl {
		t.Errorf("STIX CIDR: %+v", m)
	}
	if m := s.IP("2001:db8::1"); len(m) != 1 {
		t.Errorf("STIX IPv6: %+v", m)
	}
}

func TestPlainCommentsAndErrorCap(t *testing.T) {
	var src strings.Builder
	src.WriteString("# family: tor\n198.51.100.1   # exit node\n")
	for i := 0; i < 100; i++ {
		src.WriteString("!bad!\n")
	}
	b := NewBuilder()
	err := b.Load("list.txt", strings.NewReader(src.String()))
	if b.Set().IP("198.51.100.1") == nil {
		t.Error("entry with a trailing comment not loaded")
	}
	if err == nil || strings.Count(err.Error(), "\n") > 21 || !strings.Contains(err.Error(), "and 80 more errors") {
		t.Errorf("errors not capped: %d lines", strings.Count(err.Error(), "\n"))
	}
}

func BenchmarkLookups(b *testing.B) {
	bl := NewBuilder()
	for i := 0; i < 100000; i++ {
		bl.Add(fmt.Sprintf("10.%d.%d.0/24", i>>8&255, i&255), Match{Family: Tor})
		bl.Add(fmt.Sprintf("h%d.evil.example", i), Match{Family: CommandAndControl})
	}
	for i := 0; i < 1000; i++ {
		bl.Add(fmt.Sprintf("172.16.%d.0/%d", i&255, 16+i%9), Match{Family: DropPoint})
	}
	s := bl.Set()
	b.Run("ip", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			s.IP("192.168.7.9")
		}
	})
	b.Run("domain", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			s.Domain("a.b.c.www.example.org")
		}
	})
}

// Fuzzers: the parsers take feed data, which may be hostile. Seeds are
// committed under testdata/fuzz.

func FuzzPlain(f *testing.F) {
	f.Add("10.0.0.1\n# family: tor\n1.2.3.4/8\n")
	f.Fuzz(func(t *testing.T, content string) { loadAndProbe(t, "cc.txt", content) })
}

func FuzzCSV(f *testing.F) {
	f.Add("indicator,family,name\nevil.example,cc,x\n")
	f.Fuzz(func(t *testing.T, content string) { loadAndProbe(t, "feed.csv", content) })
}

func FuzzSTIX(f *testing.F) {
	f.Add(`{"type":"bundle","objects":[{"type":"indicator","pattern":"[ipv4-addr:value = '1.2.3.4']","x_mamori_family":"cc"}]}`)
	f.Fuzz(func(t *testing.T, content string) { loadAndProbe(t, "feed.json", content) })
}

// loadAndProbe loads content and checks that loading is deterministic and
// lookups of any of its words do not fail.
func loadAndProbe(t *testing.T, name, content string) {
	b1, b2 := NewBuilder(), NewBuilder()
	err1, err2 := b1.Load(name, strings.NewReader(content)), b2.Load(name, strings.NewReader(content))
	s1, s2 := b1.Set(), b2.Set()
	if s1.Len() != s2.Len() || (err1 == nil) != (err2 == nil) {
		t.Fatalf("loading twice differs: %d/%d indicators, %v / %v", s1.Len(), s2.Len(), err1, err2)
	}
	for _, w := range strings.FieldsFunc(content, func(r rune) bool { return strings.ContainsRune(" \n,'\"[]", r) }) {
		s1.Domain(w)
		s1.IP(w)
		s1.Hash(w)
	}
}

// Whatever Add accepts, a lookup finds.
func FuzzAddLookup(f *testing.F) {
	for _, s := range []string{"10.0.0.1", "10.0.0.0/8", "::ffff:1.2.3.4", "2001:db8::/33", "evil.example", "*.x.example",
		strings.Repeat("0", 64)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		b := NewBuilder()
		if !b.Add(v, Match{Family: Malware}) {
			return
		}
		s := b.Set()
		v = strings.ToLower(strings.TrimSpace(v))
		if p, err := netip.ParsePrefix(v); err == nil {
			v = p.Addr().String()
		}
		if s.IP(v) == nil && s.Domain(strings.TrimPrefix(v, "*.")) == nil && s.Hash(v) == nil {
			t.Fatalf("%q accepted but not found", v)
		}
	})
}

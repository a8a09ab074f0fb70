package e2e

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// expect checks the fields every finding must carry for the attack.
func expect(t *testing.T, f Finding, severity, ctrID string) {
	t.Helper()
	if got := f.Str("severityLabel"); got != severity {
		t.Errorf("%s: severity %s, want %s", f.Str("type"), got, severity)
	}
	if ctrID != "" && f.ContainerID() != ctrID {
		t.Errorf("%s: container %q, want %q", f.Str("type"), f.ContainerID(), ctrID)
	}
	if f.Str("service.runtimeDetails.process.uuid") == "" || f.Num("service.runtimeDetails.process.pid") == 0 {
		t.Errorf("%s: no process in %s", f.Str("type"), f)
	}
	if f.Str("resource.containerDetails.containerRuntime") != "podman" && ctrID != "" {
		t.Errorf("%s: runtime %q", f.Str("type"), f.Str("resource.containerDetails.containerRuntime"))
	}
}

func ctxIs(key, want string) func(Finding) bool {
	return func(f Finding) bool { return f.Str("service.runtimeDetails.context."+key) == want }
}

func and(ms ...func(Finding) bool) func(Finding) bool {
	return func(f Finding) bool {
		for _, m := range ms {
			if !m(f) {
				return false
			}
		}
		return true
	}
}

// TestDNSThreatIntel queries each test domain from a container; each
// family raises its own type. The benign twin queries an unlisted name.
func TestDNSThreatIntel(t *testing.T) {
	m := start(t)
	id := attackContainer(t)
	cases := []struct{ domain, typ, sev string }{
		{"c2.guarddutyc2activityb.com", "Backdoor:Runtime/C&CActivity.B!DNS", "High"},
		{"crypto.guarddutyc2activityb.com", "CryptoCurrency:Runtime/BitcoinTool.B!DNS", "High"},
		{"guarddutyblackholeactivity.com", "Trojan:Runtime/BlackholeTraffic!DNS", "Medium"},
		{"guarddutydroppointactivity.com", "Trojan:Runtime/DropPoint!DNS", "Medium"},
		{"guarddutydgaactivity.com", "Trojan:Runtime/DGADomainRequest.C!DNS", "High"},
		{"guarddutydrivebyactivity.com", "Trojan:Runtime/DriveBySourceTraffic!DNS", "High"},
		{"guarddutyphishingactivity.com", "Trojan:Runtime/PhishingDomainRequest!DNS", "High"},
		{"abused-rep.guarddutyc2activityb.com", "Impact:Runtime/AbusedDomainRequest.Reputation", "Medium"},
		{"crypto-rep.guarddutyc2activityb.com", "Impact:Runtime/BitcoinDomainRequest.Reputation", "High"},
		{"malicious-rep.guarddutyc2activityb.com", "Impact:Runtime/MaliciousDomainRequest.Reputation", "High"},
		{"suspicious-rep.guarddutyc2activityb.com", "Impact:Runtime/SuspiciousDomainRequest.Reputation", "Low"},
	}
	var script strings.Builder
	for _, c := range cases {
		fmt.Fprintf(&script, "nslookup %s %s >/dev/null 2>&1; ", c.domain, dnsServer)
	}
	script.WriteString("nslookup example.org " + dnsServer)
	Sh(t, id, script.String())
	for _, c := range cases {
		f := m.Wait(t, c.typ, and(InContainer(id), ctxIs("domain", c.domain)))
		expect(t, f, c.sev, id)
		if f.Str("service.evidence.threatIntelligenceDetails.0.threatListName") == "" {
			t.Errorf("%s: no threat-intel evidence", c.typ)
		}
	}
	m.None(t, "", 0, and(InContainer(id), ctxIs("domain", "example.org")))
}

// TestMetadataDNSRebind: a name answered with 169.254.169.254.
func TestMetadataDNSRebind(t *testing.T) {
	m := start(t)
	id := attackContainer(t)
	Sh(t, id, "nslookup example.net "+dnsServer+"; nslookup rebind.mamori.test "+dnsServer)
	f := m.Wait(t, "UnauthorizedAccess:Runtime/MetadataDNSRebind", InContainer(id))
	expect(t, f, "High", id)
	if f.Str("service.runtimeDetails.context.domain") != "rebind.mamori.test" {
		t.Errorf("domain %q", f.Str("service.runtimeDetails.context.domain"))
	}
	m.None(t, "UnauthorizedAccess:Runtime/MetadataDNSRebind", 0, and(InContainer(id), ctxIs("domain", "example.net")))
}

// TestIPThreatIntel connects to each listed address (loopback, nothing
// listening: the attempt is the evidence) and to an unlisted one.
func TestIPThreatIntel(t *testing.T) {
	m := start(t)
	id := attackContainer(t)
	cases := []struct{ ip, typ, sev string }{
		{ipCC, "Backdoor:Runtime/C&CActivity.B", "High"},
		{ipCrypto, "CryptoCurrency:Runtime/BitcoinTool.B", "High"},
		{ipTor, "UnauthorizedAccess:Runtime/TorClient", "High"},
		{ipBlackhole, "Trojan:Runtime/BlackholeTraffic", "Medium"},
		{ipDropPoint, "Trojan:Runtime/DropPoint", "Medium"},
	}
	var script strings.Builder
	for _, c := range cases {
		fmt.Fprintf(&script, "nc -w 1 %s 4444 </dev/null; ", c.ip)
	}
	script.WriteString("nc -w 1 " + ipUnlisted + " 4444 </dev/null")
	Sh(t, id, script.String())
	for _, c := range cases {
		f := m.Wait(t, c.typ, InContainer(id))
		expect(t, f, c.sev, id)
		if got := f.Str("service.runtimeDetails.context.remoteIpDetails.ipAddressV4"); got != c.ip {
			t.Errorf("%s: remote %q, want %s", c.typ, got, c.ip)
		}
	}
	m.None(t, "", 0, func(f Finding) bool {
		return f.Str("service.runtimeDetails.context.remoteIpDetails.ipAddressV4") == ipUnlisted
	})
}

// TestTorRelay: a process in the container listens; a Tor-listed address
// connects to it.
func TestTorRelay(t *testing.T) {
	m := start(t)
	id := attackContainer(t)
	go Sh(t, id, "nc -l -p 19001 </dev/null >/dev/null")
	deadline := time.Now().Add(5 * time.Second)
	var c net.Conn
	var err error
	for time.Now().Before(deadline) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ipTor)}, Timeout: time.Second}
		if c, err = d.Dial("tcp", "127.0.0.1:19001"); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("connect to the relay: %v", err)
	}
	c.Close()
	f := m.Wait(t, "UnauthorizedAccess:Runtime/TorRelay", InContainer(id))
	expect(t, f, "High", id)
}

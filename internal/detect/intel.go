package detect

import (
	"github.com/mamori-dev/mamori/internal/event"
	"github.com/mamori-dev/mamori/internal/finding"
	"github.com/mamori-dev/mamori/internal/intel"
	"strings"
)

// Finding types raised from threat intel, by family.
var (
	ipTypes = map[intel.Family]string{
		intel.CommandAndControl: "Backdoor:Runtime/C&CActivity.B",
		intel.CryptoCurrency:    "CryptoCurrency:Runtime/BitcoinTool.B",
		intel.Tor:               "UnauthorizedAccess:Runtime/TorClient",
		intel.BlackHole:         "Trojan:Runtime/BlackholeTraffic",
		intel.DropPoint:         "Trojan:Runtime/DropPoint",
	}
	dnsTypes = map[intel.Family]string{
		intel.CommandAndControl:    "Backdoor:Runtime/C&CActivity.B!DNS",
		intel.CryptoCurrency:       "CryptoCurrency:Runtime/BitcoinTool.B!DNS",
		intel.BlackHole:            "Trojan:Runtime/BlackholeTraffic!DNS",
		intel.DropPoint:            "Trojan:Runtime/DropPoint!DNS",
		intel.DGA:                  "Trojan:Runtime/DGADomainRequest.C!DNS",
		intel.DriveBy:              "Trojan:Runtime/DriveBySourceTraffic!DNS",
		intel.Phishing:             "Trojan:Runtime/PhishingDomainRequest!DNS",
		intel.AbusedReputation:     "Impact:Runtime/AbusedDomainRequest.Reputation",
		intel.BitcoinReputation:    "Impact:Runtime/BitcoinDomainRequest.Reputation",
		intel.MaliciousReputation:  "Impact:Runtime/MaliciousDomainRequest.Reputation",
		intel.SuspiciousReputation: "Impact:Runtime/SuspiciousDomainRequest.Reputation",
	}
	hashTypes = map[intel.Family]string{
		intel.Malware:       "Execution:Runtime/MaliciousFileExecuted",
		intel.CustomMalware: "Execution:Runtime/MaliciousFileExecuted.Custom",
	}
)

func values(m map[intel.Family]string) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

func evidence(ms []intel.Match) []finding.ThreatIntel {
	out := make([]finding.ThreatIntel, 0, len(ms))
	for _, m := range ms {
		ti := finding.ThreatIntel{ThreatListName: m.List, Indicator: m.Indicator}
		if m.Name != "" {
			ti.ThreatNames = []string{m.Name}
		}
		out = append(out, ti)
	}
	return out
}

// connectIntel: a connection attempt to a listed IP. Attempts count: a
// refused or filtered connect to a C&C address is still evidence.
func connectIntel(store *intel.Store) Detector {
	return newFn("intel-ip", Both, []event.Kind{event.KindConnect}, values(ipTypes), func(ev *event.Event, hit func(Hit)) {
		n := ev.Net
		if n == nil || n.RemoteAddr == "" {
			return
		}
		ms := store.Set().IP(n.RemoteAddr)
		if len(ms) == 0 {
			return
		}
		if t, ok := ipTypes[ms[0].Family]; ok {
			hit(Hit{Type: t, KeyActor: n.RemoteAddr, Evidence: evidence(ms), Context: map[string]any{
				"remoteIpDetails": map[string]any{"ipAddressV4": n.RemoteAddr}, "remotePort": n.RemotePort,
				"addressFamily": n.Family, "connectResult": ev.Error,
			}})
		}
	})
}

// torRelay: a listening process accepting a connection from a listed Tor
// node is relaying for the Tor network.
func torRelay(store *intel.Store) Detector {
	return newFn("intel-tor-relay", Both, []event.Kind{event.KindAccept}, []string{"UnauthorizedAccess:Runtime/TorRelay"},
		func(ev *event.Event, hit func(Hit)) {
			n := ev.Net
			if n == nil || n.RemoteAddr == "" || ev.Result < 0 {
				return
			}
			ms := store.Set().IP(n.RemoteAddr)
			if len(ms) == 0 || ms[0].Family != intel.Tor {
				return
			}
			hit(Hit{Type: "UnauthorizedAccess:Runtime/TorRelay", KeyActor: n.RemoteAddr, Evidence: evidence(ms),
				Context: map[string]any{"remoteIpDetails": map[string]any{"ipAddressV4": n.RemoteAddr}, "localPort": n.LocalPort}})
		})
}

// dnsIntel: a query for a listed domain; and any answer pointing at the
// instance metadata address (DNS rebinding to steal credentials).
func dnsIntel(store *intel.Store) Detector {
	types := append(values(dnsTypes), "UnauthorizedAccess:Runtime/MetadataDNSRebind")
	return newFn("intel-dns", Both, []event.Kind{event.KindDNS}, types, func(ev *event.Event, hit func(Hit)) {
		d := ev.DNS
		if d == nil || d.Name == "" {
			return
		}
		// Names are case-insensitive: one finding per domain, however a
		// query spells it (a DGA or a 0x20-randomising resolver mixes case).
		key := strings.ToLower(strings.TrimSuffix(d.Name, "."))
		if d.Response {
			for _, a := range d.Answers {
				if a == "169.254.169.254" || a == "fd00:ec2::254" {
					hit(Hit{Type: "UnauthorizedAccess:Runtime/MetadataDNSRebind", KeyActor: key,
						Context: map[string]any{"domain": d.Name, "answers": d.Answers, "dnsServer": d.Server}})
					return
				}
			}
			return
		}
		ms := store.Set().Domain(d.Name)
		if len(ms) == 0 {
			return
		}
		if t, ok := dnsTypes[ms[0].Family]; ok {
			hit(Hit{Type: t, KeyActor: key, Evidence: evidence(ms),
				Context: map[string]any{"domain": d.Name, "queryType": d.Type, "dnsServer": d.Server, "protocol": d.Protocol}})
		}
	})
}

// hashIntel: an executable whose SHA-256 is listed. Hashes are computed
// off the hot path, so the first event of the process that carries its
// hash (often not the exec itself) is checked, once per process.
type hashIntel struct {
	base
	store *intel.Store
	done  *lru[procHash]
}

// procHash is a process and its executable's hash: checked once.
type procHash struct{ uuid, sha256 string }

func newHashIntel(store *intel.Store) Detector {
	return &hashIntel{
		base: base{name: "intel-hash", scope: Both, types: values(hashTypes),
			kinds: []event.Kind{event.KindExec, event.KindExecHashed, event.KindExit, event.KindOpen, event.KindConnect, event.KindSocket,
				event.KindFork, event.KindDNS, event.KindMmap, event.KindMprotect, event.KindBind, event.KindListen}},
		store: store, done: newLRU[procHash](16384),
	}
}

func (d *hashIntel) Detect(ev *event.Event, hit func(Hit)) {
	p := &ev.Process
	if p.ExeSHA256 == "" || p.UUID == "" {
		return
	}
	key := procHash{p.UUID, p.ExeSHA256}
	if d.done.has(key) {
		return
	}
	d.done.add(key)
	ms := d.store.Set().Hash(p.ExeSHA256)
	if len(ms) == 0 {
		return
	}
	if t, ok := hashTypes[ms[0].Family]; ok {
		hit(Hit{Type: t, KeyActor: p.ExeSHA256, Evidence: evidence(ms),
			Context: map[string]any{"threatFilePath": p.Exe, "threatFileSha256": p.ExeSHA256}})
	}
}

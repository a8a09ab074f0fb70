// Package intel holds threat-intelligence lists — IPs, CIDRs, domains and
// SHA-256s — each entry tagged with the finding family it feeds (C&C,
// crypto-currency, Tor, black hole, drop point, DGA, drive-by, phishing,
// malware, reputation categories). Lists load from a directory of files in
// plain-line, CSV or STIX 2.1 form and can be reloaded without restart; a
// built-in list carries the conventional public test indicators so every
// intel finding can be demonstrated offline.
package intel

import (
	"net/netip"
	"sort"
	"strings"
)

// Family is the kind of threat an indicator marks; it picks the finding type.
type Family string

// Families.
const (
	CommandAndControl    Family = "cc"
	CryptoCurrency       Family = "crypto"
	Tor                  Family = "tor"
	BlackHole            Family = "blackhole"
	DropPoint            Family = "droppoint"
	DGA                  Family = "dga"
	DriveBy              Family = "driveby"
	Phishing             Family = "phishing"
	Malware              Family = "malware"
	CustomMalware        Family = "malware-custom"
	AbusedReputation     Family = "abused-reputation"
	BitcoinReputation    Family = "bitcoin-reputation"
	MaliciousReputation  Family = "malicious-reputation"
	SuspiciousReputation Family = "suspicious-reputation"
)

// Families lists every family, for validation and documentation.
var Families = []Family{CommandAndControl, CryptoCurrency, Tor, BlackHole, DropPoint, DGA, DriveBy, Phishing,
	Malware, CustomMalware, AbusedReputation, BitcoinReputation, MaliciousReputation, SuspiciousReputation}

// ParseFamily accepts a family name, case-insensitively, with a few
// common spellings.
func ParseFamily(s string) (Family, bool) {
	s = strings.ToLower(strings.TrimSpace(s))
	switch s {
	case "c&c", "c2", "command-and-control", "commandandcontrol":
		return CommandAndControl, true
	case "bitcoin", "cryptocurrency", "mining":
		return CryptoCurrency, true
	case "sinkhole", "black-hole":
		return BlackHole, true
	case "drop-point":
		return DropPoint, true
	case "drive-by":
		return DriveBy, true
	}
	for _, f := range Families {
		if string(f) == s {
			return f, true
		}
	}
	return "", false
}

// Match is one list entry that matched.
type Match struct {
	Family    Family `json:"family"`
	List      string `json:"list"`
	Indicator string `json:"indicator"`
	Name      string `json:"name,omitempty"` // threat name when the list gives one
}

// Set is an immutable, indexed collection of indicators.
type Set struct {
	domains  map[string][]Match
	ips      map[netip.Addr][]Match
	prefixes []prefixMatch
	hashes   map[string][]Match
	n        int
}

type prefixMatch struct {
	p netip.Prefix
	m Match
}

// Builder accumulates indicators into a Set.
type Builder struct{ s *Set }

// NewBuilder starts an empty set.
func NewBuilder() *Builder {
	return &Builder{s: &Set{domains: map[string][]Match{}, ips: map[netip.Addr][]Match{}, hashes: map[string][]Match{}}}
}

// Add adds one indicator, recognising IPs, CIDRs, SHA-256s and domains.
// It reports false for a value that is none of these.
func (b *Builder) Add(value string, m Match) bool {
	v := strings.ToLower(strings.TrimSpace(value))
	if v == "" {
		return false
	}
	m.Indicator = v
	if a, err := netip.ParseAddr(v); err == nil {
		a = a.Unmap()
		b.s.ips[a] = append(b.s.ips[a], m)
	} else if p, err := netip.ParsePrefix(v); err == nil {
		b.s.prefixes = append(b.s.prefixes, prefixMatch{p: p.Masked(), m: m})
	} else if isSHA256(v) {
		b.s.hashes[v] = append(b.s.hashes[v], m)
	} else if d, ok := normDomain(v); ok {
		b.s.domains[d] = append(b.s.domains[d], m)
	} else {
		return false
	}
	b.s.n++
	return true
}

// Set returns the built set; the builder must not be used afterwards.
func (b *Builder) Set() *Set {
	sort.Slice(b.s.prefixes, func(i, j int) bool { return b.s.prefixes[i].p.Bits() > b.s.prefixes[j].p.Bits() })
	return b.s
}

// Len is the number of indicators.
func (s *Set) Len() int { return s.n }

// Domain returns the matches of the most specific listed suffix of name:
// listing example.com matches a.b.example.com, and a listed
// crypto.example.com wins over example.com for crypto.example.com.
func (s *Set) Domain(name string) []Match {
	d, ok := normDomain(name)
	if !ok {
		return nil
	}
	for {
		if m, ok := s.domains[d]; ok {
			return m
		}
		i := strings.IndexByte(d, '.')
		if i < 0 {
			return nil
		}
		d = d[i+1:]
	}
}

// IP returns the matches of an address: exact entries, else the most
// specific CIDR.
func (s *Set) IP(addr string) []Match {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return nil
	}
	a = a.Unmap()
	if m, ok := s.ips[a]; ok {
		return m
	}
	for _, p := range s.prefixes {
		if p.p.Contains(a) {
			return []Match{p.m}
		}
	}
	return nil
}

// Hash returns the matches of a SHA-256 (hex).
func (s *Set) Hash(sum string) []Match { return s.hashes[strings.ToLower(sum)] }

func isSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// normDomain lower-cases, drops a trailing dot and checks the characters
// a host name may hold.
func normDomain(s string) (string, bool) {
	s = strings.TrimSuffix(strings.ToLower(s), ".")
	if s == "" || len(s) > 253 || !strings.Contains(s, ".") {
		return "", false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return "", false
		}
	}
	return s, true
}

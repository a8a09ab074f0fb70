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

// Set is an immutable, indexed collection of indicators. Lookups cost a
// map probe per label of a domain, and a map probe per distinct prefix
// length of the listed CIDRs (at most 33 for IPv4, 129 for IPv6), however
// long the lists are.
type Set struct {
	domains map[string][]Match
	// nets holds addresses (as full-length prefixes) and CIDRs, masked.
	nets   map[netip.Prefix][]Match
	v4Lens []int // distinct prefix lengths, longest first
	v6Lens []int
	hashes map[string][]Match
	n      int
}

// Builder accumulates indicators into a Set.
type Builder struct{ s *Set }

// NewBuilder starts an empty set.
func NewBuilder() *Builder {
	return &Builder{s: &Set{domains: map[string][]Match{}, nets: map[netip.Prefix][]Match{}, hashes: map[string][]Match{}}}
}

// Add adds one indicator, recognising IPs, CIDRs, SHA-256s and domains (a
// leading "*." is dropped: every listed domain covers its subdomains).
// It reports false for a value that is none of these.
func (b *Builder) Add(value string, m Match) bool {
	v := strings.ToLower(strings.TrimSpace(value))
	if v == "" {
		return false
	}
	m.Indicator = v
	if a, err := netip.ParseAddr(v); err == nil {
		a = a.Unmap().WithZone("")
		p := netip.PrefixFrom(a, a.BitLen())
		b.s.nets[p] = append(b.s.nets[p], m)
	} else if p, err := netip.ParsePrefix(v); err == nil {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-unmapBits(p.Addr())).Masked()
		if !p.IsValid() {
			return false
		}
		b.s.nets[p] = append(b.s.nets[p], m)
	} else if isSHA256(v) {
		b.s.hashes[v] = append(b.s.hashes[v], m)
	} else if d, ok := normDomain(strings.TrimPrefix(v, "*.")); ok {
		b.s.domains[d] = append(b.s.domains[d], m)
	} else {
		return false
	}
	b.s.n++
	return true
}

// unmapBits is what an IPv4-mapped IPv6 prefix loses when unmapped.
func unmapBits(a netip.Addr) int {
	if a.Is4In6() {
		return 96
	}
	return 0
}

// Set returns the built set; the builder must not be used afterwards.
func (b *Builder) Set() *Set {
	v4, v6 := map[int]bool{}, map[int]bool{}
	for p := range b.s.nets {
		if p.Addr().Is4() {
			v4[p.Bits()] = true
		} else {
			v6[p.Bits()] = true
		}
	}
	b.s.v4Lens, b.s.v6Lens = descending(v4), descending(v6)
	return b.s
}

func descending(m map[int]bool) []int {
	out := make([]int, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Sort(sort.Reverse(sort.IntSlice(out)))
	return out
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

// IP returns the matches of the most specific listed address or CIDR
// containing addr (IPv4-mapped IPv6 addresses count as IPv4).
func (s *Set) IP(addr string) []Match {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return nil
	}
	return s.Addr(a)
}

// Addr is IP for a parsed address.
func (s *Set) Addr(a netip.Addr) []Match {
	a = a.Unmap().WithZone("")
	lens := s.v6Lens
	if a.Is4() {
		lens = s.v4Lens
	}
	for _, bits := range lens {
		p, err := a.Prefix(bits)
		if err != nil {
			continue
		}
		if m, ok := s.nets[p]; ok {
			return m
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

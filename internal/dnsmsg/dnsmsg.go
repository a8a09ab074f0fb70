// Package dnsmsg reads the parts of a DNS wire message a runtime sensor
// reports: the first question, the response code and the answers that say
// where a name leads (A and AAAA addresses, CNAME targets).
//
// Messages come from the network and may be cut short (the sensor copies a
// bounded prefix of each packet) or hostile. Parsing never panics; it keeps
// what it read before the first error and returns that error, so a caller
// can still use a question whose answers were cut off.
package dnsmsg

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"golang.org/x/net/dns/dnsmessage"
)

// MaxAnswers bounds the answers kept from one message.
const MaxAnswers = 64

// Message is the reported view of one DNS message.
type Message struct {
	ID       uint16
	Response bool
	// Truncated is the TC bit: the server cut the answer (retry over TCP).
	Truncated bool
	// RCode is the response code's mnemonic (NOERROR, NXDOMAIN, ...).
	RCode string
	// Questions is the question count the header declares.
	Questions int
	// Name is the first question's name without the trailing dot, as
	// sent (case preserved); "." for the root.
	Name string
	// Type is the first question's type mnemonic (A, AAAA, TXT, TYPE65...).
	Type string
	// Answers holds A/AAAA addresses and CNAME targets (no trailing dot)
	// from the answer section, in order, at most MaxAnswers.
	Answers []string
}

// ErrNoQuestion means the header declared questions but none could be read.
var ErrNoQuestion = errors.New("dns message: first question unreadable")

// Parse reads a message as carried over UDP. On error the returned message
// holds whatever was read before it; the header and first question are
// present when the error is not ErrNoQuestion or a header error.
func Parse(b []byte) (Message, error) {
	var m Message
	var p dnsmessage.Parser
	h, err := p.Start(b)
	if err != nil {
		return m, fmt.Errorf("dns header: %w", err)
	}
	m.ID = h.ID
	m.Response = h.Response
	m.Truncated = h.Truncated
	m.RCode = RCodeName(h.RCode)
	m.Questions = int(binary.BigEndian.Uint16(b[4:6])) // Start checked the 12-byte header
	if m.Questions > 0 {
		q, err := p.Question()
		if err != nil {
			return m, fmt.Errorf("%w: %w", ErrNoQuestion, err)
		}
		m.Name = trimDot(q.Name.String())
		m.Type = TypeName(q.Type)
		if err := p.SkipAllQuestions(); err != nil {
			return m, fmt.Errorf("dns questions: %w", err)
		}
	}
	for len(m.Answers) < MaxAnswers {
		ah, err := p.AnswerHeader()
		if errors.Is(err, dnsmessage.ErrSectionDone) {
			return m, nil
		}
		if err != nil {
			return m, fmt.Errorf("dns answer %d: %w", len(m.Answers), err)
		}
		if ah.Class != dnsmessage.ClassINET {
			if err := p.SkipAnswer(); err != nil {
				return m, fmt.Errorf("dns answer: %w", err)
			}
			continue
		}
		switch ah.Type {
		case dnsmessage.TypeA:
			r, err := p.AResource()
			if err != nil {
				return m, fmt.Errorf("dns A answer: %w", err)
			}
			m.Answers = append(m.Answers, netip.AddrFrom4(r.A).String())
		case dnsmessage.TypeAAAA:
			r, err := p.AAAAResource()
			if err != nil {
				return m, fmt.Errorf("dns AAAA answer: %w", err)
			}
			m.Answers = append(m.Answers, netip.AddrFrom16(r.AAAA).String())
		case dnsmessage.TypeCNAME:
			r, err := p.CNAMEResource()
			if err != nil {
				return m, fmt.Errorf("dns CNAME answer: %w", err)
			}
			m.Answers = append(m.Answers, trimDot(r.CNAME.String()))
		default:
			if err := p.SkipAnswer(); err != nil {
				return m, fmt.Errorf("dns answer: %w", err)
			}
		}
	}
	return m, nil
}

// ParseTCP reads a message as carried over TCP: a two-byte length, then
// the message. A prefix longer than the data (a message split over
// segments) is parsed as far as the data goes; the error says so when the
// cut loses something.
func ParseTCP(b []byte) (Message, error) {
	if len(b) < 2 {
		return Message{}, errors.New("dns over tcp: no length prefix")
	}
	n := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	if n < len(b) {
		b = b[:n] // a second pipelined message follows: report the first
	}
	return Parse(b)
}

func trimDot(s string) string {
	if len(s) > 1 {
		return strings.TrimSuffix(s, ".")
	}
	return s
}

// RCodeName returns the conventional mnemonic of a response code.
func RCodeName(r dnsmessage.RCode) string {
	switch r {
	case dnsmessage.RCodeSuccess:
		return "NOERROR"
	case dnsmessage.RCodeFormatError:
		return "FORMERR"
	case dnsmessage.RCodeServerFailure:
		return "SERVFAIL"
	case dnsmessage.RCodeNameError:
		return "NXDOMAIN"
	case dnsmessage.RCodeNotImplemented:
		return "NOTIMP"
	case dnsmessage.RCodeRefused:
		return "REFUSED"
	}
	return "RCODE" + strconv.Itoa(int(r))
}

var typeNames = map[dnsmessage.Type]string{
	dnsmessage.TypeA: "A", dnsmessage.TypeNS: "NS", dnsmessage.TypeCNAME: "CNAME",
	dnsmessage.TypeSOA: "SOA", dnsmessage.TypePTR: "PTR", dnsmessage.TypeMX: "MX",
	dnsmessage.TypeTXT: "TXT", dnsmessage.TypeAAAA: "AAAA", dnsmessage.TypeSRV: "SRV",
	dnsmessage.TypeOPT: "OPT", dnsmessage.TypeSVCB: "SVCB", dnsmessage.TypeHTTPS: "HTTPS",
	dnsmessage.TypeWKS: "WKS", dnsmessage.TypeHINFO: "HINFO", dnsmessage.TypeMINFO: "MINFO",
	dnsmessage.TypeAXFR: "AXFR", dnsmessage.TypeALL: "ANY", 35: "NAPTR", 43: "DS", 46: "RRSIG",
	48: "DNSKEY", 52: "TLSA", 257: "CAA", 10: "NULL",
}

// TypeName returns a record type's mnemonic, or TYPEn (RFC 3597) when it
// has none here.
func TypeName(t dnsmessage.Type) string {
	if s, ok := typeNames[t]; ok {
		return s
	}
	return "TYPE" + strconv.Itoa(int(t))
}

// Package export turns findings into the records other systems consume and
// delivers them: the event-bus envelope (the reference product's
// `{"detail-type","source","detail"}` record), OCSF 1.3 Detection Finding,
// AWS Security Hub ASFF and Falco-compatible alert JSON, so existing
// pipelines (EventBridge rules, Security Lake, Security Hub, falcosidekick)
// take mamori's findings unchanged.
//
// Encoders are pure functions of a finding and Options: the same finding
// always encodes to the same bytes, including the record's own id, which is
// derived from the finding id and its revision so a consumer can drop
// retried deliveries.
//
// Delivery starts in the store: every finding change a sink must see is
// queued in the export outbox in the transaction that made it (new
// findings due at once, updates coalesced per finding and due after the
// update frequency). A Relay per sink claims due rows under a lease and
// offers the findings' current state to its Sink: a Webhook posts records
// with retries, exponential backoff and a per-attempt timeout; a FileSink
// appends JSON lines. A row is deleted only once its sink settled it, so a
// server killed at any moment loses no export.
package export

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/mamori-dev/mamori/internal/finding"
)

// Format names an export record format.
type Format string

// The formats an Encoder produces.
const (
	FormatNative   Format = "native"   // the finding JSON itself
	FormatEventBus Format = "eventbus" // event-bus envelope around the finding
	FormatOCSF     Format = "ocsf"     // OCSF Detection Finding (class 2004)
	FormatASFF     Format = "asff"     // AWS Security Finding Format
	FormatFalco    Format = "falco"    // Falco alert JSON (falcosidekick input)
)

// Formats lists every format, for flag help and validation.
var Formats = []Format{FormatNative, FormatEventBus, FormatOCSF, FormatASFF, FormatFalco}

// ParseFormat checks a format name.
func ParseFormat(s string) (Format, error) {
	for _, f := range Formats {
		if string(f) == s {
			return f, nil
		}
	}
	return "", fmt.Errorf("unknown export format %q (want one of %v)", s, Formats)
}

// Options are the installation-specific values the formats carry. Zero
// values take the defaults noted.
type Options struct {
	// Source is the event-bus source ["mamori"].
	Source string
	// DetailType is the event-bus detail-type ["Mamori Finding"].
	DetailType string
	// Cluster names the installation; it fills the event bus "account" slot
	// and the Kubernetes/ECS cluster where a finding has none ["local"].
	Cluster string
	// ProductVersion is mamori's version, reported in OCSF metadata and
	// ASFF product fields.
	ProductVersion string
	// ASFF: the account and region Security Hub imports into, and the
	// product ARN. ProductArn defaults to the account's own "default"
	// product (the form Security Hub accepts for custom integrations).
	AwsAccountID string // ["000000000000"]
	Region       string // ["us-east-1"]
	ProductArn   string
}

func (o Options) withDefaults() Options {
	def := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	def(&o.Source, "mamori")
	def(&o.DetailType, "Mamori Finding")
	def(&o.Cluster, "local")
	def(&o.ProductVersion, "unknown")
	def(&o.AwsAccountID, "000000000000")
	def(&o.Region, "us-east-1")
	def(&o.ProductArn, "arn:aws:securityhub:"+o.Region+":"+o.AwsAccountID+":product/"+o.AwsAccountID+"/default")
	return o
}

// Encoder encodes one finding; isNew says whether this is the finding's
// first appearance or an update of it.
type Encoder interface {
	Format() Format
	ContentType() string
	Encode(f *finding.Finding, isNew bool) ([]byte, error)
}

type encoder struct {
	format Format
	enc    func(*finding.Finding, bool) any
}

func (e encoder) Format() Format      { return e.format }
func (e encoder) ContentType() string { return "application/json" }
func (e encoder) Encode(f *finding.Finding, isNew bool) ([]byte, error) {
	// Receivers are not HTML pages: keep '&' and '<' in finding types and
	// command lines as they are.
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(e.enc(f, isNew)); err != nil {
		return nil, fmt.Errorf("encode %s record of finding %s: %w", e.format, f.ID, err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// NewEncoder returns the encoder of format.
func NewEncoder(format Format, o Options) (Encoder, error) {
	o = o.withDefaults()
	var enc func(*finding.Finding, bool) any
	switch format {
	case FormatNative:
		enc = func(f *finding.Finding, _ bool) any { return f }
	case FormatEventBus:
		enc = func(f *finding.Finding, _ bool) any { return EventBus(f, o) }
	case FormatOCSF:
		enc = func(f *finding.Finding, isNew bool) any { return OCSF(f, isNew, o) }
	case FormatASFF:
		enc = func(f *finding.Finding, _ bool) any { return ASFF(f, o) }
	case FormatFalco:
		enc = func(f *finding.Finding, _ bool) any { return Falco(f, o) }
	default:
		return nil, fmt.Errorf("unknown export format %q", format)
	}
	return encoder{format: format, enc: enc}, nil
}

// RecordID is the id of one revision of a finding as a UUID-shaped string:
// the same finding at the same revision (updatedAt, count) always gets the
// same id, so consumers can discard redelivered records.
func RecordID(f *finding.Finding) string {
	h := sha256.Sum256([]byte(f.ID + "|" + f.UpdatedAt.UTC().Format(time.RFC3339Nano) + "|" + strconv.FormatInt(f.Service.Count, 10)))
	h[6] = h[6]&0x0f | 0x50 // version 5 style: name-based
	h[8] = h[8]&0x3f | 0x80 // RFC 4122 variant
	s := hex.EncodeToString(h[:16])
	return s[:8] + "-" + s[8:12] + "-" + s[12:16] + "-" + s[16:20] + "-" + s[20:32]
}

// nodeOf returns the reporting node's id and host name.
func nodeOf(f *finding.Finding) (id, hostname string) {
	if d := f.Resource.InstanceDetails; d != nil {
		id, hostname = d.NodeID, d.Hostname
	}
	if id == "" {
		id = f.Service.AdditionalInfo.AgentDetails.AgentID
	}
	return id, hostname
}

// clusterOf is the finding's own cluster name (ECS) or the configured one.
func clusterOf(f *finding.Finding, o Options) string {
	if e := f.Resource.ECSClusterDetails; e != nil && e.Name != "" {
		return e.Name
	}
	return o.Cluster
}

// commandLine joins argv for display, quoting arguments that need it so a
// hostile argument cannot pose as two.
func commandLine(args []string) string {
	var b strings.Builder
	for i, a := range args {
		if i > 0 {
			b.WriteByte(' ')
		}
		if a == "" || strings.ContainsFunc(a, func(r rune) bool { return r <= ' ' || r == '"' || r == '\'' || r == '\\' || r == 0x7f }) {
			b.WriteString(strconv.Quote(a))
			continue
		}
		b.WriteString(a)
	}
	return b.String()
}

// splitImage splits an image reference into repository and tag.
func splitImage(image string) (repo, tag string) {
	if at := strings.IndexByte(image, '@'); at >= 0 {
		return image[:at], ""
	}
	slash := strings.LastIndexByte(image, '/')
	if colon := strings.LastIndexByte(image, ':'); colon > slash {
		return image[:colon], image[colon+1:]
	}
	return image, ""
}

// contextString reads a string from runtime context.
func contextString(f *finding.Finding, key string) string {
	s, _ := f.Service.RuntimeDetails.Context[key].(string)
	return s
}

func truncate(s string, max int) string {
	if len(s) <= max {
		return s
	}
	// Cut on a rune boundary.
	cut := max - len("…")
	for cut > 0 && !utf8Start(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

func utf8Start(b byte) bool { return b&0xc0 != 0x80 }

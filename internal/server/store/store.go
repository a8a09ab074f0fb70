// Package store keeps the mamori server's state: findings (merged across
// agents and replays), suppression rules and saved filters, and coverage
// (one row per node plus a log of status transitions). Two real engines sit
// behind the one Store interface:
//
//   - SQLite (modernc.org/sqlite, pure Go): the embedded default, one file
//     in the data directory. One writer connection, a pool of readers (WAL).
//   - PostgreSQL (pgx): when several server replicas share state. Row locks
//     serialise concurrent writers of the same finding or node.
//
// The schema is versioned; Open applies missing migrations in one
// transaction (on PostgreSQL under an advisory lock, so replicas starting
// together migrate once) and refuses a database written by a newer build.
//
// # Findings: idempotent, merging upserts
//
// UpsertFindings applies agent findings. Each Upsert names:
//
//   - MsgKey: the id of the message that carried it (transport
//     Message.DedupKey). Applied keys are recorded (kept MessageTTL); a key
//     seen before makes the upsert a no-op (OutcomeDuplicate), so a
//     replayed or redelivered message never counts twice.
//   - Reporter and Epoch: whose count this is. An agent's service.count is
//     cumulative within one aggregation epoch (finding.Aggregator: a held
//     finding keeps its createdAt and grows its count; after eviction or
//     restart a new epoch starts at 1). The store keeps the highest count
//     seen per (finding, reporter, epoch) and adds only the difference to
//     the finding's count, so even the same state re-sent under a new
//     message id adds nothing, and late, out-of-order updates never
//     subtract.
//
// Merging: count is the sum over all contributions; eventFirstSeen the
// earliest, eventLastSeen the latest; the body (process, context, evidence)
// is the one of the latest occurrence. createdAt is the earliest createdAt
// reported, updatedAt the server's time of the last change, Revision counts
// changes. A finding belongs to the node in its resource: an upsert from a
// finding with the same id but another node is refused (ErrNodeMismatch),
// so one agent cannot overwrite another node's findings.
//
// # Suppression
//
// Upsert.Suppress, when set, is called with the merged finding inside the
// transaction; a non-empty rule id archives the finding and records the
// rule in Record.SuppressedBy. Exports must skip records with SuppressedBy
// set. Unarchiving a finding clears SuppressedBy (the user overrode the
// rule); the next update matching an ARCHIVE rule suppresses it again.
//
// # Criteria
//
// Criterion is one condition over any finding field, named by its JSON path
// ("type", "service.count", "resource.containerDetails.image",
// "service.runtimeDetails.process.lineage.name"), plus the pseudo fields
// "cluster" and "suppressedBy". The same semantics run in Go (Criterion.Match,
// used for suppression at ingest) and in SQL (ListFindings), on both
// engines; see Criterion for the exact rules.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/mamori-dev/mamori/internal/finding"
)

// Defaults.
const (
	// DefaultRetention is how long a finding is kept after its last update.
	DefaultRetention = 90 * 24 * time.Hour
	// DefaultMessageTTL is how long applied message ids are remembered. It
	// bounds the table (one row per finding message); a replay older than
	// this is still harmless, because the count rule (highest cumulative
	// per reporter and epoch) makes re-applying it add nothing.
	DefaultMessageTTL = 48 * time.Hour
	// DefaultPageSize and MaxPageSize bound ListFindings pages.
	DefaultPageSize = 50
	MaxPageSize     = 1000
)

// Errors.
var (
	ErrNotFound     = errors.New("not found")
	ErrNodeMismatch = errors.New("finding id belongs to another node")
	ErrInvalid      = errors.New("invalid argument")
	ErrSchemaNewer  = errors.New("database schema is newer than this build")
)

// Store is the server's state. Every method is safe for concurrent use, and
// several processes may share one PostgreSQL database.
type Store interface {
	// Engine is "sqlite" or "postgres".
	Engine() string
	// SchemaVersion is the applied migration version.
	SchemaVersion(ctx context.Context) (int, error)
	// Ping reports whether the database answers.
	Ping(ctx context.Context) error

	// UpsertFindings applies us in one transaction and returns one Result
	// per Upsert, in order. An item's own problem (ErrNodeMismatch) is in
	// its Result.Err and does not fail the others; the returned error is
	// for the batch as a whole (nothing applied).
	UpsertFindings(ctx context.Context, us []Upsert) ([]Result, error)
	// GetFinding returns one finding or ErrNotFound.
	GetFinding(ctx context.Context, id string) (*Record, error)
	// ListFindings returns one page of findings matching q.
	ListFindings(ctx context.Context, q Query) (*Page, error)
	// SetArchived archives or unarchives the findings with these ids and
	// returns how many changed. Unarchiving clears SuppressedBy.
	SetArchived(ctx context.Context, ids []string, archived bool) (int, error)
	// ArchiveMatching archives every unarchived finding matching criteria
	// (an empty list matches nothing, never everything) and, when ruleID is
	// set, marks them suppressed by it. It returns how many changed.
	ArchiveMatching(ctx context.Context, criteria []Criterion, ruleID string) (int, error)
	// Stats counts the stored findings.
	Stats(ctx context.Context) (Stats, error)
	// Purge deletes what has outlived its retention.
	Purge(ctx context.Context, o PurgeOptions) (PurgeResult, error)

	// Rules are saved filters (NOOP) and suppression rules (ARCHIVE),
	// ordered by Rank then creation.
	ListRules(ctx context.Context) ([]Rule, error)
	GetRule(ctx context.Context, id string) (*Rule, error)
	// CreateRule validates r, assigns ID, CreatedAt and UpdatedAt, stores it.
	CreateRule(ctx context.Context, r Rule) (*Rule, error)
	// UpdateRule replaces the rule with r.ID (ErrNotFound if none).
	UpdateRule(ctx context.Context, r Rule) (*Rule, error)
	DeleteRule(ctx context.Context, id string) error

	// UpdateNode reads the node (nil when new) and stores what fn returns,
	// under a lock on that node, in one transaction. fn returning a nil node
	// leaves the row alone; a non-nil event is appended to the coverage
	// event log in the same transaction. fn may run more than once (a
	// retried transaction) and must not have side effects.
	UpdateNode(ctx context.Context, nodeID string, fn func(old *Node) (*Node, *CoverageEvent, error)) (*Node, *CoverageEvent, error)
	// UpdateNodes applies several UpdateNode-style updates in one
	// transaction, in order; an update's Fn error only skips that update.
	UpdateNodes(ctx context.Context, updates []NodeUpdate) ([]NodeResult, error)
	GetNode(ctx context.Context, nodeID string) (*Node, error)
	ListNodes(ctx context.Context) ([]Node, error)
	// ListNodeStates is ListNodes without each node's heartbeat document
	// and hook list (its bulk): what tells a sweep which nodes to re-judge.
	// GetNode reads a whole row.
	ListNodeStates(ctx context.Context) ([]Node, error)
	DeleteNode(ctx context.Context, nodeID string) error
	// CoverageEvents returns logged transitions with Seq > after, oldest
	// first, at most limit (default 1000).
	CoverageEvents(ctx context.Context, after int64, limit int) ([]CoverageEvent, error)

	// PutAgentToken stores a node's agent API token, replacing the one it
	// had.
	PutAgentToken(ctx context.Context, t AgentToken) error
	// AgentToken returns the agent token with this token id, or ErrNotFound.
	AgentToken(ctx context.Context, tokenID string) (*AgentToken, error)
	// DeleteAgentToken deletes the token of a node (nodeID set) or the one
	// with a token id (tokenID set); ErrNotFound when there is none.
	DeleteAgentToken(ctx context.Context, nodeID, tokenID string) error
	// ListAgentTokens returns every agent token, by node id.
	ListAgentTokens(ctx context.Context) ([]AgentToken, error)

	// The export outbox (outbox.go): SetExports names the sinks finding
	// changes are queued for in their own transaction; sinks claim due
	// rows under a lease and settle or release them.
	SetExports(sinks []string, updateDelay time.Duration)
	HasDueExports(ctx context.Context, sink string) (bool, error)
	ClaimExports(ctx context.Context, sink, owner string, lease time.Duration, limit int) ([]ExportItem, error)
	RenewExports(ctx context.Context, sink string, items []ExportItem, lease time.Duration) error
	SettleExport(ctx context.Context, it ExportItem, requeueAt time.Time) error
	ReleaseExport(ctx context.Context, it ExportItem, dueAt time.Time) error
	ReleaseAllExports(ctx context.Context) error
	DropExports(ctx context.Context, keep []string) (map[string]int, error)
	ExportBacklogs(ctx context.Context) ([]ExportBacklog, error)

	Close() error
}

// Upsert is one agent finding to apply. See the package doc for the
// merge and idempotency rules.
type Upsert struct {
	// Finding as the agent sent it, already validated (finding.Validate).
	// Service.Count is the reporter's cumulative count within Epoch.
	Finding *finding.Finding
	// MsgKey is the carrying message's idempotency key; "" disables the
	// message check (the count rule still applies).
	MsgKey string
	// Reporter is the reporting agent (its node id); Epoch its aggregation
	// epoch for this finding ("" is one epoch like any other).
	Reporter string
	Epoch    string
	// Cluster is the reporting node's cluster, kept with the finding so
	// lists can filter by it.
	Cluster string
	// Suppress, when set, returns the id of the ARCHIVE rule the merged
	// record matches, or "". It runs inside the transaction: keep it pure.
	Suppress func(r *Record) string
}

// Outcome says what an upsert did.
type Outcome string

// Outcomes.
const (
	OutcomeCreated   Outcome = "created"   // a new finding
	OutcomeUpdated   Outcome = "updated"   // merged into a stored finding and changed it
	OutcomeUnchanged Outcome = "unchanged" // merged, nothing new (same state re-sent)
	OutcomeDuplicate Outcome = "duplicate" // the message was applied before: no-op
	OutcomeRejected  Outcome = "rejected"  // refused: see Result.Err
)

// Result is the outcome of one Upsert.
type Result struct {
	Outcome Outcome
	// Delta is what this upsert added to the finding's count.
	Delta int64
	// Record is the finding after the upsert (nil for Duplicate and
	// Rejected).
	Record *Record
	Err    error
}

// Record is a stored finding with the server's own fields. It marshals as
// the finding's JSON plus "cluster", "suppressedBy" and "revision".
type Record struct {
	*finding.Finding
	// Cluster of the node that reported it ("" when unknown).
	Cluster string `json:"cluster,omitempty"`
	// SuppressedBy is the id of the suppression rule that archived it.
	// Exports skip suppressed findings.
	SuppressedBy string `json:"suppressedBy,omitempty"`
	// Revision increases with every stored change; export record ids derive
	// from it.
	Revision int64 `json:"revision"`
}

// Query selects a page of findings.
type Query struct {
	// Criteria are ANDed.
	Criteria []Criterion
	// Sort is one of SortFields ["updatedAt"]; ties break on id.
	Sort string
	// Asc sorts ascending; the default is descending (newest, highest first).
	Asc bool
	// Limit is the page size [DefaultPageSize], at most MaxPageSize.
	Limit int
	// Cursor continues after the page that returned it as Page.Next (keyset
	// paging: stable and fast at any depth). It must come with the same
	// Criteria, Sort and Asc. When set, Offset is ignored.
	Cursor string
	// Offset skips that many rows (for jump-to-page; slower when deep).
	Offset int
	// NoTotal skips counting the matching rows (Page.Total is then -1).
	NoTotal bool
}

// SortFields are the fields ListFindings can sort by.
var SortFields = []string{"updatedAt", "createdAt", "severity", "count", "eventFirstSeen", "eventLastSeen", "type"}

// Page is one page of findings.
type Page struct {
	Findings []*Record `json:"findings"`
	// Total counts every finding matching the criteria (-1 if not asked).
	Total int `json:"total"`
	// Next is the cursor of the following page, "" on the last page.
	Next string `json:"next,omitempty"`
}

// Stats counts stored findings.
type Stats struct {
	Findings   int `json:"findings"`
	Archived   int `json:"archived"`
	Suppressed int `json:"suppressed"`
	Rules      int `json:"rules"`
	Nodes      int `json:"nodes"`
}

// PurgeOptions say what is old enough to delete. Zero values take the
// defaults; Now defaults to the current time.
type PurgeOptions struct {
	Now time.Time
	// Retention of findings after their last update [DefaultRetention], and
	// of coverage events and of nodes not heard from.
	Retention time.Duration
	// MessageTTL of applied message ids [DefaultMessageTTL].
	MessageTTL time.Duration
}

// PurgeResult counts what Purge deleted.
type PurgeResult struct {
	Findings       int `json:"findings"`
	Messages       int `json:"messages"`
	CoverageEvents int `json:"coverageEvents"`
	Nodes          int `json:"nodes"`
	// Exports are export outbox rows queued before the retention cut: a
	// sink gone from every replica's configuration leaves them (SQLite
	// drops them at start; replicas cannot tell).
	Exports int `json:"exports"`
	// Removals are records of nodes removed before the retention cut.
	Removals int `json:"removals"`
}

// Action is what a rule does to matching findings.
type Action string

// Actions.
const (
	// ActionNoop: a saved filter; it selects findings, it changes nothing.
	ActionNoop Action = "NOOP"
	// ActionArchive: a suppression rule; matching findings are stored
	// archived, flagged suppressed and never exported.
	ActionArchive Action = "ARCHIVE"
)

// Rule is a saved filter or suppression rule.
type Rule struct {
	ID          string      `json:"id"`
	Name        string      `json:"name"`
	Description string      `json:"description,omitempty"`
	Action      Action      `json:"action"`
	Rank        int         `json:"rank"`
	Criteria    []Criterion `json:"criteria"`
	CreatedAt   time.Time   `json:"createdAt"`
	UpdatedAt   time.Time   `json:"updatedAt"`
}

// Node is one node's coverage row. The coverage package owns its meaning;
// the store keeps it.
type Node struct {
	NodeID       string `json:"nodeId"`
	Cluster      string `json:"cluster,omitempty"`
	Hostname     string `json:"hostname,omitempty"`
	ResourceType string `json:"resourceType,omitempty"` // Instance | EKSCluster | ECSCluster
	// Status is "Healthy" or "Unhealthy"; Issue is "Type:Extra information"
	// when Unhealthy.
	Status      string    `json:"status"`
	Issue       string    `json:"issue,omitempty"`
	StatusSince time.Time `json:"statusSince"`
	FirstSeen   time.Time `json:"firstSeen"`
	// LastHeartbeat is when the server received the latest heartbeat.
	LastHeartbeat time.Time `json:"lastHeartbeat"`
	// Heartbeat is the latest heartbeat document; State is the coverage
	// package's own bookkeeping (e.g. drop counter history).
	Heartbeat json.RawMessage `json:"heartbeat,omitempty"`
	State     json.RawMessage `json:"-"`
	// Hooks is the node's hook list (JSON) named by HooksDigest, stored
	// apart and written only when the digest changes; a Node written with
	// an empty HooksDigest keeps the stored list.
	Hooks       json.RawMessage `json:"-"`
	HooksDigest string          `json:"-"`

	// hooksFrom reads the list named by HooksDigest when the row was read
	// without it (see LoadHooks).
	hooksFrom func(ctx context.Context) ([]byte, error)
}

// LoadHooks fills Hooks when the row was read without its list: node
// updates read rows without it, since the list is large (a heartbeat's
// bulk) and rarely needed — its digest says whether it changed.
func (n *Node) LoadHooks(ctx context.Context) error {
	if len(n.Hooks) > 0 || n.HooksDigest == "" || n.hooksFrom == nil {
		return nil
	}
	b, err := n.hooksFrom(ctx)
	if err != nil {
		return fmt.Errorf("node %s: load hook list: %w", n.NodeID, err)
	}
	n.Hooks = b
	return nil
}

// NodeUpdate is one update of UpdateNodes.
type NodeUpdate struct {
	NodeID string
	Fn     func(old *Node) (*Node, *CoverageEvent, error)
	// MadeAt is when the update's input was made (a heartbeat's time, or
	// when the stream took it if earlier: an agent's clock may run ahead).
	// An update of a node without a row, made before the node was removed
	// (DeleteNode), is skipped: its result has no Node, Fn is not called.
	// Zero: not checked (an enrollment).
	MadeAt time.Time
}

// NodeResult is what one NodeUpdate did.
type NodeResult struct {
	Node  *Node
	Event *CoverageEvent
	Err   error // Fn's error; the update was skipped
}

// CoverageEvent is one logged status transition.
type CoverageEvent struct {
	Seq      int64     `json:"seq"` // assigned by the store
	NodeID   string    `json:"nodeId"`
	Cluster  string    `json:"cluster,omitempty"`
	At       time.Time `json:"at"`
	From     string    `json:"from,omitempty"` // "" for a node's first status
	To       string    `json:"to"`
	Issue    string    `json:"issue,omitempty"`
	Previous string    `json:"previousIssue,omitempty"`
}

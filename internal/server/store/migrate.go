package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

// migration is one schema step. SQL is written once with {{…}} markers for
// the few types that differ between the engines.
type migration struct {
	version int
	name    string
	sql     string
}

// migrations are applied in order and never edited once released: a change
// is a new migration.
var migrations = []migration{
	{1, "findings, message ids, rules", `
CREATE TABLE findings (
	id            TEXT PRIMARY KEY,
	type          TEXT NOT NULL,
	severity      {{REAL}} NOT NULL,
	resource_type TEXT NOT NULL,
	node_id       TEXT,
	cluster       TEXT,
	namespace     TEXT,
	container_id  TEXT,
	image         TEXT,
	created_at    BIGINT NOT NULL,
	updated_at    BIGINT NOT NULL,
	first_seen    BIGINT NOT NULL,
	last_seen     BIGINT NOT NULL,
	occurrences   BIGINT NOT NULL,
	archived      BOOLEAN NOT NULL,
	sample        BOOLEAN NOT NULL,
	suppressed_by TEXT,
	revision      BIGINT NOT NULL,
	doc           {{JSON}} NOT NULL
);
-- Each reporter's highest cumulative count per aggregation epoch.
CREATE TABLE finding_counts (
	finding_id TEXT NOT NULL REFERENCES findings(id) ON DELETE CASCADE,
	reporter   TEXT NOT NULL,
	epoch      TEXT NOT NULL,
	cumulative BIGINT NOT NULL,
	PRIMARY KEY (finding_id, reporter, epoch)
);
-- Ids of applied messages: a replay is a no-op.
CREATE TABLE applied_messages (
	msg_key    TEXT PRIMARY KEY,
	applied_at BIGINT NOT NULL
);
CREATE INDEX applied_messages_at ON applied_messages (applied_at);
CREATE TABLE rules (
	id          TEXT PRIMARY KEY,
	name        TEXT NOT NULL,
	description TEXT NOT NULL,
	action      TEXT NOT NULL,
	rank        INTEGER NOT NULL,
	criteria    TEXT NOT NULL,
	created_at  BIGINT NOT NULL,
	updated_at  BIGINT NOT NULL
);
`},
	{2, "coverage nodes and transition log", `
CREATE TABLE nodes (
	node_id        TEXT PRIMARY KEY,
	cluster        TEXT NOT NULL,
	hostname       TEXT NOT NULL,
	resource_type  TEXT NOT NULL,
	status         TEXT NOT NULL,
	issue          TEXT NOT NULL,
	status_since   BIGINT NOT NULL,
	first_seen     BIGINT NOT NULL,
	last_heartbeat BIGINT NOT NULL,
	heartbeat      TEXT NOT NULL,
	state          TEXT NOT NULL
);
CREATE TABLE coverage_events (
	seq            {{SERIAL}},
	node_id        TEXT NOT NULL,
	cluster        TEXT NOT NULL,
	at             BIGINT NOT NULL,
	from_status    TEXT NOT NULL,
	to_status      TEXT NOT NULL,
	issue          TEXT NOT NULL,
	previous_issue TEXT NOT NULL
);
CREATE INDEX coverage_events_at ON coverage_events (at);
`},
	{3, "finding list indexes", `
CREATE INDEX findings_updated ON findings (updated_at, id);
CREATE INDEX findings_archived_updated ON findings (archived, updated_at, id);
CREATE INDEX findings_created ON findings (created_at, id);
CREATE INDEX findings_severity ON findings (severity, id);
CREATE INDEX findings_occurrences ON findings (occurrences, id);
CREATE INDEX findings_first_seen ON findings (first_seen, id);
CREATE INDEX findings_last_seen ON findings (last_seen, id);
CREATE INDEX findings_type ON findings (type, id);
CREATE INDEX findings_node ON findings (node_id);
CREATE INDEX findings_cluster ON findings (cluster);
CREATE INDEX findings_namespace ON findings (namespace);
CREATE INDEX findings_image ON findings (image);
CREATE INDEX findings_container ON findings (container_id);
`},
	// A node's hook list is most of its heartbeat and rarely changes: kept
	// apart, it is written when it changes instead of with every heartbeat.
	{4, "node hook lists", `
CREATE TABLE node_hooks (
	node_id TEXT PRIMARY KEY REFERENCES nodes(node_id) ON DELETE CASCADE,
	digest  TEXT NOT NULL,
	hooks   TEXT NOT NULL
);
`},
	// Stats counts suppressed findings from this (small, partial) index
	// instead of reading every finding row on each metrics scrape.
	{5, "suppressed findings index", `
CREATE INDEX findings_suppressed ON findings (suppressed_by) WHERE suppressed_by IS NOT NULL;
`},
	// Enrolled agents' API tokens, one per node: replaced or revoked by
	// key, where a token file was rewritten whole on every enrollment.
	{6, "agent API tokens", `
CREATE TABLE agent_tokens (
	node_id     TEXT PRIMARY KEY,
	token_id    TEXT NOT NULL UNIQUE,
	secret_hash TEXT NOT NULL,
	created_at  BIGINT NOT NULL
);
`},
	// Finding changes waiting for an export sink (outbox.go), written in
	// the transaction that made them.
	{7, "export outbox", `
CREATE TABLE export_outbox (
	sink        TEXT NOT NULL,
	finding_id  TEXT NOT NULL,
	kind        TEXT NOT NULL,
	due_at      BIGINT NOT NULL,
	queued_at   BIGINT NOT NULL,
	version     BIGINT NOT NULL,
	lease_until BIGINT NOT NULL,
	lease_owner TEXT NOT NULL,
	PRIMARY KEY (sink, finding_id, kind)
);
CREATE INDEX export_outbox_due ON export_outbox (sink, due_at);
`},
	// Nodes removed, and when: a heartbeat made before the removal must
	// not bring the row back on any replica, nor after a restart.
	{8, "removed nodes", `
CREATE TABLE removed_nodes (
	node_id    TEXT PRIMARY KEY,
	removed_at BIGINT NOT NULL
);
`},
}

// LatestSchema is the schema version this build writes.
func LatestSchema() int { return migrations[len(migrations)-1].version }

func (s *sqlStore) dialect(stmt string) string {
	repl := map[string][2]string{
		"{{REAL}}":   {"REAL", "DOUBLE PRECISION"},
		"{{JSON}}":   {"TEXT", "JSONB"},
		"{{SERIAL}}": {"INTEGER PRIMARY KEY AUTOINCREMENT", "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"},
	}
	i := 0
	if s.engine == EnginePostgres {
		i = 1
	}
	for k, v := range repl {
		stmt = strings.ReplaceAll(stmt, k, v[i])
	}
	return stmt
}

// migrationLock is the PostgreSQL advisory lock key that serialises
// replicas migrating the same database ("mamori" in ASCII).
const migrationLock = 0x6d616d6f7269

// migrate applies every missing migration up to target (0: all) in one
// transaction.
func (s *sqlStore) migrate(ctx context.Context, target int) error {
	if target == 0 {
		target = LatestSchema()
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		if s.engine == EnginePostgres {
			if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrationLock)); err != nil {
				return fmt.Errorf("migrate: lock: %w", err)
			}
		}
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)`); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		var cur int
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&cur); err != nil {
			return fmt.Errorf("migrate: read version: %w", err)
		}
		if cur > LatestSchema() {
			return fmt.Errorf("%w: database at version %d, this build knows %d", ErrSchemaNewer, cur, LatestSchema())
		}
		for _, m := range migrations {
			if m.version <= cur || m.version > target {
				continue
			}
			for _, stmt := range splitStatements(s.dialect(m.sql)) {
				if _, err := tx.ExecContext(ctx, stmt); err != nil {
					return fmt.Errorf("migrate to %d (%s): %w", m.version, m.name, err)
				}
			}
			if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)`),
				m.version, m.name, micros(s.now())); err != nil {
				return fmt.Errorf("migrate: record %d: %w", m.version, err)
			}
			s.log.Info("store: applied migration", "engine", s.engine, "version", m.version, "name", m.name)
		}
		return nil
	})
}

// splitStatements splits a migration on ';' at line ends (the migrations
// contain no ';' inside literals) and drops comment-only pieces.
func splitStatements(sqlText string) []string {
	var out []string
	for _, part := range strings.Split(sqlText, ";\n") {
		var lines []string
		for _, l := range strings.Split(part, "\n") {
			if t := strings.TrimSpace(l); t != "" && !strings.HasPrefix(t, "--") {
				lines = append(lines, l)
			}
		}
		if stmt := strings.TrimSuffix(strings.TrimSpace(strings.Join(lines, "\n")), ";"); stmt != "" {
			out = append(out, stmt)
		}
	}
	return out
}

func (s *sqlStore) SchemaVersion(ctx context.Context) (int, error) {
	var v int
	err := s.r.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&v)
	if err != nil {
		return 0, fmt.Errorf("schema version: %w", err)
	}
	return v, nil
}

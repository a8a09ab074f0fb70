package store

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The export outbox: every finding change an export sink must see is
// written as a row in the same transaction as the change itself, so a
// server killed at any moment still sends it after restart — nothing the
// store acknowledged is lost between commit and delivery. A row is per
// sink, finding and kind ("new" or "update"): updates of one finding
// coalesce into the row already waiting, which is what batches updates at
// the configured frequency. Rows are leased while a sink works on them,
// so replicas sharing a PostgreSQL database never send one row at once,
// and a lease a dead replica left lapses and the row goes out again.

// Export kinds.
const (
	ExportNew    = "new"
	ExportUpdate = "update"
)

// ExportItem is one claimed outbox row.
type ExportItem struct {
	Sink      string
	FindingID string
	Kind      string // ExportNew or ExportUpdate
	// Version counts the changes folded into the row; Settle deletes the
	// row only if no change arrived since the claim.
	Version  int64
	QueuedAt time.Time
	// Claim is this claim's lease token: renewing, settling and releasing
	// act only while the row is still under it, so a holder whose lease
	// lapsed cannot touch the row someone else claimed (or queued) since.
	Claim string
}

// ExportBacklog is one sink's waiting rows.
type ExportBacklog struct {
	Sink    string
	Pending int
	Leased  int
	// Oldest is when the oldest waiting row was queued (zero when none).
	Oldest time.Time
	// OldestDue is the earliest due time of the rows due now (zero when
	// none is): how far behind the sink is.
	OldestDue time.Time
	Due       int // rows due now
}

// exportPolicy is what SetExports configured.
type exportPolicy struct {
	sinks       []string
	updateDelay time.Duration
}

// outboxChunk bounds the rows of one multi-row outbox insert.
const outboxChunk = 200

// SetExports names the export sinks every later finding change is queued
// for, and how long an update waits for further updates of its finding
// before it is due. Call it before ingesting; nil sinks queue nothing.
func (s *sqlStore) SetExports(sinks []string, updateDelay time.Duration) {
	p := &exportPolicy{sinks: slices.Clone(sinks), updateDelay: max(updateDelay, 0)}
	s.exports.Store(p)
}

// queueExports writes the outbox rows for a batch's changes, inside its
// transaction: each changed, unsuppressed finding once per sink.
func (s *sqlStore) queueExports(ctx context.Context, tx *sql.Tx, res []Result, now time.Time) error {
	p := s.exports.Load()
	if p == nil || len(p.sinks) == 0 {
		return nil
	}
	type change struct{ id, kind string }
	seen := map[change]bool{}
	var changes []change
	for _, r := range res {
		if r.Record == nil || r.Record.SuppressedBy != "" || (r.Outcome != OutcomeCreated && r.Outcome != OutcomeUpdated) {
			continue
		}
		c := change{r.Record.ID, ExportUpdate}
		if r.Outcome == OutcomeCreated {
			c.kind = ExportNew
		}
		if !seen[c] {
			seen[c] = true
			changes = append(changes, c)
		}
	}
	// A stable order: concurrent batches on PostgreSQL take row locks in it.
	slices.SortFunc(changes, func(a, b change) int { return cmp.Or(cmp.Compare(a.id, b.id), cmp.Compare(a.kind, b.kind)) })
	at := micros(now)
	due := map[string]int64{ExportNew: at, ExportUpdate: micros(now.Add(p.updateDelay))}
	for _, sink := range p.sinks {
		for start := 0; start < len(changes); start += outboxChunk {
			part := changes[start:min(start+outboxChunk, len(changes))]
			var b strings.Builder
			args := make([]any, 0, 5*len(part))
			b.WriteString(`INSERT INTO export_outbox (sink, finding_id, kind, due_at, queued_at, version, lease_until, lease_owner) VALUES `)
			for i, c := range part {
				if i > 0 {
					b.WriteString(", ")
				}
				n := len(args)
				fmt.Fprintf(&b, "($%d, $%d, $%d, $%d, $%d, 1, 0, '')", n+1, n+2, n+3, n+4, n+5)
				args = append(args, sink, c.id, c.kind, due[c.kind], at)
			}
			// A change for a row already waiting folds into it: the row
			// keeps its due time (that is the batching), and its version
			// tells a settle that came from an earlier claim to leave it.
			b.WriteString(` ON CONFLICT (sink, finding_id, kind) DO UPDATE SET version = export_outbox.version + 1`)
			if _, err := tx.ExecContext(ctx, s.q(b.String()), args...); err != nil {
				return fmt.Errorf("queue exports for %s: %w", sink, err)
			}
		}
	}
	return nil
}

// HasDueExports reports whether sink has rows due and not leased: a read,
// so an idle relay's poll does not take SQLite's writer.
func (s *sqlStore) HasDueExports(ctx context.Context, sink string) (bool, error) {
	now := micros(s.now())
	var one int
	err := s.r.QueryRowContext(ctx, s.q(`SELECT 1 FROM export_outbox WHERE sink = $1 AND due_at <= $2 AND lease_until < $3 LIMIT 1`),
		sink, now, now).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("look for due exports of %s: %w", sink, err)
	}
	return true, nil
}

// ClaimExports leases up to limit due rows of sink until now+lease, oldest
// due first, under a token made from owner (ExportItem.Claim). Leased rows
// are skipped.
func (s *sqlStore) ClaimExports(ctx context.Context, sink, owner string, lease time.Duration, limit int) (items []ExportItem, err error) {
	defer s.observe("export_claim", time.Now(), &err)
	if limit <= 0 {
		return nil, nil
	}
	now := s.now()
	token := owner + "#" + strconv.FormatUint(s.claims.Add(1), 36)
	lock := ""
	if s.engine == EnginePostgres {
		lock = " FOR UPDATE SKIP LOCKED"
	}
	q := s.q(fmt.Sprintf(`UPDATE export_outbox SET lease_until = $1, lease_owner = $2
		WHERE (sink, finding_id, kind) IN (SELECT sink, finding_id, kind FROM export_outbox
			WHERE sink = $3 AND due_at <= $4 AND lease_until < $5 ORDER BY due_at, finding_id LIMIT %d%s)
		RETURNING finding_id, kind, version, queued_at`, limit, lock))
	err = s.tx(ctx, func(tx *sql.Tx) error {
		items = items[:0]
		rows, err := tx.QueryContext(ctx, q, micros(now.Add(lease)), token, sink, micros(now), micros(now))
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			it := ExportItem{Sink: sink, Claim: token}
			var queued int64
			if err := rows.Scan(&it.FindingID, &it.Kind, &it.Version, &queued); err != nil {
				return err
			}
			it.QueuedAt = fromMicros(queued)
			items = append(items, it)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("claim exports for %s: %w", sink, err)
	}
	// RETURNING gives no order: send the oldest first.
	slices.SortStableFunc(items, func(a, b ExportItem) int { return a.QueuedAt.Compare(b.QueuedAt) })
	return items, nil
}

// RenewExports extends the leases of these claimed rows of sink to
// now+lease. Only rows the caller still works on are named, each under its
// own claim: a row whose settling failed lapses and goes out again.
func (s *sqlStore) RenewExports(ctx context.Context, sink string, items []ExportItem, lease time.Duration) (err error) {
	defer s.observe("export_renew", time.Now(), &err)
	until := micros(s.now().Add(lease))
	for len(items) > 0 {
		n := min(len(items), outboxChunk)
		var b strings.Builder
		args := make([]any, 0, 2+3*n)
		args = append(args, until, sink)
		b.WriteString(`UPDATE export_outbox SET lease_until = $1 WHERE sink = $2 AND (finding_id, kind, lease_owner) IN (VALUES `)
		for i, it := range items[:n] {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "($%d, $%d, $%d)", len(args)+1, len(args)+2, len(args)+3)
			args = append(args, it.FindingID, it.Kind, it.Claim)
		}
		b.WriteString(")")
		if err := s.outboxExec(ctx, b.String(), args...); err != nil {
			return fmt.Errorf("renew export leases: %w", err)
		}
		items = items[n:]
	}
	return nil
}

// SettleExport ends a claimed row: the sink delivered it or gave it up.
// If the finding changed again since the claim, the row stays for that
// change, due at requeueAt. A claim whose lease lapsed and was taken
// since changes nothing.
func (s *sqlStore) SettleExport(ctx context.Context, it ExportItem, requeueAt time.Time) (err error) {
	defer s.observe("export_settle", time.Now(), &err)
	return s.tx(ctx, func(tx *sql.Tx) error {
		r, err := tx.ExecContext(ctx, s.q(`DELETE FROM export_outbox
			WHERE sink = $1 AND finding_id = $2 AND kind = $3 AND version = $4 AND lease_owner = $5`),
			it.Sink, it.FindingID, it.Kind, it.Version, it.Claim)
		if err != nil {
			return fmt.Errorf("settle export of %s: %w", it.FindingID, err)
		}
		if n, _ := r.RowsAffected(); n > 0 {
			return nil
		}
		_, err = tx.ExecContext(ctx, s.q(`UPDATE export_outbox SET lease_until = 0, lease_owner = '', due_at = $1
			WHERE sink = $2 AND finding_id = $3 AND kind = $4 AND lease_owner = $5`),
			micros(requeueAt), it.Sink, it.FindingID, it.Kind, it.Claim)
		if err != nil {
			return fmt.Errorf("requeue export of %s: %w", it.FindingID, err)
		}
		return nil
	})
}

// ReleaseExport hands a claimed row back unsent, due again at dueAt.
func (s *sqlStore) ReleaseExport(ctx context.Context, it ExportItem, dueAt time.Time) (err error) {
	defer s.observe("export_release", time.Now(), &err)
	return s.outboxExec(ctx, `UPDATE export_outbox SET lease_until = 0, lease_owner = '', due_at = $1
		WHERE sink = $2 AND finding_id = $3 AND kind = $4 AND lease_owner = $5`,
		micros(dueAt), it.Sink, it.FindingID, it.Kind, it.Claim)
}

// ReleaseAllExports drops every lease on the outbox. Only for a store one
// server owns alone (SQLite): leases of its previous run are void.
func (s *sqlStore) ReleaseAllExports(ctx context.Context) error {
	return s.outboxExec(ctx, `UPDATE export_outbox SET lease_until = 0, lease_owner = '' WHERE lease_until <> 0`)
}

// DropExports deletes the waiting rows of sinks not in keep and returns
// how many per sink: records for a sink no longer configured.
func (s *sqlStore) DropExports(ctx context.Context, keep []string) (dropped map[string]int, err error) {
	backlog, err := s.ExportBacklogs(ctx)
	if err != nil {
		return nil, err
	}
	dropped = map[string]int{}
	for _, b := range backlog {
		if slices.Contains(keep, b.Sink) {
			continue
		}
		if err := s.outboxExec(ctx, `DELETE FROM export_outbox WHERE sink = $1`, b.Sink); err != nil {
			return dropped, err
		}
		dropped[b.Sink] = b.Pending
	}
	return dropped, nil
}

// ExportBacklogs counts the outbox rows per sink.
func (s *sqlStore) ExportBacklogs(ctx context.Context) (out []ExportBacklog, err error) {
	defer s.observe("export_backlog", time.Now(), &err)
	now := micros(s.now())
	rows, err := s.r.QueryContext(ctx, s.q(`SELECT sink, COUNT(*), SUM(CASE WHEN lease_until >= $1 THEN 1 ELSE 0 END),
		MIN(queued_at), SUM(CASE WHEN due_at <= $2 THEN 1 ELSE 0 END), MIN(CASE WHEN due_at <= $3 THEN due_at END)
		FROM export_outbox GROUP BY sink ORDER BY sink`), now, now, now)
	if err != nil {
		return nil, fmt.Errorf("export backlog: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var b ExportBacklog
		var oldest int64
		var due sql.NullInt64
		if err := rows.Scan(&b.Sink, &b.Pending, &b.Leased, &oldest, &b.Due, &due); err != nil {
			return nil, fmt.Errorf("export backlog: %w", err)
		}
		b.Oldest, b.OldestDue = fromMicros(oldest), fromMicros(due.Int64)
		out = append(out, b)
	}
	return out, rows.Err()
}

func (s *sqlStore) outboxExec(ctx context.Context, query string, args ...any) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, s.q(query), args...)
		return err
	})
}

package store

import (
	"context"
	"database/sql"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// On PostgreSQL every statement is a round trip, and a finding merged one
// statement at a time cost five of them. A batch therefore settles its
// message ids, its row locks and its reporters' counts in one statement
// each up front and writes the counts in one statement at the end, leaving
// one statement per finding: its insert or update. (SQLite runs in process:
// its statements cost no round trip, and it keeps the plain path.)

// batchState is what a PostgreSQL batch read up front, kept current as
// the batch proceeds.
type batchState struct {
	fresh  map[string]bool    // message keys this batch recorded first (false once used)
	recs   map[string]*Record // rows as locked or since written (absent: no row)
	counts map[countKey]int64 // highest cumulative count per finding, reporter and epoch
	dirty  map[countKey]bool  // counts to write at the end
	// updates are the counts-only row updates written at the end in one
	// statement, the latest per finding.
	updates map[string]countsUpdate
}

// countsUpdate is one row of sqlUpdateCountsBatch.
type countsUpdate struct {
	updated, last, occurrences, revision int64
	archived                             bool
	suppressedBy                         *string
	doc                                  string
}

func countsUpdateOf(r *Record, doc []byte) countsUpdate {
	f := r.Finding
	u := countsUpdate{updated: micros(f.UpdatedAt), last: micros(f.Service.EventLastSeen), occurrences: f.Service.Count,
		revision: r.Revision, archived: f.Service.Archived, doc: string(doc)}
	if r.SuppressedBy != "" {
		u.suppressedBy = &r.SuppressedBy
	}
	return u
}

type countKey struct{ id, reporter, epoch string }

// usableID reports whether a finding id can be stored.
func usableID(id string) bool {
	return id != "" && len(id) <= 128 && utf8.ValidString(id) && !strings.ContainsRune(id, 0)
}

// preloadBatch records the batch's message keys, locks its existing rows
// in id order and reads their counts.
func (s *sqlStore) preloadBatch(ctx context.Context, tx *sql.Tx, us []Upsert, now time.Time) (*batchState, error) {
	b := &batchState{fresh: map[string]bool{}, recs: map[string]*Record{}, counts: map[countKey]int64{}, dirty: map[countKey]bool{},
		updates: map[string]countsUpdate{}}
	var keys, ids []string
	for _, u := range us {
		id := idOf(u)
		if !usableID(id) {
			continue // rejected without recording its message, as on the plain path
		}
		if u.MsgKey != "" {
			keys = append(keys, cleanText(u.MsgKey))
		}
		ids = append(ids, id)
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	if len(keys) > 0 {
		err := queryEach(ctx, tx, `INSERT INTO applied_messages (msg_key, applied_at) SELECT k, $2 FROM unnest($1::text[]) AS k
			ON CONFLICT (msg_key) DO NOTHING RETURNING msg_key`, []any{keys, micros(now)}, func(rows *sql.Rows) error {
			var k string
			if err := rows.Scan(&k); err != nil {
				return err
			}
			b.fresh[k] = true
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("record messages: %w", err)
		}
	}
	if len(ids) == 0 {
		return b, nil
	}
	// Locks are taken in id order (the sort runs below the lock), as the
	// plain path takes them, so concurrent batches queue rather than deadlock.
	err := queryEach(ctx, tx, `SELECT `+recordCols+` FROM findings WHERE id = ANY($1) ORDER BY id FOR UPDATE`, []any{ids},
		func(rows *sql.Rows) error {
			r, err := scanRecord(rows)
			if err != nil {
				return err
			}
			b.recs[r.ID] = r
			return nil
		})
	if err != nil {
		return nil, fmt.Errorf("lock findings: %w", err)
	}
	// Read after the locks: a statement's snapshot starts with it, so the
	// counts of every transaction that held a lock before are seen.
	err = queryEach(ctx, tx, `SELECT finding_id, reporter, epoch, cumulative FROM finding_counts WHERE finding_id = ANY($1)`,
		[]any{ids}, func(rows *sql.Rows) error {
			var k countKey
			var c int64
			if err := rows.Scan(&k.id, &k.reporter, &k.epoch, &c); err != nil {
				return err
			}
			b.counts[k] = c
			return nil
		})
	if err != nil {
		return nil, fmt.Errorf("read contributions: %w", err)
	}
	return b, nil
}

// reloadCounts reads a finding's counts afresh, for a row another
// transaction inserted after the batch's preload; it holds the row lock.
func (s *sqlStore) reloadCounts(ctx context.Context, tx *sql.Tx, b *batchState, id string) error {
	err := queryEach(ctx, tx, `SELECT reporter, epoch, cumulative FROM finding_counts WHERE finding_id = $1`,
		[]any{id}, func(rows *sql.Rows) error {
			k := countKey{id: id}
			var c int64
			if err := rows.Scan(&k.reporter, &k.epoch, &c); err != nil {
				return err
			}
			b.counts[k] = c
			return nil
		})
	if err != nil {
		return fmt.Errorf("read contributions of %s: %w", id, err)
	}
	return nil
}

// sqlUpdateCountsBatch is sqlUpdateCounts over parallel arrays.
const sqlUpdateCountsBatch = `UPDATE findings AS f SET updated_at = u.updated_at, last_seen = u.last_seen,
	occurrences = u.occurrences, archived = u.archived, suppressed_by = u.suppressed_by, revision = u.revision,
	doc = u.doc::jsonb
	FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::boolean[], $6::text[], $7::bigint[], $8::text[])
		AS u(id, updated_at, last_seen, occurrences, archived, suppressed_by, revision, doc)
	WHERE f.id = u.id`

// flushUpdates writes the batch's counts-only updates in one statement.
func (s *sqlStore) flushUpdates(ctx context.Context, tx *sql.Tx, b *batchState) error {
	if len(b.updates) == 0 {
		return nil
	}
	var (
		ids, docs                []string
		updated, last, occ, revs []int64
		archived                 []bool
		suppressed               []*string
	)
	for _, id := range slices.Sorted(maps.Keys(b.updates)) {
		u := b.updates[id]
		ids, docs = append(ids, id), append(docs, u.doc)
		updated, last, occ, revs = append(updated, u.updated), append(last, u.last), append(occ, u.occurrences), append(revs, u.revision)
		archived, suppressed = append(archived, u.archived), append(suppressed, u.suppressedBy)
	}
	if _, err := tx.ExecContext(ctx, sqlUpdateCountsBatch, ids, updated, last, occ, archived, suppressed, revs, docs); err != nil {
		return fmt.Errorf("update findings: %w", err)
	}
	return nil
}

// flushCounts writes the counts the batch raised.
func (s *sqlStore) flushCounts(ctx context.Context, tx *sql.Tx, b *batchState) error {
	if len(b.dirty) == 0 {
		return nil
	}
	var ids, reporters, epochs []string
	var cums []int64
	for k := range b.dirty {
		ids, reporters, epochs = append(ids, k.id), append(reporters, k.reporter), append(epochs, k.epoch)
		cums = append(cums, b.counts[k])
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO finding_counts (finding_id, reporter, epoch, cumulative)
		SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[])
		ON CONFLICT (finding_id, reporter, epoch) DO UPDATE SET cumulative = excluded.cumulative`, ids, reporters, epochs, cums)
	if err != nil {
		return fmt.Errorf("record contributions: %w", err)
	}
	return nil
}

// queryEach runs a query in tx and calls fn for each row.
func queryEach(ctx context.Context, tx *sql.Tx, query string, args []any, fn func(*sql.Rows) error) error {
	rows, err := tx.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := fn(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

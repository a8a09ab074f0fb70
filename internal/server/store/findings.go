package store

import (
	"bytes"
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	jsonv2 "github.com/go-json-experiment/json"

	"github.com/mamori-dev/mamori/internal/finding"
)

// recordCols are the columns scanRecord reads, in order; recordColsF the
// same of a table aliased f.
const (
	recordCols  = `id, doc, cluster, suppressed_by, revision, archived, occurrences`
	recordColsF = `f.id, f.doc, f.cluster, f.suppressed_by, f.revision, f.archived, f.occurrences`
)

// findingCols are the columns a finding row is written with, in rowArgs order.
const findingCols = `id, type, severity, resource_type, node_id, cluster, namespace, container_id, image,
	created_at, updated_at, first_seen, last_seen, occurrences, archived, sample, suppressed_by, revision, doc`

// The upsert path's statements, prepared once on SQLite.
const (
	sqlMsgInsert = `INSERT INTO applied_messages (msg_key, applied_at) VALUES ($1, $2)
		ON CONFLICT (msg_key) DO NOTHING`
	sqlUpdate = `UPDATE findings SET type = $2, severity = $3, resource_type = $4, node_id = $5,
		cluster = $6, namespace = $7, container_id = $8, image = $9, created_at = $10, updated_at = $11, first_seen = $12,
		last_seen = $13, occurrences = $14, archived = $15, sample = $16, suppressed_by = $17, revision = $18, doc = $19
		WHERE id = $1`
	// sqlUpdateCounts is the common merge: a further occurrence changes the
	// count, times, revision and document but none of the finding's
	// identity columns. Naming only those columns keeps SQLite from
	// rewriting the entries of the nine indexes over the others.
	sqlUpdateCounts = `UPDATE findings SET updated_at = $2, last_seen = $3, occurrences = $4, archived = $5,
		suppressed_by = $6, revision = $7, doc = $8 WHERE id = $1`
	sqlInsert = `INSERT INTO findings (` + findingCols + `)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
		ON CONFLICT (id) DO NOTHING`
	sqlSetContribution = `INSERT INTO finding_counts (finding_id, reporter, epoch, cumulative) VALUES ($1, $2, $3, $4)
		ON CONFLICT (finding_id, reporter, epoch) DO UPDATE SET cumulative = excluded.cumulative`
	sqlLock = `SELECT ` + recordColsF + `, c.cumulative FROM findings f
		LEFT JOIN finding_counts c ON c.finding_id = f.id AND c.reporter = $2 AND c.epoch = $3 WHERE f.id = $1`
)

var hotStatements = []string{sqlMsgInsert, sqlUpdate, sqlUpdateCounts, sqlInsert, sqlSetContribution, sqlLock, sqlNodeGetForUpdate, sqlNodeHooksGet, sqlNodeWrite, sqlNodeHooks, sqlNodeEvent}

type scanner interface{ Scan(dest ...any) error }

func scanRecord(sc scanner) (*Record, error) {
	var (
		id, doc      string
		cluster, sup sql.NullString
		rev, n       int64
		archived     bool
	)
	if err := sc.Scan(&id, &doc, &cluster, &sup, &rev, &archived, &n); err != nil {
		return nil, err
	}
	f := new(finding.Finding)
	if err := jsonv2.Unmarshal([]byte(doc), f); err != nil {
		return nil, fmt.Errorf("finding %s: stored document: %w", id, err)
	}
	// Archiving changes the column only; the column is the truth.
	f.Service.Archived = archived
	f.Service.Count = n
	return &Record{Finding: f, Cluster: cluster.String, SuppressedBy: sup.String, Revision: rev}, nil
}

// docArg is the stored form of a JSON document for the engine.
func (s *sqlStore) docArg(doc []byte) any {
	if s.engine == EnginePostgres {
		return json.RawMessage(doc)
	}
	return string(doc)
}

// encodeRecord returns r's finding document. PostgreSQL cannot store NUL in
// text or jsonb, so NUL characters (only hostile input has them) become
// U+FFFD in both engines, and r's finding is re-read from the cleaned
// document so that columns and document agree.
func encodeRecord(r *Record) ([]byte, error) {
	doc, err := json.Marshal(r.Finding)
	if err != nil {
		return nil, fmt.Errorf("encode finding %s: %w", r.ID, err)
	}
	if !bytes.Contains(doc, []byte(`\u0000`)) {
		return doc, nil
	}
	var v any
	if err := json.Unmarshal(doc, &v); err != nil {
		return nil, fmt.Errorf("clean finding %s: %w", r.ID, err)
	}
	if doc, err = json.Marshal(scrubNUL(v)); err != nil {
		return nil, fmt.Errorf("clean finding %s: %w", r.ID, err)
	}
	f := new(finding.Finding)
	if err := json.Unmarshal(doc, f); err != nil {
		return nil, fmt.Errorf("clean finding %s: %w", r.ID, err)
	}
	r.Finding = f
	return doc, nil
}

func scrubNUL(v any) any {
	switch t := v.(type) {
	case string:
		return strings.ReplaceAll(t, "\x00", "\uFFFD")
	case []any:
		for i := range t {
			t[i] = scrubNUL(t[i])
		}
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, x := range t {
			out[strings.ReplaceAll(k, "\x00", "\uFFFD")] = scrubNUL(x)
		}
		return out
	}
	return v
}

// cleanText makes s storable as text in both engines.
func cleanText(s string) string {
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// present returns the string at a JSON field that is present (even empty),
// or NULL when the field is absent: the columns mirror the document, so
// SQL and Criterion.Match agree on missing fields.
func present(ok bool, v string) any {
	if !ok {
		return nil
	}
	return v
}

// rowArgs are r's column values in findingCols order.
func (s *sqlStore) rowArgs(r *Record, doc []byte) []any {
	f := r.Finding
	res := f.Resource
	var nodeID, ns, ctr, image any
	if d := res.InstanceDetails; d != nil {
		nodeID = d.NodeID
	}
	if c := res.ContainerDetails; c != nil {
		ctr = c.ID
		image = present(c.Image != "", c.Image) // omitempty
	}
	if k := res.KubernetesDetails; k != nil {
		ns = k.KubernetesWorkloadDetails.Namespace
	}
	return []any{f.ID, f.Type, f.Severity, res.ResourceType, nodeID, nullable(r.Cluster), ns, ctr, image,
		micros(f.CreatedAt), micros(f.UpdatedAt), micros(f.Service.EventFirstSeen), micros(f.Service.EventLastSeen),
		f.Service.Count, f.Service.Archived, f.Service.AdditionalInfo.Sample, nullable(r.SuppressedBy), r.Revision,
		s.docArg(doc)}
}

// sameIdentity reports whether two rowArgs rows agree on every column
// sqlUpdateCounts leaves alone: type through image (1-8), created_at (9),
// first_seen (11) and sample (15).
func sameIdentity(a, b []any) bool {
	for _, i := range []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 15} {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func nodeOf(f *finding.Finding) string {
	if d := f.Resource.InstanceDetails; d != nil {
		return d.NodeID
	}
	return ""
}

func (s *sqlStore) UpsertFindings(ctx context.Context, us []Upsert) (res []Result, err error) {
	defer s.observe("upsert", time.Now(), &err)
	if len(us) == 0 {
		return nil, nil
	}
	// Lock findings in id order so concurrent batches cannot deadlock on
	// each other's rows.
	order := make([]int, len(us))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(idOf(us[a]), idOf(us[b])) })
	err = s.tx(ctx, func(tx *sql.Tx) error {
		res = make([]Result, len(us))
		now := s.now().UTC()
		var b *batchState
		if s.engine == EnginePostgres {
			var err error
			if b, err = s.preloadBatch(ctx, tx, us, now); err != nil {
				return err
			}
		}
		for _, i := range order {
			r, err := s.upsertOne(ctx, tx, &us[i], now, b)
			if err != nil {
				return fmt.Errorf("upsert finding %s: %w", idOf(us[i]), err)
			}
			res[i] = r
		}
		if b != nil {
			if err := s.flushUpdates(ctx, tx, b); err != nil {
				return err
			}
			if err := s.flushCounts(ctx, tx, b); err != nil {
				return err
			}
		}
		return s.queueExports(ctx, tx, res, now)
	})
	if err != nil {
		return nil, err
	}
	for _, r := range res {
		s.m.Upserts.WithLabelValues(s.engine, string(r.Outcome)).Inc()
	}
	return res, nil
}

func idOf(u Upsert) string {
	if u.Finding == nil {
		return ""
	}
	return u.Finding.ID
}

// upsertOne merges one finding. b is the PostgreSQL batch's state (nil on
// SQLite): message key, row and counts come from it instead of a statement
// each, and it is kept current for the batch's later findings.
func (s *sqlStore) upsertOne(ctx context.Context, tx *sql.Tx, u *Upsert, now time.Time, b *batchState) (Result, error) {
	in := u.Finding
	if in == nil || !usableID(in.ID) {
		return Result{Outcome: OutcomeRejected, Err: fmt.Errorf("%w: finding without a usable id", ErrInvalid)}, nil
	}
	if u.MsgKey != "" {
		fresh, err := s.recordMessage(ctx, tx, b, cleanText(u.MsgKey), now)
		if err != nil {
			return Result{}, err
		}
		if !fresh {
			return Result{Outcome: OutcomeDuplicate}, nil
		}
	}
	reporter, epoch := cleanText(u.Reporter), cleanText(u.Epoch)
	key := countKey{in.ID, reporter, epoch}
	cum := max(in.Service.Count, 1)
	var (
		cur  *Record
		prev int64
		err  error
	)
	if b != nil {
		cur, prev = b.recs[in.ID], b.counts[key]
	} else if cur, prev, err = s.lockFinding(ctx, tx, in.ID, reporter, epoch); err != nil {
		return Result{}, err
	}
	if cur == nil {
		rec, err := s.insertFinding(ctx, tx, u, cum, now)
		if err != nil {
			return Result{}, err
		}
		if rec != nil {
			if err := s.setContribution(ctx, tx, b, key, cum); err != nil {
				return Result{}, err
			}
			if b != nil {
				b.recs[in.ID] = rec
			}
			return Result{Outcome: OutcomeCreated, Delta: cum, Record: rec}, nil
		}
		// Another transaction inserted it first: merge into theirs.
		if cur, prev, err = s.lockFinding(ctx, tx, in.ID, reporter, epoch); err != nil {
			return Result{}, err
		}
		if cur == nil {
			return Result{}, fmt.Errorf("finding %s vanished during upsert", in.ID)
		}
		if b != nil {
			// The winner's counts for every reporter were not preloaded
			// (there was no row then); later copies in this batch need them.
			b.recs[in.ID] = cur
			if err := s.reloadCounts(ctx, tx, b, in.ID); err != nil {
				return Result{}, err
			}
			prev = b.counts[key]
		}
	}
	if nodeOf(cur.Finding) != nodeOf(in) {
		return Result{Outcome: OutcomeRejected, Err: fmt.Errorf("%w: %s is node %q's, not %q's",
			ErrNodeMismatch, in.ID, nodeOf(cur.Finding), nodeOf(in))}, nil
	}
	delta := max(cum-prev, 0)
	if delta > 0 {
		if err := s.setContribution(ctx, tx, b, key, cum); err != nil {
			return Result{}, err
		}
	}
	rec, changed := merge(cur, u, delta, now)
	if !changed {
		return Result{Outcome: OutcomeUnchanged, Record: cur}, nil
	}
	doc, err := encodeRecord(rec)
	if err != nil {
		return Result{}, err
	}
	args := s.rowArgs(rec, doc)
	q := sqlUpdate
	if old := s.rowArgs(cur, nil); sameIdentity(old, args) {
		q, args = sqlUpdateCounts, []any{args[0], args[10], args[12], args[13], args[14], args[16], args[17], args[18]}
	}
	switch {
	case b != nil && q == sqlUpdateCounts:
		// Written with the batch's other counts-only updates at its end.
		b.updates[in.ID] = countsUpdateOf(rec, doc)
	default:
		if b != nil {
			delete(b.updates, in.ID) // this full update supersedes it
		}
		if _, err := s.txExec(ctx, tx, q, args...); err != nil {
			return Result{}, fmt.Errorf("update: %w", err)
		}
	}
	if b != nil {
		b.recs[in.ID] = rec
	}
	return Result{Outcome: OutcomeUpdated, Delta: delta, Record: rec}, nil
}

// recordMessage records a message key and reports whether it was new.
func (s *sqlStore) recordMessage(ctx context.Context, tx *sql.Tx, b *batchState, key string, now time.Time) (bool, error) {
	if b != nil {
		fresh := b.fresh[key]
		b.fresh[key] = false // a second copy in the batch is a duplicate
		return fresh, nil
	}
	r, err := s.txExec(ctx, tx, sqlMsgInsert, key, micros(now))
	if err != nil {
		return false, fmt.Errorf("record message: %w", err)
	}
	n, err := r.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("record message: %w", err)
	}
	return n > 0, nil
}

// lockFinding reads a finding for update (nil when absent) with the
// reporter's highest cumulative count in the epoch (0 when none).
func (s *sqlStore) lockFinding(ctx context.Context, tx *sql.Tx, id, reporter, epoch string) (*Record, int64, error) {
	q := sqlLock
	if s.engine == EnginePostgres {
		q += ` FOR UPDATE OF f`
	}
	row, err := s.txQueryRow(ctx, tx, q, id, reporter, epoch)
	if err != nil {
		return nil, 0, fmt.Errorf("read finding: %w", err)
	}
	var prev sql.NullInt64
	r, err := scanRecord(plusScanner{row, []any{&prev}})
	if errors.Is(err, sql.ErrNoRows) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read finding: %w", err)
	}
	if s.engine == EnginePostgres {
		// After waiting for the row lock, PostgreSQL re-checks the locked
		// row but not the joined one, which is then from before the lock
		// holder's commit. Read the contribution afresh under the lock.
		prev = sql.NullInt64{}
		err := tx.QueryRowContext(ctx, `SELECT cumulative FROM finding_counts WHERE finding_id = $1 AND reporter = $2 AND epoch = $3`,
			id, reporter, epoch).Scan(&prev)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return nil, 0, fmt.Errorf("read contribution: %w", err)
		}
	}
	return r, prev.Int64, nil
}

// plusScanner scans the record columns plus trailing ones.
type plusScanner struct {
	sc    scanner
	extra []any
}

func (p plusScanner) Scan(dest ...any) error { return p.sc.Scan(append(dest, p.extra...)...) }

// insertFinding inserts a new finding; it returns nil when another
// transaction inserted the id first.
func (s *sqlStore) insertFinding(ctx context.Context, tx *sql.Tx, u *Upsert, cum int64, now time.Time) (*Record, error) {
	f := *u.Finding
	f.Service.Count = cum
	f.Service.Archived = false
	f.UpdatedAt = latest(now, f.CreatedAt)
	rec := &Record{Finding: &f, Cluster: cleanText(u.Cluster), Revision: 1}
	if u.Suppress != nil {
		if rule := u.Suppress(rec); rule != "" {
			rec.SuppressedBy, f.Service.Archived = cleanText(rule), true
		}
	}
	doc, err := encodeRecord(rec)
	if err != nil {
		return nil, err
	}
	r, err := s.txExec(ctx, tx, sqlInsert, s.rowArgs(rec, doc)...)
	if err != nil {
		return nil, fmt.Errorf("insert: %w", err)
	}
	if n, err := r.RowsAffected(); err != nil {
		return nil, fmt.Errorf("insert: %w", err)
	} else if n == 0 {
		return nil, nil
	}
	return rec, nil
}

func (s *sqlStore) setContribution(ctx context.Context, tx *sql.Tx, b *batchState, k countKey, cum int64) error {
	if b != nil {
		b.counts[k], b.dirty[k] = cum, true // written by flushCounts
		return nil
	}
	_, err := s.txExec(ctx, tx, sqlSetContribution, k.id, k.reporter, k.epoch, cum)
	if err != nil {
		return fmt.Errorf("record contribution: %w", err)
	}
	return nil
}

// merge folds u into the stored record cur and reports whether anything
// changed. cur is not modified.
func merge(cur *Record, u *Upsert, delta int64, now time.Time) (*Record, bool) {
	old, in := cur.Finding, u.Finding
	f := *old
	newer := in.Service.EventLastSeen.After(old.Service.EventLastSeen)
	if newer {
		// The latest occurrence's body (process, context, evidence) is
		// what a responder wants; identity and merged fields stay.
		f = *in
		f.ID = old.ID
	}
	f.Service.Archived = old.Service.Archived
	f.CreatedAt = earliest(old.CreatedAt, in.CreatedAt)
	f.Service.Count = old.Service.Count + delta
	f.Service.EventFirstSeen = earliest(old.Service.EventFirstSeen, in.Service.EventFirstSeen)
	f.Service.EventLastSeen = latest(old.Service.EventLastSeen, in.Service.EventLastSeen)
	rec := &Record{Finding: &f, Cluster: cur.Cluster, SuppressedBy: cur.SuppressedBy, Revision: cur.Revision}
	changed := delta > 0 || newer || !f.CreatedAt.Equal(old.CreatedAt) ||
		!f.Service.EventFirstSeen.Equal(old.Service.EventFirstSeen)
	// The agent hashes executables off its hot path: the hash of the
	// stored occurrence's process comes in a later copy of it.
	if p, q := f.Service.RuntimeDetails.Process, in.Service.RuntimeDetails.Process; !newer && p != nil && q != nil &&
		p.ExecutableSha256 == "" && q.ExecutableSha256 != "" && p.UUID != "" && p.UUID == q.UUID && p.ExecutablePath == q.ExecutablePath {
		c := *p
		c.ExecutableSha256 = q.ExecutableSha256
		f.Service.RuntimeDetails.Process = &c
		changed = true
	}
	if rec.Cluster == "" && u.Cluster != "" {
		rec.Cluster, changed = cleanText(u.Cluster), true
	}
	if u.Suppress != nil {
		if rule := u.Suppress(rec); rule != "" && (rule != rec.SuppressedBy || !f.Service.Archived) {
			rec.SuppressedBy, f.Service.Archived, changed = cleanText(rule), true, true
		}
	}
	if changed {
		f.UpdatedAt = latest(now, latest(old.UpdatedAt, f.CreatedAt))
		rec.Revision++
	} else {
		f.UpdatedAt = old.UpdatedAt
	}
	return rec, changed
}

func earliest(a, b time.Time) time.Time {
	if b.IsZero() || (!a.IsZero() && a.Before(b)) {
		return a
	}
	return b
}

func latest(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func (s *sqlStore) GetFinding(ctx context.Context, id string) (rec *Record, err error) {
	defer s.observe("get", time.Now(), &err)
	rec, err = scanRecord(s.r.QueryRowContext(ctx, s.q(`SELECT `+recordCols+` FROM findings WHERE id = $1`), id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("finding %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get finding %s: %w", id, err)
	}
	return rec, nil
}

// maxIDs bounds one archive call.
const maxIDs = 1000

func (s *sqlStore) SetArchived(ctx context.Context, ids []string, archived bool) (n int, err error) {
	defer s.observe("archive", time.Now(), &err)
	if len(ids) > maxIDs {
		return 0, fmt.Errorf("%w: %d ids, at most %d per call", ErrInvalid, len(ids), maxIDs)
	}
	// Unarchiving is the user overriding a suppression rule: clear the flag.
	stmt := s.q(`UPDATE findings SET archived = TRUE, revision = revision + 1 WHERE id = $1 AND archived = FALSE`)
	if !archived {
		stmt = s.q(`UPDATE findings SET archived = FALSE, suppressed_by = NULL, revision = revision + 1
			WHERE id = $1 AND (archived = TRUE OR suppressed_by IS NOT NULL)`)
	}
	err = s.tx(ctx, func(tx *sql.Tx) error {
		n = 0
		for _, id := range slices.Compact(slices.Sorted(slices.Values(ids))) {
			r, err := tx.ExecContext(ctx, stmt, id)
			if err != nil {
				return fmt.Errorf("archive %s: %w", id, err)
			}
			k, _ := r.RowsAffected()
			n += int(k)
		}
		return nil
	})
	return n, err
}

func (s *sqlStore) ArchiveMatching(ctx context.Context, criteria []Criterion, ruleID string) (n int, err error) {
	defer s.observe("archive_matching", time.Now(), &err)
	if len(criteria) == 0 {
		return 0, fmt.Errorf("%w: archiving needs at least one criterion", ErrInvalid)
	}
	cs, err := NormalizeAll(criteria)
	if err != nil {
		return 0, err
	}
	args := []any{nullable(cleanText(ruleID))}
	where, err := s.where(cs, &args)
	if err != nil {
		return 0, err
	}
	err = s.tx(ctx, func(tx *sql.Tx) error {
		r, err := tx.ExecContext(ctx, s.q(`UPDATE findings SET archived = TRUE, suppressed_by = COALESCE($1, suppressed_by),
			revision = revision + 1 WHERE archived = FALSE AND `+where), args...)
		if err != nil {
			return fmt.Errorf("archive matching: %w", err)
		}
		k, _ := r.RowsAffected()
		n = int(k)
		return nil
	})
	return n, err
}

func (s *sqlStore) Stats(ctx context.Context) (st Stats, err error) {
	defer s.observe("stats", time.Now(), &err)
	// Each count is answered from an index, never from the finding rows
	// (a scan of their documents cost seconds per scrape at 10^5 findings).
	for _, c := range []struct {
		q   string
		dst *int
	}{
		{`SELECT COUNT(*) FROM findings`, &st.Findings},
		{`SELECT COUNT(*) FROM findings WHERE archived = $1`, &st.Archived},
		{`SELECT COUNT(*) FROM findings WHERE suppressed_by IS NOT NULL`, &st.Suppressed},
		{`SELECT COUNT(*) FROM rules`, &st.Rules},
		{`SELECT COUNT(*) FROM nodes`, &st.Nodes},
	} {
		var args []any
		if strings.Contains(c.q, "$1") {
			args = append(args, true)
		}
		if err := s.r.QueryRowContext(ctx, s.q(c.q), args...).Scan(c.dst); err != nil {
			return st, fmt.Errorf("stats: %w", err)
		}
	}
	return st, nil
}

package store

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"time"
)

// purgeChunk bounds one delete statement, so a large purge never holds the
// writer (SQLite) or many row locks (PostgreSQL) for long.
const purgeChunk = 1000

func (s *sqlStore) Purge(ctx context.Context, o PurgeOptions) (res PurgeResult, err error) {
	defer s.observe("purge", time.Now(), &err)
	if o.Now.IsZero() {
		o.Now = s.now()
	}
	if o.Retention <= 0 {
		o.Retention = DefaultRetention
	}
	if o.MessageTTL <= 0 {
		o.MessageTTL = DefaultMessageTTL
	}
	cut := micros(o.Now.Add(-o.Retention))
	steps := []struct {
		n    *int
		stmt string
		arg  int64
	}{
		// finding_counts rows go with their finding (ON DELETE CASCADE).
		{&res.Findings, `DELETE FROM findings WHERE id IN (SELECT id FROM findings WHERE updated_at < $1 LIMIT %d)`, cut},
		{&res.Messages, `DELETE FROM applied_messages WHERE msg_key IN
			(SELECT msg_key FROM applied_messages WHERE applied_at < $1 LIMIT %d)`, micros(o.Now.Add(-o.MessageTTL))},
		{&res.CoverageEvents, `DELETE FROM coverage_events WHERE seq IN (SELECT seq FROM coverage_events WHERE at < $1 LIMIT %d)`, cut},
		{&res.Nodes, `DELETE FROM nodes WHERE node_id IN (SELECT node_id FROM nodes WHERE last_heartbeat < $1 LIMIT %d)`, cut},
		{&res.Removals, `DELETE FROM removed_nodes WHERE node_id IN (SELECT node_id FROM removed_nodes WHERE removed_at < $1 LIMIT %d)`, cut},
		{&res.Exports, `DELETE FROM export_outbox WHERE (sink, finding_id, kind) IN
			(SELECT sink, finding_id, kind FROM export_outbox WHERE queued_at < $1 LIMIT %d)`, cut},
	}
	for _, st := range steps {
		stmt := s.q(fmt.Sprintf(st.stmt, purgeChunk))
		for {
			var k int64
			err := s.tx(ctx, func(tx *sql.Tx) error {
				r, err := tx.ExecContext(ctx, stmt, st.arg)
				if err != nil {
					return err
				}
				k, err = r.RowsAffected()
				return err
			})
			if err != nil {
				return res, fmt.Errorf("purge: %w", err)
			}
			*st.n += int(k)
			if k < purgeChunk {
				break
			}
		}
	}
	if s.engine == EngineSQLite {
		// Keep planner statistics current (PostgreSQL's autovacuum does this).
		if _, err := s.w.ExecContext(ctx, `PRAGMA optimize=0x10002`); err != nil {
			s.log.Warn("sqlite: optimize", "err", err)
		}
	}
	s.m.Purged.WithLabelValues(s.engine, "findings").Add(float64(res.Findings))
	s.m.Purged.WithLabelValues(s.engine, "messages").Add(float64(res.Messages))
	s.m.Purged.WithLabelValues(s.engine, "coverage_events").Add(float64(res.CoverageEvents))
	s.m.Purged.WithLabelValues(s.engine, "nodes").Add(float64(res.Nodes))
	s.m.Purged.WithLabelValues(s.engine, "exports").Add(float64(res.Exports))
	s.m.Purged.WithLabelValues(s.engine, "removed_nodes").Add(float64(res.Removals))
	return res, nil
}

// RunRetention purges st every interval [1h] until ctx is done, first
// right away. Several replicas may run it on one database: deletes of the
// same rows are harmless.
func RunRetention(ctx context.Context, st Store, interval time.Duration, o PurgeOptions, log *slog.Logger) {
	if interval <= 0 {
		interval = time.Hour
	}
	if log == nil {
		log = slog.Default()
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		o := o
		o.Now = time.Time{}
		res, err := st.Purge(ctx, o)
		switch {
		case err != nil && ctx.Err() == nil:
			log.Error("store: retention purge failed", "err", err)
		case res != PurgeResult{}:
			log.Info("store: retention purge", "findings", res.Findings, "messages", res.Messages,
				"coverageEvents", res.CoverageEvents, "nodes", res.Nodes, "exports", res.Exports)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

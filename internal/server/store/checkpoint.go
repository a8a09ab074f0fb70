package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// SQLite's WAL is copied into the database file by a checkpoint. Left to
// the writer (wal_autocheckpoint), a checkpoint runs inside whichever
// commit crosses the threshold: that commit then copies thousands of pages
// and syncs the database file, and every finding and heartbeat waiting on
// it waits too — the ingest path's longest stalls. A checkpointer on its
// own connection does the copy beside the writer instead (PASSIVE never
// blocks it); the writer's own threshold stays as a backstop should the
// checkpointer fall far behind.
const (
	checkpointEvery    = 250 * time.Millisecond
	writerCheckpointAt = 65536 // pages (256 MiB of WAL): backstop only
)

// checkpointer runs PASSIVE checkpoints until stopped.
type checkpointer struct {
	db   *sql.DB
	stop chan struct{}
	done chan struct{}
}

func (s *sqlStore) startCheckpointer(ctx context.Context, dsn string) error {
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return fmt.Errorf("sqlite: open checkpointer: %w", err)
	}
	db.SetMaxOpenConns(1)
	db.SetConnMaxIdleTime(0)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return fmt.Errorf("sqlite: open checkpointer: %w", err)
	}
	c := &checkpointer{db: db, stop: make(chan struct{}), done: make(chan struct{})}
	s.ckpt = c
	go s.runCheckpoints(c)
	return nil
}

func (s *sqlStore) runCheckpoints(c *checkpointer) {
	defer close(c.done)
	t := time.NewTicker(checkpointEvery)
	defer t.Stop()
	lastLog := time.Time{}
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		err := s.checkpoint(c.db)
		if err != nil && time.Since(lastLog) > time.Minute {
			lastLog = time.Now()
			s.log.Warn("sqlite: background checkpoint failed; the writer's backstop still bounds the WAL", "err", err)
		}
	}
}

// checkpoint copies what it can of the WAL without waiting for anyone.
func (s *sqlStore) checkpoint(db *sql.DB) (err error) {
	defer s.observe("checkpoint", time.Now(), &err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var busy, frames, copied int64
	if err := db.QueryRowContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &frames, &copied); err != nil {
		return fmt.Errorf("wal_checkpoint: %w", err)
	}
	return nil
}

func (c *checkpointer) close() error {
	close(c.stop)
	<-c.done
	return c.db.Close()
}

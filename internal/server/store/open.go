package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	"modernc.org/sqlite"
)

// Engines.
const (
	EngineSQLite   = "sqlite"
	EnginePostgres = "postgres"
)

// Options tune an opened store. Zero values take defaults.
type Options struct {
	// MaxConns bounds the connection pool (PostgreSQL) or the reader pool
	// (SQLite) [4].
	MaxConns int
	// Metrics receives the store's measurements; nil keeps private ones.
	Metrics *Metrics
	Logger  *slog.Logger
	// now replaces the clock in tests.
	now func() time.Time
	// targetVersion stops migrations at that version (tests of upgrades).
	targetVersion int
}

// Open opens the store named by dsn: "sqlite:PATH" or a file path for
// SQLite, "postgres://…" or "postgresql://…" for PostgreSQL.
func Open(ctx context.Context, dsn string, o Options) (Store, error) {
	switch {
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		return OpenPostgres(ctx, dsn, o)
	case strings.HasPrefix(dsn, "sqlite:"):
		return OpenSQLite(ctx, strings.TrimPrefix(dsn, "sqlite:"), o)
	case dsn == "":
		return nil, fmt.Errorf("%w: empty store address", ErrInvalid)
	}
	return OpenSQLite(ctx, dsn, o)
}

// sqlStore implements Store over database/sql for both engines.
type sqlStore struct {
	engine string
	w      *sql.DB // writes (SQLite: one connection, BEGIN IMMEDIATE)
	r      *sql.DB // reads (SQLite: read-only pool; PostgreSQL: same as w)
	log    *slog.Logger
	m      *Metrics
	now    func() time.Time
	stmts  sync.Map      // query → *sql.Stmt prepared on w (SQLite hot paths)
	ckpt   *checkpointer // SQLite: checkpoints beside the writer
	// partial: migrations stopped early (tests of upgrades); statements
	// on tables not made yet are left unprepared.
	partial bool
	// exports is the outbox policy SetExports set (nil: none).
	exports atomic.Pointer[exportPolicy]
	claims  atomic.Uint64 // export outbox claim tokens made
}

func newSQLStore(engine string, w, r *sql.DB, o Options) *sqlStore {
	s := &sqlStore{engine: engine, w: w, r: r, log: o.Logger, m: o.Metrics, now: o.now}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.m == nil {
		s.m = NewMetrics(nil)
	}
	if s.now == nil {
		s.now = time.Now
	}
	return s
}

func (s *sqlStore) Engine() string { return s.engine }

func (s *sqlStore) Ping(ctx context.Context) error {
	// SQLite's one writer connection: a stuck writer does not answer, while
	// its readers would.
	if err := s.w.PingContext(ctx); err != nil {
		return fmt.Errorf("ping %s: %w", s.engine, err)
	}
	return nil
}

func (s *sqlStore) Close() error {
	var err error
	s.stmts.Range(func(_, v any) bool {
		err = errors.Join(err, v.(*sql.Stmt).Close())
		return true
	})
	err = errors.Join(err, s.w.Close())
	if s.r != nil && s.r != s.w {
		err = errors.Join(err, s.r.Close())
	}
	if s.ckpt != nil {
		err = errors.Join(err, s.ckpt.close())
	}
	return err
}

// q adapts a statement written with PostgreSQL placeholders ($1) to the
// engine: SQLite takes ?1. Statements contain no other '$'.
func (s *sqlStore) q(query string) string {
	if s.engine == EngineSQLite {
		return strings.ReplaceAll(query, "$", "?")
	}
	return query
}

// OpenSQLite opens (creating when missing, mode 0600) the SQLite database
// at path and migrates it.
func OpenSQLite(ctx context.Context, path string, o Options) (Store, error) {
	registerSQLiteFuncs()
	if path == "" {
		return nil, fmt.Errorf("%w: empty SQLite path", ErrInvalid)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("sqlite: create directory: %w", err)
	}
	// Findings hold command lines: readable by the server's user only.
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	f.Close()
	// A 64 MiB page cache and memory-mapped reads per connection: without
	// them every lookup of a finding or node row is a pread. The WAL is
	// checkpointed by a connection of its own (checkpoint.go); the writer's
	// threshold is only a backstop.
	base := "file:" + (&url.URL{Path: path}).EscapedPath() + "?_pragma=busy_timeout(10000)&_pragma=foreign_keys(ON)" +
		"&_pragma=cache_size(-65536)&_pragma=mmap_size(268435456)&_pragma=temp_store(MEMORY)"
	w, err := sql.Open("sqlite", base+"&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)"+
		fmt.Sprintf("&_pragma=wal_autocheckpoint(%d)", writerCheckpointAt)+"&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	// One writer: SQLite serialises writers anyway, and one connection
	// turns lock contention into a queue instead of busy retries.
	w.SetMaxOpenConns(1)
	w.SetConnMaxIdleTime(0)
	if err := w.PingContext(ctx); err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	s := newSQLStore(EngineSQLite, w, nil, o)
	s.partial = o.targetVersion > 0
	if err := s.migrate(ctx, o.targetVersion); err != nil {
		w.Close()
		return nil, err
	}
	if err := s.prepareHot(ctx); err != nil {
		s.Close()
		return nil, err
	}
	// Planner statistics decide between the sort and filter indexes (an
	// archived filter sorted by severity is 0.1 ms with them, 20 ms
	// without); optimize refreshes them only where they are stale.
	if _, err := w.ExecContext(ctx, `PRAGMA optimize=0x10002`); err != nil {
		s.log.Warn("sqlite: optimize", "err", err)
	}
	r, err := sql.Open("sqlite", base+"&_pragma=query_only(ON)")
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite: open readers: %w", err)
	}
	r.SetMaxOpenConns(max(o.MaxConns, 4))
	s.r = r
	if err := s.startCheckpointer(ctx, base+"&_pragma=synchronous(NORMAL)"); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// OpenPostgres connects to PostgreSQL at dsn and migrates the database.
func OpenPostgres(ctx context.Context, dsn string, o Options) (Store, error) {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	db.SetMaxOpenConns(max(o.MaxConns, 4))
	db.SetMaxIdleConns(max(o.MaxConns, 4))
	db.SetConnMaxIdleTime(5 * time.Minute)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("postgres: connect: %w", err)
	}
	s := newSQLStore(EnginePostgres, db, db, o)
	if err := s.migrate(ctx, o.targetVersion); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// retryable reports whether a transaction failed only because of another
// one (PostgreSQL deadlock or serialisation failure, SQLite busy).
func retryable(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "40001" || pe.Code == "40P01"
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		c := se.Code() & 0xff
		return c == 5 || c == 6 // SQLITE_BUSY, SQLITE_LOCKED
	}
	return false
}

// tx runs fn in a write transaction, retrying a few times when it lost a
// race with another transaction.
func (s *sqlStore) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	var err error
	for attempt := range 5 {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return errors.Join(err, ctx.Err())
			case <-time.After(time.Duration(attempt*attempt) * 5 * time.Millisecond):
			}
		}
		err = s.tryTx(ctx, fn)
		if err == nil || !retryable(err) {
			return err
		}
		s.m.Retries.WithLabelValues(s.engine).Inc()
	}
	return err
}

func (s *sqlStore) tryTx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// observe records an operation's duration and failure.
func (s *sqlStore) observe(op string, start time.Time, err *error) {
	s.m.OpDuration.WithLabelValues(s.engine, op).Observe(time.Since(start).Seconds())
	if *err != nil && !errors.Is(*err, ErrNotFound) && !errors.Is(*err, ErrInvalid) {
		s.m.OpErrors.WithLabelValues(s.engine, op).Inc()
	}
}

// micros and fromMicros convert times to the stored form: microseconds
// since the epoch, UTC, which sorts and compares the same in both engines.
func micros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

func fromMicros(us int64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return time.UnixMicro(us).UTC()
}

// nullable maps "" to NULL.
func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// txExec and txQueryRow run a hot-path statement in tx. On SQLite the
// statement is prepared once and reused (parsing would otherwise dominate
// small statements); pgx caches PostgreSQL's prepared statements itself.
func (s *sqlStore) txExec(ctx context.Context, tx *sql.Tx, query string, args ...any) (sql.Result, error) {
	if s.engine != EngineSQLite {
		return tx.ExecContext(ctx, s.q(query), args...)
	}
	if st := s.prepared(query); st != nil {
		return tx.StmtContext(ctx, st).ExecContext(ctx, args...)
	}
	return tx.ExecContext(ctx, s.q(query), args...)
}

func (s *sqlStore) txQueryRow(ctx context.Context, tx *sql.Tx, query string, args ...any) (*sql.Row, error) {
	if s.engine != EngineSQLite {
		return tx.QueryRowContext(ctx, s.q(query), args...), nil
	}
	if st := s.prepared(query); st != nil {
		return tx.StmtContext(ctx, st).QueryRowContext(ctx, args...), nil
	}
	return tx.QueryRowContext(ctx, s.q(query), args...), nil
}

// prepared returns the statement prepared at open, or nil for others.
// Statements cannot be prepared lazily: the one writer connection is held
// by the transaction that needs them.
func (s *sqlStore) prepared(query string) *sql.Stmt {
	if v, ok := s.stmts.Load(query); ok {
		return v.(*sql.Stmt)
	}
	return nil
}

// prepareHot prepares the upsert path's statements on the writer.
func (s *sqlStore) prepareHot(ctx context.Context) error {
	for _, q := range hotStatements {
		st, err := s.w.PrepareContext(ctx, s.q(q))
		if err != nil {
			if s.partial {
				continue
			}
			return fmt.Errorf("sqlite: prepare: %w", err)
		}
		s.stmts.Store(q, st)
	}
	return nil
}

// Package storetest runs the store's real engines for tests: SQLite in a
// temporary directory, and a throwaway PostgreSQL server the test binary
// starts itself (initdb + postgres on a unix socket in a temporary
// directory, as the postgres user when running as root). Without
// PostgreSQL the tests that need it skip, or fail under CI=true.
//
// A package using Postgres must call Main from its TestMain, so the server
// started for the package is stopped at the end.
package storetest

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"

	"github.com/mamori-dev/mamori/internal/server/store"
	"github.com/mamori-dev/mamori/internal/testenv"
)

// Engines lists the engines tests run against.
var Engines = []string{store.EngineSQLite, store.EnginePostgres}

var (
	pgOnce sync.Once
	pg     *server
	pgErr  error
	dbSeq  atomic.Int64
)

type server struct {
	dir, sock string
	bin, data string
	cmd       *exec.Cmd
	exited    chan struct{}       // closed when cmd has been waited for
	cred      *syscall.Credential // run as the postgres user when we are root
}

// Main runs the tests and stops the PostgreSQL server if one was started.
func Main(m *testing.M) {
	code := m.Run()
	if pg != nil {
		pg.stop()
	}
	os.Exit(code)
}

// DSN returns a store address for engine: a fresh SQLite file, or a fresh
// database on the package's PostgreSQL server.
func DSN(t testing.TB, engine string) string {
	t.Helper()
	switch engine {
	case store.EngineSQLite:
		return "sqlite:" + filepath.Join(t.TempDir(), "mamori.db")
	case store.EnginePostgres:
		return PostgresDSN(t)
	}
	t.Fatalf("unknown engine %q", engine)
	return ""
}

// Open opens a fresh store of engine, closed at cleanup.
func Open(t testing.TB, engine string, o store.Options) store.Store {
	t.Helper()
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	st, err := store.Open(context.Background(), DSN(t, engine), o)
	if err != nil {
		t.Fatalf("open %s store: %v", engine, err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// PostgresDSN creates a new empty schema in the package's PostgreSQL
// database (starting the server on first use) and returns an address whose
// search_path selects it. Schemas, unlike databases, cost nothing to make.
func PostgresDSN(t testing.TB) string {
	t.Helper()
	pgOnce.Do(func() { pg, pgErr = start() })
	if pgErr != nil {
		if testenv.InCI() {
			t.Fatalf("PostgreSQL required under CI=true: %v", pgErr)
		}
		t.Skipf("skipping: needs PostgreSQL (apt-get install postgresql): %v", pgErr)
	}
	name := fmt.Sprintf("t%d_%d", os.Getpid(), dbSeq.Add(1))
	admin, err := sql.Open("pgx", pg.dsn(testDB))
	if err != nil {
		t.Fatalf("postgres admin: %v", err)
	}
	defer admin.Close()
	if _, err := admin.Exec("CREATE SCHEMA " + name); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	return pg.dsn(testDB) + "&search_path=" + name
}

// testDB is the one database tests share, a schema each.
const testDB = "mamori_test"

func (s *server) dsn(db string) string {
	return "postgres://mamori@/" + db + "?host=" + s.sock + "&sslmode=disable"
}

// binDir finds the newest installed PostgreSQL's bin directory.
func binDir() (string, error) {
	m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(m) == 0 {
		if p, err := exec.LookPath("initdb"); err == nil {
			return filepath.Dir(p), nil
		}
		return "", fmt.Errorf("no initdb under /usr/lib/postgresql/*/bin or on PATH")
	}
	best, bestV := "", -1
	for _, p := range m {
		v, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(p))))
		if v > bestV {
			best, bestV = p, v
		}
	}
	return filepath.Dir(best), nil
}

func start() (*server, error) {
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "mamori-pg-")
	if err != nil {
		return nil, err
	}
	s := &server{dir: dir, sock: filepath.Join(dir, "sock")}
	if err := os.Mkdir(s.sock, 0o700); err != nil {
		return nil, err
	}
	if os.Geteuid() == 0 {
		// postgres refuses to run as root.
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root and no postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		for _, p := range []string{dir, s.sock} {
			if err := os.Chown(p, uid, gid); err != nil {
				return nil, err
			}
		}
		s.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	data := filepath.Join(dir, "data")
	out, err := s.command(filepath.Join(bin, "initdb"), "-D", data, "-U", "mamori", "-A", "trust",
		"-E", "UTF8", "--locale=C", "--no-sync").CombinedOutput()
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %v: %s", err, lastLines(out))
	}
	s.bin, s.data = bin, data
	if err := s.launch(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	db, _ := sql.Open("pgx", s.dsn("postgres"))
	_, err = db.Exec("CREATE DATABASE " + testDB)
	db.Close()
	if err != nil {
		s.stop()
		return nil, fmt.Errorf("create test database: %w", err)
	}
	return s, nil
}

// launch starts postgres on s's data directory and waits until it answers.
func (s *server) launch() error {
	log, err := os.OpenFile(filepath.Join(s.dir, "postgres.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	s.cmd = s.command(filepath.Join(s.bin, "postgres"), "-D", s.data, "-k", s.sock, "-c", "listen_addresses=",
		"-c", "max_connections=200", "-c", "shared_buffers=64MB")
	s.cmd.Stdout, s.cmd.Stderr = log, log
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	exited := make(chan struct{})
	s.exited = exited
	go func() { _ = s.cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-exited:
			b, _ := os.ReadFile(log.Name())
			return fmt.Errorf("postgres exited at start: %s", lastLines(b))
		default:
		}
		db, _ := sql.Open("pgx", s.dsn("postgres"))
		err := db.Ping()
		db.Close()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(log.Name())
			s.halt()
			return fmt.Errorf("postgres did not come up: %v: %s", err, lastLines(b))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (s *server) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Dir = s.dir
	if s.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	}
	return cmd
}

func (s *server) stop() {
	s.halt()
	os.RemoveAll(s.dir)
}

// halt stops postgres and keeps its data: a fast shutdown (SIGINT), then
// an immediate one (SIGQUIT), which also ends its children, and only then
// SIGKILL.
func (s *server) halt() {
	if s.cmd == nil || s.cmd.Process == nil || s.exited == nil {
		return
	}
	for _, sig := range []os.Signal{os.Interrupt, syscall.SIGQUIT, os.Kill} {
		select {
		case <-s.exited:
			return
		default:
		}
		_ = s.cmd.Process.Signal(sig)
		select {
		case <-s.exited:
			return
		case <-time.After(10 * time.Second):
		}
	}
}

func lastLines(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 8 {
		lines = lines[len(lines)-8:]
	}
	return strings.Join(lines, "\n")
}

// StartPostgres starts a throwaway PostgreSQL server (as storetest does for
// tests) for programs such as benchmarks, and returns the address of an
// empty database and a function that stops the server and removes it.
func StartPostgres() (dsn string, stop func(), err error) {
	s, err := start()
	if err != nil {
		return "", nil, err
	}
	return s.dsn(testDB), s.stop, nil
}

// Postgres is a PostgreSQL server of one test's own, which the test may stop
// and start again on the same data: a database outage.
type Postgres struct {
	t testing.TB
	s *server
}

// PrivatePostgres starts a PostgreSQL server for t alone, removed at cleanup.
func PrivatePostgres(t testing.TB) *Postgres {
	t.Helper()
	s, err := start()
	if err != nil {
		if testenv.InCI() {
			t.Fatalf("PostgreSQL required under CI=true: %v", err)
		}
		t.Skipf("skipping: needs PostgreSQL (apt-get install postgresql): %v", err)
	}
	t.Cleanup(s.stop)
	return &Postgres{t: t, s: s}
}

// DSN is the address of the server's empty test database.
func (p *Postgres) DSN() string { return p.s.dsn(testDB) }

// Stop shuts the server down (fast shutdown: clients are disconnected).
func (p *Postgres) Stop() { p.s.halt() }

// Start starts it again on the same data.
func (p *Postgres) Start() {
	p.t.Helper()
	if err := p.s.launch(); err != nil {
		p.t.Fatal(err)
	}
}

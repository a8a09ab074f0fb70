package store_test

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/mamori-dev/mamori/internal/server/store"
)

// Outage errors are told from errors of one request, through any wrapping;
// errors that may mean either are left to a ping. (SQLite's "database or
// disk is full" is checked on a real full disk in TestSQLiteOnAFullDisk.)
func TestIsUnavailable(t *testing.T) {
	pg := func(code string) error { return &pgconn.PgError{Code: code, Message: "x"} }
	wrap := func(err error) error { return fmt.Errorf("upsert: commit: %w", err) }
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"plain", errors.New("no such column"), false},
		{"refused", wrap(&net.OpError{Op: "dial", Net: "unix", Err: syscall.ECONNREFUSED}), true},
		{"read", wrap(&net.OpError{Op: "read", Net: "tcp", Err: errors.New("use of closed network connection")}), true},
		{"reset", wrap(syscall.ECONNRESET), true},
		{"no space", wrap(syscall.ENOSPC), true},
		{"bad conn", wrap(driver.ErrBadConn), true},
		{"connect", wrap(&pgconn.ConnectError{}), true},
		{"admin shutdown", wrap(pg("57P01")), true},
		{"starting up", wrap(pg("57P03")), true},
		{"connection failure", wrap(pg("08006")), true},
		{"disk full", wrap(pg("53100")), true},
		{"serialization: one transaction's, retried as such", wrap(pg("40001")), false},
		{"deadlock: likewise", wrap(pg("40P01")), false},
		{"statement timeout", wrap(pg("57014")), false},
		{"unique violation", wrap(pg("23505")), false},
		{"integrity at commit", wrap(pg("40002")), false},
		{"deadline: ask a ping", wrap(context.DeadlineExceeded), false},
		{"truncated data: ask a ping", wrap(io.ErrUnexpectedEOF), false},
	} {
		if got := store.IsUnavailable(c.err); got != c.want {
			t.Errorf("%s (%v): %v, want %v", c.name, c.err, got, c.want)
		}
	}
}

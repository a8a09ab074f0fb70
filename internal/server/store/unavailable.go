package store

import (
	"database/sql"
	"database/sql/driver"
	"errors"
	"net"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"
)

// IsUnavailable reports whether err itself says the database cannot do any
// work right now — it is unreachable, shutting down or starting, out of
// disk or memory, busy — rather than that one request was wrong. Callers
// retry such work for as long as the outage lasts instead of giving up
// after a few attempts: nothing about the work itself is at fault. Errors
// that may mean either (a timeout, a connection cut mid-reply, which also
// reads like truncated data) are not classified here: ask Ping.
func IsUnavailable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, sql.ErrConnDone) || errors.Is(err, driver.ErrBadConn) {
		return true
	}
	for _, e := range []error{syscall.ECONNREFUSED, syscall.ECONNRESET, syscall.EPIPE, syscall.ENOSPC, syscall.EIO} {
		if errors.Is(err, e) {
			return true
		}
	}
	var opErr *net.OpError // dialing, reading or writing the database's socket
	if errors.As(err, &opErr) {
		return true
	}
	var connErr *pgconn.ConnectError
	if errors.As(err, &connErr) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && len(pgErr.Code) == 5 {
		switch pgErr.Code {
		case "57P01", "57P02", "57P03", // shutting down, crashed, not yet accepting connections
			"58030": // I/O error
			return true
		}
		switch pgErr.Code[:2] {
		case "08", // connection exception
			"53": // insufficient resources: disk full, out of memory, too many connections
			return true
		}
	}
	var liteErr *sqlite.Error
	if errors.As(err, &liteErr) {
		switch liteErr.Code() & 0xff { // primary result code
		case 5, // SQLITE_BUSY
			6,  // SQLITE_LOCKED
			7,  // SQLITE_NOMEM
			10, // SQLITE_IOERR
			13, // SQLITE_FULL
			14: // SQLITE_CANTOPEN
			return true
		}
	}
	return false
}

package export

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"

	"github.com/mamori-dev/mamori/internal/finding"
)

// FileSink appends one encoded record per line to a file (JSON lines: an
// OCSF or event-bus archive that log shippers and data lakes pick up).
// The file is created with mode 0600: records carry command lines.
type FileSink struct {
	path string
	enc  Encoder
	log  *slog.Logger

	mu sync.Mutex
	f  *os.File

	written, failed atomic.Uint64
}

// OpenFileSink opens path for appending records made by enc.
func OpenFileSink(path string, enc Encoder, log *slog.Logger) (*FileSink, error) {
	if enc == nil {
		return nil, fmt.Errorf("export file %s: no encoder", path)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("export file: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &FileSink{path: path, enc: enc, log: log, f: f}, nil
}

// Offer appends f's record (Sink). A failed write (a full disk) is counted
// and logged, and the record handed back (false) to be offered again.
func (s *FileSink) Offer(f *finding.Finding, isNew bool, done func(Settlement)) bool {
	if done == nil {
		done = func(Settlement) {}
	}
	b, err := s.enc.Encode(f, isNew)
	if err != nil {
		s.failed.Add(1)
		s.log.Error("export file: encode", "finding", f.ID, "err", err)
		done(GivenUp)
		return true
	}
	s.mu.Lock()
	err = s.write(append(b, '\n'))
	s.mu.Unlock()
	if err != nil {
		if n := s.failed.Add(1); n&(n-1) == 0 {
			s.log.Error("export file: write; the record stays in the export outbox", "path", s.path, "failed", n, "err", err)
		}
		return false
	}
	s.written.Add(1)
	done(Delivered)
	return true
}

// write appends one line; a write cut short (a full disk) is taken back,
// so the file never holds half a record before the whole one is written
// again.
func (s *FileSink) write(line []byte) error {
	n, err := s.f.Write(line)
	if err == nil || n == 0 {
		return err
	}
	if fi, serr := s.f.Stat(); serr == nil && fi.Size() >= int64(n) {
		if terr := s.f.Truncate(fi.Size() - int64(n)); terr != nil {
			return errors.Join(err, fmt.Errorf("take back a partial record: %w", terr))
		}
	}
	return err
}

// Counts returns records written and failed.
func (s *FileSink) Counts() (written, failed uint64) { return s.written.Load(), s.failed.Load() }

// Close closes the file.
func (s *FileSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.f.Close()
}

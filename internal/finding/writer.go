package finding

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unicode"
)

// FileWriter appends findings to a file as JSON lines, one per new or
// updated finding. Write errors (a full disk) are counted and returned;
// the caller keeps the finding.
type FileWriter struct {
	mu      sync.Mutex
	f       *os.File
	written atomic.Uint64
	failed  atomic.Uint64
}

// OpenFile opens (creating, mode 0600: findings carry command lines) path
// for appending.
func OpenFile(path string) (*FileWriter, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open findings file: %w", err)
	}
	return &FileWriter{f: f}, nil
}

// Write appends one finding.
func (w *FileWriter) Write(f *Finding) error {
	b, err := json.Marshal(f)
	if err != nil {
		w.failed.Add(1)
		return fmt.Errorf("encode finding: %w", err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, err := w.f.Write(append(b, '\n')); err != nil {
		w.failed.Add(1)
		return fmt.Errorf("write finding %s: %w", f.ID, err)
	}
	w.written.Add(1)
	return nil
}

// Counts returns lines written and failed writes.
func (w *FileWriter) Counts() (written, failed uint64) { return w.written.Load(), w.failed.Load() }

// Close closes the file.
func (w *FileWriter) Close() error { return w.f.Close() }

// Line is a short human description of a finding for terminals; runtime
// strings are escaped so a hostile process name cannot drive the terminal.
func Line(f *Finding, isNew bool) string {
	state := "NEW"
	if !isNew {
		state = "UPD"
	}
	// The host as `mamori findings list` names it: its hostname, else its node id.
	where := "host " + f.Service.AdditionalInfo.AgentDetails.AgentID
	if d := f.Resource.InstanceDetails; d != nil && d.Hostname != "" {
		where = "host " + printable(d.Hostname)
	}
	if c := f.Resource.ContainerDetails; c != nil {
		id := c.ID
		if len(id) > 12 {
			id = id[:12]
		}
		where = "container " + id
		if c.Name != "" {
			where += " (" + printable(c.Name) + ")"
		}
	}
	proc := ""
	if p := f.Service.RuntimeDetails.Process; p != nil {
		proc = fmt.Sprintf(" pid=%d exe=%s", p.Pid, printable(p.ExecutablePath))
	}
	return fmt.Sprintf("%s %-6s %s  %s%s  count=%d id=%s", state, f.SeverityLabel, f.Type, where, proc, f.Service.Count, f.ID)
}

func printable(s string) string {
	if strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) || r == '"' }) >= 0 {
		return strconv.Quote(s)
	}
	return s
}

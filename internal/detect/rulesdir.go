package detect

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"
)

// maxRulesFile caps a rules file.
const maxRulesFile = 4 << 20

// MaxRules caps the custom rules in force: each one the index cannot
// place runs on every event of its kinds, on the agent's one dispatch
// goroutine.
const MaxRules = 2000

// RulesDir is a directory of rules files (*.yaml, *.yml, any case; names
// starting with a dot are skipped: editors' and syncs' temporary files).
// A file that cannot be read or parsed as a whole (a YAML error, a key
// other than rules:, too large) keeps the rules it had at its last good
// load, so an edit with a typo does not silently disable the rules beside
// it; a directory that cannot be listed keeps them all. Each such case is
// reported.
type RulesDir struct {
	dir   string
	good  map[string][]*Rule // by file: its rules at its last good load
	stamp string             // the directory's state at the last load
}

// OpenRulesDir returns the rules directory dir; nothing is read yet.
func OpenRulesDir(dir string) *RulesDir { return &RulesDir{dir: dir, good: map[string][]*Rule{}} }

// LoadRulesDir loads every rules file in dir, in name order. It returns
// the rules that compiled and an error listing those that did not; rule
// ids must be unique across the directory.
func LoadRulesDir(dir string) ([]Detector, error) {
	rs, err := OpenRulesDir(dir).Load()
	ds := make([]Detector, len(rs))
	for i, r := range rs {
		ds[i] = r
	}
	return ds, err
}

// rulesFiles lists the rules files of dir, sorted.
func rulesFiles(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list rules: %w", err)
	}
	var files []string
	for _, e := range ents {
		n := e.Name()
		if ext := strings.ToLower(filepath.Ext(n)); strings.HasPrefix(n, ".") || ext != ".yaml" && ext != ".yml" {
			continue
		}
		files = append(files, filepath.Join(dir, n))
	}
	sort.Strings(files)
	return files, nil
}

// Load reads the directory's rules.
func (d *RulesDir) Load() ([]*Rule, error) {
	d.stamp = rulesStamp(d.dir) // before reading: a change during the load is seen by the next
	files, err := rulesFiles(d.dir)
	if err != nil {
		var kept []*Rule
		for _, f := range slices.Sorted(maps.Keys(d.good)) {
			kept = append(kept, d.good[f]...)
		}
		if len(kept) > 0 {
			err = fmt.Errorf("%w (the %d rules loaded before stay in force)", err, len(kept))
		}
		return kept, err
	}
	var out []*Rule
	var errs []error
	seen := map[string]string{}
	good := map[string][]*Rule{}
	for _, f := range files {
		rs, err := LoadRulesFile(f)
		if err != nil {
			if rs == nil && d.good[f] != nil {
				rs = d.good[f]
				err = fmt.Errorf("%w (its %d rules loaded before stay in force)", err, len(rs))
			}
			errs = append(errs, err)
		}
		if rs != nil {
			good[f] = rs
		}
		for _, r := range rs {
			if prev, dup := seen[r.spec.ID]; dup {
				errs = append(errs, fmt.Errorf("%s: rule %q: id already used at %s", r.Where(), r.spec.ID, prev))
				continue
			}
			seen[r.spec.ID] = r.Where()
			out = append(out, r)
		}
	}
	if len(out) > MaxRules {
		errs = append(errs, fmt.Errorf("%d rules: only the first %d (in file name order) are in force; the rest from %s on are not",
			len(out), MaxRules, out[MaxRules].Where()))
		out = out[:MaxRules]
	}
	d.good = good
	return out, errors.Join(errs...)
}

// Watch reloads the directory's rules into e whenever a rules file there
// changes (polled every interval, by name, size and mtime) until stop is
// closed; onReload hears how many are in force and what was refused (nil:
// nothing). Load it first: a change since that load is picked up at once.
func (d *RulesDir) Watch(stop <-chan struct{}, interval time.Duration, e *Engine, onReload func(loaded int, refused error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		if rulesStamp(d.dir) == d.stamp {
			continue
		}
		rs, err := d.Load()
		e.SetRules(rs)
		if onReload != nil {
			onReload(len(rs), err)
		}
	}
}

// WatchRules is OpenRulesDir(dir).Watch after a first load that is not
// applied (e holds it already).
func WatchRules(stop <-chan struct{}, dir string, interval time.Duration, e *Engine, onReload func(loaded int, refused error)) {
	d := OpenRulesDir(dir)
	_, _ = d.Load()
	d.Watch(stop, interval, e, onReload)
}

func rulesStamp(dir string) string {
	files, err := rulesFiles(dir)
	if err != nil {
		return "error: " + err.Error()
	}
	var b strings.Builder
	for _, f := range files {
		if st, err := os.Stat(f); err == nil {
			fmt.Fprintf(&b, "%s:%d:%d;", f, st.Size(), st.ModTime().UnixNano())
		}
	}
	return b.String()
}

// LoadRulesFile loads one rules file: a regular file (a link to one is
// fine), at most 4 MiB.
func LoadRulesFile(path string) ([]*Rule, error) {
	// Non-blocking: a FIFO put in its place must not hang the agent.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("read rules: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read rules: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file (%s)", path, st.Mode().Type())
	}
	b, err := io.ReadAll(io.LimitReader(f, maxRulesFile+1))
	if err != nil {
		return nil, fmt.Errorf("read rules: %w", err)
	}
	if len(b) > maxRulesFile {
		return nil, fmt.Errorf("%s: rules file larger than %d MiB", path, maxRulesFile>>20)
	}
	return ParseRules(path, b)
}

package intel

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// maxListBytes caps one list file: lists come from feeds, which can be
// hostile or broken.
const maxListBytes = 64 << 20

// Store serves the current Set and reloads it from a directory.
type Store struct {
	dir     string
	cur     atomic.Pointer[Set]
	mu      sync.Mutex
	stamp   string
	loads   atomic.Uint64
	errs    atomic.Uint64
	lastErr atomic.Value // string
}

// NewStore loads the built-in list plus every list in dir ("" for the
// built-in list alone). A bad file is reported by the returned error but
// does not stop the other files from loading.
func NewStore(dir string) (*Store, error) {
	s := &Store{dir: dir}
	err := s.Reload()
	return s, err
}

// Set returns the current set.
func (s *Store) Set() *Set { return s.cur.Load() }

// Reload re-reads the directory. The previous set stays in use until the
// new one is complete.
func (s *Store) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := NewBuilder()
	addBuiltin(b)
	var errs []error
	if s.dir != "" {
		files, err := listFiles(s.dir)
		if err != nil {
			errs = append(errs, err)
		}
		for _, f := range files {
			if err := loadFile(b, f); err != nil {
				errs = append(errs, err)
			}
		}
		s.stamp = stamp(files)
	}
	s.cur.Store(b.Set())
	s.loads.Add(1)
	err := errors.Join(errs...)
	if err != nil {
		s.errs.Add(1)
		s.lastErr.Store(err.Error())
	}
	return err
}

// Watch reloads whenever a file in the directory changes (polled every
// interval) until stop is closed, telling onReload each reload's result (nil:
// loaded).
func (s *Store) Watch(stop <-chan struct{}, interval time.Duration, onReload func(error)) {
	if s.dir == "" {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			files, _ := listFiles(s.dir)
			s.mu.Lock()
			changed := stamp(files) != s.stamp
			s.mu.Unlock()
			if changed {
				if err := s.Reload(); onReload != nil {
					onReload(err)
				}
			}
		}
	}
}

// StoreStats are the store's counters.
type StoreStats struct {
	Indicators int    `json:"indicators"`
	Loads      uint64 `json:"loads"`
	Errors     uint64 `json:"errors"`
	LastError  string `json:"lastError,omitempty"`
}

// Stats returns the counters.
func (s *Store) Stats() StoreStats {
	le, _ := s.lastErr.Load().(string)
	return StoreStats{Indicators: s.Set().Len(), Loads: s.loads.Load(), Errors: s.errs.Load(), LastError: le}
}

func listFiles(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read intel dir: %w", err)
	}
	var out []string
	for _, e := range ents {
		if e.Type().IsRegular() && !strings.HasPrefix(e.Name(), ".") {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	sort.Strings(out)
	return out, nil
}

func stamp(files []string) string {
	var b strings.Builder
	for _, f := range files {
		if st, err := os.Stat(f); err == nil {
			fmt.Fprintf(&b, "%s:%d:%d;", f, st.Size(), st.ModTime().UnixNano())
		}
	}
	return b.String()
}

// familyFromName takes the family from a file name's first part:
// "cc.txt", "tor-exits.csv", "malware-custom.hashes".
func familyFromName(path string) (Family, bool) {
	base := strings.ToLower(filepath.Base(path))
	base = strings.TrimSuffix(base, filepath.Ext(base))
	if f, ok := ParseFamily(base); ok {
		return f, true
	}
	for _, f := range Families { // longest names first would be ambiguous-safe; check with a separator
		if strings.HasPrefix(base, string(f)+"-") || strings.HasPrefix(base, string(f)+".") || strings.HasPrefix(base, string(f)+"_") {
			if f == Malware && strings.HasPrefix(base, string(CustomMalware)) {
				return CustomMalware, true
			}
			return f, true
		}
	}
	return "", false
}

func loadFile(b *Builder, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	defer f.Close()
	return b.Load(path, f)
}

// Load adds the indicators of one list. The name picks the format by its
// extension (.json: STIX 2.1 bundle; .csv: indicator[,family[,name]];
// anything else: one indicator per line) and, by its first part, the
// default family ("cc.txt", "tor-exits.csv"); errors are reported as
// name:line. Entries that parse are added even when others do not. At
// most 64 MiB are read.
func (b *Builder) Load(name string, r io.Reader) error {
	r = io.LimitReader(r, maxListBytes)
	list := filepath.Base(name)
	def, hasDef := familyFromName(name)
	var err error
	switch strings.ToLower(filepath.Ext(name)) {
	case ".json":
		err = loadSTIX(b, r, list, def, hasDef, name)
	case ".csv":
		err = loadCSV(b, r, list, def, hasDef, name)
	default:
		err = loadPlain(b, r, list, def, hasDef, name)
	}
	return capErrors(err, 20)
}

// capErrors keeps the first n of a joined error's parts: a broken feed
// should not produce a megabyte of log.
func capErrors(err error, n int) error {
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return err
	}
	errs := j.Unwrap()
	if len(errs) <= n {
		return err
	}
	return errors.Join(append(errs[:n:n], fmt.Errorf("... and %d more errors", len(errs)-n))...)
}

// loadPlain reads one indicator per line; '#' starts a comment, and a
// "# family: NAME" line sets the family of the lines after it.
func loadPlain(b *Builder, r io.Reader, list string, fam Family, has bool, path string) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	var errs []error
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if i := strings.Index(line, " #"); i > 0 { // trailing comment
			line = strings.TrimSpace(line[:i])
		}
		if rest, ok := strings.CutPrefix(line, "#"); ok {
			if k, v, ok := strings.Cut(rest, ":"); ok && strings.TrimSpace(strings.ToLower(k)) == "family" {
				f, ok := ParseFamily(v)
				if !ok {
					errs = append(errs, fmt.Errorf("%s:%d: unknown family %q", path, n, clip(strings.TrimSpace(v))))
					continue
				}
				fam, has = f, true
			}
			continue
		}
		if line == "" {
			continue
		}
		if !has {
			errs = append(errs, fmt.Errorf("%s:%d: no family: name the file after one (e.g. cc.txt) or add '# family: cc'", path, n))
			return errors.Join(errs...)
		}
		if !b.Add(line, Match{Family: fam, List: list}) {
			errs = append(errs, fmt.Errorf("%s:%d: %q is not an IP, CIDR, domain or SHA-256", path, n, clip(line)))
		}
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", path, err))
	}
	return errors.Join(errs...)
}

// loadCSV reads indicator[,family[,name]] rows; a header row is skipped.
func loadCSV(b *Builder, r io.Reader, list string, fam Family, has bool, path string) error {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	cr.Comment = '#'
	var errs []error
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			// A malformed row: csv's error carries its line.
			errs = append(errs, fmt.Errorf("%s: %w", path, err))
			break
		}
		if len(rec) == 0 || strings.EqualFold(strings.TrimSpace(rec[0]), "indicator") {
			continue
		}
		line, _ := cr.FieldPos(0)
		f, ok := fam, has
		if len(rec) > 1 && strings.TrimSpace(rec[1]) != "" {
			f, ok = ParseFamily(rec[1])
			if !ok {
				errs = append(errs, fmt.Errorf("%s:%d: unknown family %q", path, line, clip(rec[1])))
				continue
			}
		}
		if !ok {
			errs = append(errs, fmt.Errorf("%s:%d: no family column and none from the file name", path, line))
			continue
		}
		m := Match{Family: f, List: list}
		if len(rec) > 2 {
			m.Name = strings.TrimSpace(rec[2])
		}
		if !b.Add(rec[0], m) {
			errs = append(errs, fmt.Errorf("%s:%d: %q is not an IP, CIDR, domain or SHA-256", path, line, clip(rec[0])))
		}
	}
	return errors.Join(errs...)
}

// stixPattern matches the simple comparison patterns indicator feeds use:
// [ipv4-addr:value = '1.2.3.4'], [domain-name:value = 'x.com'],
// [file:hashes.'SHA-256' = '...'], joined with OR.
// Comparisons inside a pattern joined with AND are each taken on their own,
// which can only widen a match (a hash AND a file name lists the hash).
var stixPattern = regexp.MustCompile(`(ipv4-addr|ipv6-addr|domain-name|file):(value|hashes\.(?:'SHA-256'|'SHA256'|SHA256|"SHA-256"))\s*=\s*'([^']*)'`)

type stixBundle struct {
	Type    string            `json:"type"`
	Objects []json.RawMessage `json:"objects"`
}

type stixIndicator struct {
	Type           string   `json:"type"`
	Name           string   `json:"name"`
	Pattern        string   `json:"pattern"`
	PatternType    string   `json:"pattern_type"`
	IndicatorTypes []string `json:"indicator_types"`
	Labels         []string `json:"labels"`
	Family         string   `json:"x_mamori_family"`
	Revoked        bool     `json:"revoked"`
	ValidFrom      string   `json:"valid_from"`
	ValidUntil     string   `json:"valid_until"`
}

// current reports whether an indicator is in force at now: not revoked,
// and within valid_from..valid_until where given (unparsable times are
// ignored rather than dropping the indicator).
func (ind *stixIndicator) current(now time.Time) bool {
	if ind.Revoked {
		return false
	}
	if t, err := time.Parse(time.RFC3339, ind.ValidFrom); err == nil && now.Before(t) {
		return false
	}
	if t, err := time.Parse(time.RFC3339, ind.ValidUntil); err == nil && !now.Before(t) {
		return false
	}
	return true
}

// loadSTIX reads a STIX 2.1 bundle's indicator objects. The family comes
// from x_mamori_family, else a label or indicator type naming one, else
// the file name. Revoked and expired (or not yet valid) indicators are
// skipped.
func loadSTIX(b *Builder, r io.Reader, list string, fam Family, has bool, path string) error {
	var bundle stixBundle
	if err := json.NewDecoder(r).Decode(&bundle); err != nil {
		return fmt.Errorf("%s: not a STIX bundle: %w", path, err)
	}
	if bundle.Type != "bundle" {
		return fmt.Errorf("%s: type %q, want a STIX 2.1 bundle", path, clip(bundle.Type))
	}
	var errs []error
	now := time.Now()
	for i, raw := range bundle.Objects {
		var ind stixIndicator
		if err := json.Unmarshal(raw, &ind); err != nil {
			errs = append(errs, fmt.Errorf("%s: object %d: %w", path, i, err))
			continue
		}
		if ind.Type != "indicator" || !ind.current(now) {
			continue
		}
		if ind.PatternType != "" && ind.PatternType != "stix" {
			errs = append(errs, fmt.Errorf("%s: object %d: pattern_type %q unsupported", path, i, clip(ind.PatternType)))
			continue
		}
		f, ok := fam, has
		for _, cand := range append(append([]string{ind.Family}, ind.Labels...), ind.IndicatorTypes...) {
			if c, found := ParseFamily(cand); found {
				f, ok = c, true
				break
			}
		}
		if !ok {
			errs = append(errs, fmt.Errorf("%s: object %d (%s): no family", path, i, clip(ind.Name)))
			continue
		}
		ms := stixPattern.FindAllStringSubmatch(ind.Pattern, -1)
		if len(ms) == 0 {
			errs = append(errs, fmt.Errorf("%s: object %d: pattern %q has no supported comparison", path, i, clip(ind.Pattern)))
			continue
		}
		for _, m := range ms {
			if !b.Add(m[3], Match{Family: f, List: list, Name: ind.Name}) {
				errs = append(errs, fmt.Errorf("%s: object %d: %q is not an indicator", path, i, clip(m[3])))
			}
		}
	}
	return errors.Join(errs...)
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

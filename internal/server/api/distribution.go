package api

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Limits of what is distributed, so one huge intel file cannot make every
// agent poll a gigabyte.
const (
	maxDistFile  = 16 << 20
	maxDistTotal = 64 << 20
)

// DistFile is one distributed file.
type DistFile struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	// Content is the file's text, or base64 when Encoding is "base64" (the
	// file is not UTF-8).
	Content  string `json:"content"`
	Encoding string `json:"encoding,omitempty"`
}

// Distribution is the current set of rule or intel files. Version changes
// whenever any file's name or content does; it is also the ETag, so agents
// poll with If-None-Match and get 304 while nothing changed.
type Distribution struct {
	Kind    string     `json:"kind"`
	Version string     `json:"version"`
	Files   []DistFile `json:"files"`
}

func isRuleFile(name string) bool {
	ext := strings.ToLower(filepath.Ext(name))
	return ext == ".yaml" || ext == ".yml"
}

// isIntelFile: the intel loader reads every regular, non-hidden file.
func isIntelFile(string) bool { return true }

// distribution caches one directory's Distribution, rebuilt when a file's
// name, size or modification time changes.
type distribution struct {
	kind string
	dir  string
	keep func(name string) bool

	mu    sync.Mutex
	stamp string
	doc   *Distribution
}

func newDistribution(kind, dir string, keep func(string) bool) *distribution {
	return &distribution{kind: kind, dir: dir, keep: keep}
}

type distEntry struct {
	name string
	size int64
	mod  time.Time
}

func (d *distribution) list() ([]distEntry, error) {
	if d.dir == "" {
		return nil, nil
	}
	ents, err := os.ReadDir(d.dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s directory: %w", d.kind, err)
	}
	var out []distEntry
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") || !d.keep(e.Name()) {
			continue
		}
		info, err := e.Info()
		if err == nil && e.Type()&fs.ModeSymlink != 0 {
			// A link to a regular file counts (a Kubernetes ConfigMap
			// volume is links into its ..data directory).
			info, err = os.Stat(filepath.Join(d.dir, e.Name()))
		}
		if err != nil || !info.Mode().IsRegular() {
			continue // removed meanwhile, or not a file
		}
		out = append(out, distEntry{e.Name(), info.Size(), info.ModTime()})
	}
	return out, nil
}

// current returns the distribution, rebuilding it when files changed.
func (d *distribution) current() (*Distribution, error) {
	ents, err := d.list()
	if err != nil {
		return nil, err
	}
	var stamp strings.Builder
	for _, e := range ents {
		fmt.Fprintf(&stamp, "%s\x00%d\x00%d\x00", e.name, e.size, e.mod.UnixNano())
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.doc != nil && d.stamp == stamp.String() {
		return d.doc, nil
	}
	doc := &Distribution{Kind: d.kind, Files: []DistFile{}}
	var total int64
	all := sha256.New()
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(d.dir, e.name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s file %s: %w", d.kind, e.name, err)
		}
		if len(b) > maxDistFile {
			return nil, fmt.Errorf("%s file %s is %d bytes, over the %d distribution limit", d.kind, e.name, len(b), maxDistFile)
		}
		if total += int64(len(b)); total > maxDistTotal {
			return nil, fmt.Errorf("%s files exceed %d bytes together", d.kind, maxDistTotal)
		}
		sum := sha256.Sum256(b)
		f := DistFile{Name: e.name, Size: int64(len(b)), SHA256: hex.EncodeToString(sum[:])}
		if utf8.Valid(b) {
			f.Content = string(b)
		} else {
			f.Content, f.Encoding = base64.StdEncoding.EncodeToString(b), "base64"
		}
		fmt.Fprintf(all, "%s\x00%s\x00", f.Name, f.SHA256)
		doc.Files = append(doc.Files, f)
	}
	slices.SortFunc(doc.Files, func(a, b DistFile) int { return strings.Compare(a.Name, b.Name) })
	doc.Version = hex.EncodeToString(all.Sum(nil))[:32]
	d.stamp, d.doc = stamp.String(), doc
	return doc, nil
}

func (a *API) distribution(w http.ResponseWriter, r *http.Request) error {
	d, ok := a.dist[r.PathValue("kind")]
	if !ok {
		return errorf(http.StatusNotFound, "no distribution %q (rules or intel)", r.PathValue("kind"))
	}
	doc, err := d.current()
	if err != nil {
		return err
	}
	etag := `"` + doc.Version + `"`
	w.Header().Set("ETag", etag)
	for _, t := range strings.Split(r.Header.Get("If-None-Match"), ",") {
		if t = strings.TrimSpace(t); t == etag || t == "*" {
			w.WriteHeader(http.StatusNotModified)
			return nil
		}
	}
	return writeJSON(w, http.StatusOK, doc)
}

// Package rulesync keeps a remote agent's custom-rule and threat-intel
// directories in step with what its server distributes
// (GET /api/v1/distribution/{rules,intel}), so rules and intel lists are
// managed in one place and reach every node. The agent's own watchers pick
// the files up as they change.
//
// Only files the syncer wrote are ever replaced or removed: it keeps their
// names in a manifest in each directory, and a local file of the same name
// wins over the server's (with a warning).
package rulesync

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/mamori-dev/mamori/internal/server/api"
)

// manifestName is the manifest of server-written files in each directory
// (hidden: the rule and intel loaders skip dot files).
const manifestName = ".mamori-distributed.json"

// maxBody bounds one distribution answer, like the server's own total cap.
const maxBody = 96 << 20

// Config configures a Syncer.
type Config struct {
	BaseURL string       // the server's API URL, https://host:port
	Token   string       // the agent's API token (agent scope)
	Client  *http.Client // pinned HTTPS client; http.DefaultClient when nil
	// Dirs maps a distribution kind ("rules", "intel") to the directory
	// its files go to.
	Dirs     map[string]string
	Interval time.Duration // poll period [30s]
	Logger   *slog.Logger
}

// Syncer polls the server and mirrors each kind into its directory.
type Syncer struct {
	cfg   Config
	etags map[string]string
	log   *slog.Logger
}

// New checks cfg and returns a Syncer.
func New(cfg Config) (*Syncer, error) {
	if cfg.BaseURL == "" || cfg.Token == "" {
		return nil, errors.New("rulesync: server URL and API token are required")
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 60 * time.Second}
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	for kind, dir := range cfg.Dirs {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("rulesync: %s dir: %w", kind, err)
		}
	}
	return &Syncer{cfg: cfg, etags: map[string]string{}, log: cfg.Logger.With("component", "rulesync")}, nil
}

// Run syncs every kind at once and then every Interval until ctx ends.
func (s *Syncer) Run(ctx context.Context) {
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		for _, kind := range s.kinds() {
			if _, err := s.Sync(ctx, kind); err != nil && ctx.Err() == nil {
				s.log.Warn("sync failed; keeping the files already here", "kind", kind, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Syncer) kinds() []string {
	var out []string
	for k := range s.cfg.Dirs {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Sync fetches one kind and mirrors it; it reports whether anything on disk
// changed.
func (s *Syncer) Sync(ctx context.Context, kind string) (bool, error) {
	dir, ok := s.cfg.Dirs[kind]
	if !ok {
		return false, fmt.Errorf("rulesync: no directory for %q", kind)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		strings.TrimSuffix(s.cfg.BaseURL, "/")+api.Prefix+"/distribution/"+kind, nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("Authorization", "Bearer "+s.cfg.Token)
	if et := s.etags[kind]; et != "" {
		req.Header.Set("If-None-Match", et)
	}
	res, err := s.cfg.Client.Do(req)
	if err != nil {
		return false, fmt.Errorf("fetch %s: %w", kind, err)
	}
	defer res.Body.Close()
	switch res.StatusCode {
	case http.StatusNotModified:
		return false, nil
	case http.StatusOK:
	case http.StatusUnauthorized, http.StatusForbidden:
		return false, fmt.Errorf("fetch %s: server refused the agent's API token (%s): was the node removed? re-enroll it", kind, res.Status)
	default:
		return false, fmt.Errorf("fetch %s: %s", kind, res.Status)
	}
	body, err := io.ReadAll(io.LimitReader(res.Body, maxBody+1))
	if err != nil {
		return false, fmt.Errorf("fetch %s: %w", kind, err)
	}
	if len(body) > maxBody {
		return false, fmt.Errorf("fetch %s: answer over %d bytes", kind, maxBody)
	}
	var doc api.Distribution
	if err := json.Unmarshal(body, &doc); err != nil {
		return false, fmt.Errorf("fetch %s: %w", kind, err)
	}
	if doc.Kind != kind {
		return false, fmt.Errorf("fetch %s: server sent kind %q", kind, doc.Kind)
	}
	changed, err := s.apply(dir, doc.Files)
	if err != nil {
		return changed, fmt.Errorf("apply %s: %w", kind, err)
	}
	s.etags[kind] = res.Header.Get("ETag")
	if changed {
		s.log.Info("distribution applied", "kind", kind, "version", doc.Version, "files", len(doc.Files))
	}
	return changed, nil
}

// apply writes files into dir, removes the ones written earlier that the
// server no longer lists, and records what it manages. Every file is
// checked before anything is written, so a bad answer changes nothing.
func (s *Syncer) apply(dir string, files []api.DistFile) (bool, error) {
	type entry struct {
		name string
		data []byte
	}
	var want []entry
	for _, f := range files {
		if !safeName(f.Name) {
			return false, fmt.Errorf("unsafe file name %q", f.Name)
		}
		data := []byte(f.Content)
		if f.Encoding == "base64" {
			var err error
			if data, err = base64.StdEncoding.DecodeString(f.Content); err != nil {
				return false, fmt.Errorf("%s: %w", f.Name, err)
			}
		} else if f.Encoding != "" {
			return false, fmt.Errorf("%s: unknown encoding %q", f.Name, f.Encoding)
		}
		sum := sha256.Sum256(data)
		if hex.EncodeToString(sum[:]) != f.SHA256 || int64(len(data)) != f.Size {
			return false, fmt.Errorf("%s: content does not match its size and sha256", f.Name)
		}
		want = append(want, entry{f.Name, data})
	}
	managed := readManifest(dir)
	var kept []entry
	for _, e := range want {
		path := filepath.Join(dir, e.name)
		if !slices.Contains(managed, e.name) {
			if _, err := os.Lstat(path); err == nil {
				s.log.Warn("a local file has the name of a distributed one; keeping the local file", "path", path)
				continue
			}
		}
		kept = append(kept, e)
	}
	names := make([]string, len(kept))
	for i, e := range kept {
		names[i] = e.name
	}
	slices.Sort(names)
	// The manifest names a file before it is written: a write that fails
	// half-way (or an agent killed) must not leave a distributed file that
	// later syncs take for a local one, never updated nor removed.
	if adds := slices.ContainsFunc(names, func(n string) bool { return !slices.Contains(managed, n) }); adds {
		b, _ := json.Marshal(slices.Concat(managed, names))
		if err := writeAtomic(filepath.Join(dir, manifestName), b); err != nil {
			return false, err
		}
	}
	changed := false
	for _, e := range kept {
		path := filepath.Join(dir, e.name)
		if old, err := os.ReadFile(path); err == nil && string(old) == string(e.data) {
			continue
		}
		if err := writeAtomic(path, e.data); err != nil {
			return changed, err
		}
		changed = true
	}
	for _, name := range managed {
		if !slices.Contains(names, name) && safeName(name) {
			if err := os.Remove(filepath.Join(dir, name)); err == nil {
				changed = true
			} else if !errors.Is(err, os.ErrNotExist) {
				return changed, err
			}
		}
	}
	b, _ := json.Marshal(names)
	return changed, writeAtomic(filepath.Join(dir, manifestName), b)
}

func readManifest(dir string) []string {
	b, err := os.ReadFile(filepath.Join(dir, manifestName))
	if err != nil {
		return nil
	}
	var names []string
	_ = json.Unmarshal(b, &names)
	return names
}

// safeName accepts a plain, visible file name: no directories, no dot files.
func safeName(n string) bool {
	return n != "" && len(n) <= 200 && filepath.Base(n) == n && !strings.HasPrefix(n, ".") &&
		!strings.ContainsAny(n, "/\\\x00")
}

// writeAtomic writes data to path (0600) through a temporary file and a
// rename, so the agent's watchers never read half a file.
func writeAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

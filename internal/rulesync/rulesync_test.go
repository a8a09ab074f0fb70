package rulesync

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mamori-dev/mamori/internal/finding"
	"github.com/mamori-dev/mamori/internal/server/api"
	"github.com/mamori-dev/mamori/internal/server/store"
)

// server is the real API serving distribution from two directories.
func server(t *testing.T) (url, token, rulesDir, intelDir string) {
	t.Helper()
	dir := t.TempDir()
	rulesDir, intelDir = filepath.Join(dir, "rules"), filepath.Join(dir, "intel")
	for _, d := range []string{rulesDir, intelDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	st, err := store.OpenSQLite(context.Background(), filepath.Join(dir, "m.db"), store.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	tf, _, err := api.LocalFor(dir).OpenTokens()
	if err != nil {
		t.Fatal(err)
	}
	token, err = api.AgentTokens{Store: st}.Issue(context.Background(), "node-1")
	if err != nil {
		t.Fatal(err)
	}
	a, err := api.New(api.Options{Store: st, Tokens: api.WithAgentTokens(tf, st), RulesDir: rulesDir, IntelDir: intelDir,
		Agent: finding.Agent{NodeID: "srv"}, Version: "test", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	return srv.URL, token, rulesDir, intelDir
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The agent's directories follow the server's: files arrive, change and go;
// a local file is never touched; an unchanged distribution costs a 304.
func TestSyncMirrorsTheServer(t *testing.T) {
	url, token, srvRules, srvIntel := server(t)
	write(t, filepath.Join(srvRules, "team.yaml"), "rules: []\n")
	write(t, filepath.Join(srvIntel, "domains.txt"), "evil.example\n")
	write(t, filepath.Join(srvIntel, "blob.bin"), "\xff\xfe binary")
	agentDir := t.TempDir()
	rules, intel := filepath.Join(agentDir, "rules"), filepath.Join(agentDir, "intel")
	s, err := New(Config{BaseURL: url, Token: token, Dirs: map[string]string{"rules": rules, "intel": intel}})
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(rules, "local.yaml"), "rules: [] # the node's own\n")
	ctx := context.Background()
	for _, kind := range []string{"rules", "intel"} {
		if changed, err := s.Sync(ctx, kind); err != nil || !changed {
			t.Fatalf("first sync of %s: changed %v, %v", kind, changed, err)
		}
	}
	if read(t, filepath.Join(rules, "team.yaml")) != "rules: []\n" || read(t, filepath.Join(intel, "blob.bin")) != "\xff\xfe binary" {
		t.Fatal("distributed files not mirrored byte for byte")
	}
	if changed, err := s.Sync(ctx, "rules"); err != nil || changed {
		t.Fatalf("unchanged distribution: changed %v, %v", changed, err)
	}
	// Change one, remove one, add one that collides with the local file.
	write(t, filepath.Join(srvRules, "team.yaml"), "rules: [] # v2\n")
	write(t, filepath.Join(srvRules, "local.yaml"), "rules: [] # the server's\n")
	if err := os.Remove(filepath.Join(srvIntel, "domains.txt")); err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"rules", "intel"} {
		if _, err := s.Sync(ctx, kind); err != nil {
			t.Fatal(err)
		}
	}
	if read(t, filepath.Join(rules, "team.yaml")) != "rules: [] # v2\n" {
		t.Fatal("changed file not updated")
	}
	if read(t, filepath.Join(rules, "local.yaml")) != "rules: [] # the node's own\n" {
		t.Fatal("a local file was overwritten by the server's")
	}
	if _, err := os.Stat(filepath.Join(intel, "domains.txt")); !os.IsNotExist(err) {
		t.Fatalf("file removed on the server still here: %v", err)
	}
	// A removed node's token is refused, and what is here stays.
	bad, _ := New(Config{BaseURL: url, Token: "mat1.000000000000.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", Dirs: map[string]string{"rules": rules}})
	if _, err := bad.Sync(ctx, "rules"); err == nil || !strings.Contains(err.Error(), "re-enroll") {
		t.Fatalf("refused token: %v", err)
	}
	if read(t, filepath.Join(rules, "team.yaml")) != "rules: [] # v2\n" {
		t.Fatal("a refused sync changed the files")
	}
}

// A hostile or broken answer changes nothing on disk.
func TestSyncRefusesBadAnswers(t *testing.T) {
	cases := map[string]api.Distribution{
		"path traversal": {Kind: "rules", Files: []api.DistFile{{Name: "../../etc/cron.d/x", Content: "x", Size: 1,
			SHA256: "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"}}},
		"dot file": {Kind: "rules", Files: []api.DistFile{{Name: ".mamori-distributed.json", Content: "[]", Size: 2,
			SHA256: "4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945"}}},
		"hash mismatch": {Kind: "rules", Files: []api.DistFile{{Name: "a.yaml", Content: "rules: []", Size: 9, SHA256: strings.Repeat("0", 64)}}},
		"wrong kind":    {Kind: "intel"},
	}
	for name, doc := range cases {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_ = json.NewEncoder(w).Encode(doc)
			}))
			defer srv.Close()
			dir := t.TempDir()
			s, err := New(Config{BaseURL: srv.URL, Token: "t", Dirs: map[string]string{"rules": dir}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Sync(context.Background(), "rules"); err == nil {
				t.Fatal("bad answer accepted")
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Fatalf("files written: %v", ents)
			}
		})
	}
}

func distFile(name, content string) api.DistFile {
	s := sha256.Sum256([]byte(content))
	return api.DistFile{Name: name, Size: int64(len(content)), SHA256: hex.EncodeToString(s[:]), Content: content}
}

// A sync that fails half-way (a write fails; an agent killed) leaves the
// files it wrote in the manifest: the next sync updates them, and removes
// them once the server no longer lists them. Before, such a file was taken
// for a local one and kept its old rules for ever.
func TestInterruptedSyncLeavesNoOrphans(t *testing.T) {
	dir := t.TempDir()
	s := &Syncer{log: slog.New(slog.DiscardHandler)}
	// b.yaml came from the server before; a directory where it goes now
	// makes its write fail, after a.yaml's.
	if err := os.WriteFile(filepath.Join(dir, manifestName), []byte(`["b.yaml"]`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "b.yaml", "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := s.apply(dir, []api.DistFile{distFile("a.yaml", "v1"), distFile("b.yaml", "b")}); err == nil {
		t.Fatal("the write into a directory did not fail")
	}
	if got := read(t, filepath.Join(dir, "a.yaml")); got != "v1" {
		t.Fatalf("a.yaml %q", got)
	}
	if err := os.RemoveAll(filepath.Join(dir, "b.yaml")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.apply(dir, []api.DistFile{distFile("a.yaml", "v2"), distFile("b.yaml", "b")}); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(dir, "a.yaml")); got != "v2" {
		t.Errorf("a.yaml after the next sync: %q, the server has v2", got)
	}
	if _, err := s.apply(dir, nil); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"a.yaml", "b.yaml"} {
		if _, err := os.Stat(filepath.Join(dir, f)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still there once the server dropped it: %v", f, err)
		}
	}
}

package api

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// Local is the API's corner of a data directory (DATA_DIR/api, mode 0700):
//
//	tokens.json   API tokens, hashed (0600)
//	admin.token   the bootstrap admin token, made at first start (0600)
//	address       the running server's URL, "http://127.0.0.1:PORT" (0600)
//	tls/          CA and certificate when the API serves HTTPS (ca.pem)
//
// The CLI reads address and admin.token to reach a local `mamori run`; only
// root (the owner of the data directory) can.
type Local struct{ Dir string }

// LocalFor returns the API's corner of dataDir.
func LocalFor(dataDir string) Local { return Local{Dir: filepath.Join(dataDir, "api")} }

// TokensPath is the token file.
func (l Local) TokensPath() string { return filepath.Join(l.Dir, "tokens.json") }

// TLSDir keeps the API's CA and certificate when it serves HTTPS.
func (l Local) TLSDir() string { return filepath.Join(l.Dir, "tls") }

// AdminTokenPath is where the bootstrap admin token is kept.
func (l Local) AdminTokenPath() string { return filepath.Join(l.Dir, "admin.token") }
func (l Local) addressPath() string    { return filepath.Join(l.Dir, "address") }

func (l Local) mkdir() error {
	if err := os.MkdirAll(l.Dir, 0o700); err != nil {
		return fmt.Errorf("api dir: %w", err)
	}
	// An existing directory keeps its mode with MkdirAll: tighten it.
	if err := os.Chmod(l.Dir, 0o700); err != nil {
		return fmt.Errorf("api dir: %w", err)
	}
	return nil
}

// OpenTokens opens the token file and makes sure a usable admin token is
// kept in admin.token (EnsureAdmin). It returns the token file and the
// admin token.
func (l Local) OpenTokens() (*TokenFile, string, error) {
	if err := l.mkdir(); err != nil {
		return nil, "", err
	}
	tf, err := OpenTokenFile(l.TokensPath())
	if err != nil {
		return nil, "", err
	}
	tok, err := l.EnsureAdmin(tf)
	if err != nil {
		return nil, "", err
	}
	return tf, tok, nil
}

// EnsureAdmin makes sure admin.token holds an admin token ts accepts: at
// first start it creates one; if the kept one no longer checks (revoked,
// store lost) it creates a new one.
func (l Local) EnsureAdmin(ts TokenStore) (string, error) {
	if err := l.mkdir(); err != nil {
		return "", err
	}
	name := "local admin (made at first start)"
	if b, err := os.ReadFile(l.AdminTokenPath()); err == nil {
		tok := strings.TrimSpace(string(b))
		if rec, err := ts.Check(tok); err == nil && rec.Scope == ScopeAdmin {
			return tok, nil
		}
		name = "local admin (made at a start: the kept one was revoked or unknown)"
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("admin token: %w", err)
	}
	tok, rec, err := ts.Create(NewToken{Name: name, Scope: ScopeAdmin})
	if err != nil {
		return "", err
	}
	if err := writeFileAtomic(l.AdminTokenPath(), []byte(tok+"\n")); err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	// Revoking the kept admin token and restarting is how it is rotated:
	// say so when it happens.
	slog.Info("api: admin token made", "id", rec.ID, "name", name, "path", l.AdminTokenPath())
	return tok, nil
}

// WriteAddress records the running server's URL.
func (l Local) WriteAddress(url string) error {
	if err := l.mkdir(); err != nil {
		return err
	}
	if err := writeFileAtomic(l.addressPath(), []byte(url+"\n")); err != nil {
		return fmt.Errorf("api address: %w", err)
	}
	return nil
}

// RemoveAddress forgets the address at shutdown, so clients do not try a
// server that is gone.
func (l Local) RemoveAddress() {
	_ = os.Remove(l.addressPath())
}

// ErrNoLocalServer means the data directory names no running server.
var ErrNoLocalServer = errors.New("no local mamori server")

// Read returns the recorded address and admin token.
func (l Local) Read() (url, token string, err error) {
	a, err := os.ReadFile(l.addressPath())
	if errors.Is(err, os.ErrNotExist) {
		return "", "", fmt.Errorf("%w: %s does not exist (is `mamori run` running with this --data-dir?)", ErrNoLocalServer, l.addressPath())
	}
	if err != nil {
		return "", "", fmt.Errorf("api address: %w (the data directory is readable by root only)", err)
	}
	t, err := os.ReadFile(l.AdminTokenPath())
	if err != nil {
		return "", "", fmt.Errorf("api token: %w (the data directory is readable by root only)", err)
	}
	return strings.TrimSpace(string(a)), strings.TrimSpace(string(t)), nil
}

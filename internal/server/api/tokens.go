package api

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// Scope is what a token may do. Scopes are ordered: each includes the ones
// below it (admin ⊃ write ⊃ read ⊃ agent).
type Scope string

// Scopes.
const (
	// ScopeAgent: fetch the rules and intel distributed to agents, nothing else.
	ScopeAgent Scope = "agent"
	// ScopeRead: read findings, rules, coverage.
	ScopeRead Scope = "read"
	// ScopeWrite: archive findings, manage suppression rules, make samples.
	ScopeWrite Scope = "write"
	// ScopeAdmin: manage API tokens.
	ScopeAdmin Scope = "admin"
)

var scopeRank = map[Scope]int{ScopeAgent: 1, ScopeRead: 2, ScopeWrite: 3, ScopeAdmin: 4}

// ParseScope checks a scope name.
func ParseScope(s string) (Scope, error) {
	if _, ok := scopeRank[Scope(s)]; !ok {
		return "", fmt.Errorf("unknown scope %q (want agent, read, write or admin)", s)
	}
	return Scope(s), nil
}

// Allows reports whether a token of scope s may act where need is required.
func (s Scope) Allows(need Scope) bool { return scopeRank[s] >= scopeRank[need] && scopeRank[need] > 0 }

// tokenPrefix starts every API token: "mat1.<12 hex id>.<43 char secret>".
const tokenPrefix = "mat1."

// Token is a stored API token. Only the SHA-256 of its secret is kept (the
// secret is 256 random bits, so a fast hash is enough: there is nothing to
// guess); the token itself is shown once, at creation.
type Token struct {
	ID         string    `json:"id"`
	Name       string    `json:"name"`
	Scope      Scope     `json:"scope"`
	SecretHash string    `json:"secretHash,omitempty"`
	CreatedAt  time.Time `json:"createdAt"`
	ExpiresAt  time.Time `json:"expiresAt,omitzero"`
	// Parent is set on a console session: the id of the token the session
	// was opened with. Revoking the parent ends its sessions.
	Parent string `json:"parent,omitempty"`
}

// NewToken says what token to make.
type NewToken struct {
	Name  string
	Scope Scope
	// TTL 0: the token does not expire.
	TTL    time.Duration
	Parent string
}

// Errors of token checks. Callers answer all of them with 401 and do not
// say which.
var (
	ErrNoToken      = errors.New("no API token")
	ErrInvalidToken = errors.New("invalid, unknown or expired API token")
)

// TokenFile keeps API tokens in a JSON file (mode 0600, directory 0700). It
// rereads the file when it changes on disk, so tokens added by another
// process (or another replica sharing the file) take effect without a
// restart.
type TokenFile struct {
	path string
	now  func() time.Time

	mu      sync.Mutex
	tokens  map[string]Token // by id
	modTime time.Time
	size    int64
	checked time.Time
}

type tokenFileDoc struct {
	Tokens []Token `json:"tokens"`
}

// OpenTokenFile loads (or starts) the token file at path.
func OpenTokenFile(path string) (*TokenFile, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("api tokens: %w", err)
	}
	t := &TokenFile{path: path, now: time.Now, tokens: map[string]Token{}}
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.load(); err != nil {
		return nil, err
	}
	return t, nil
}

// load rereads the file; the caller holds mu.
func (t *TokenFile) load() error {
	st, err := os.Stat(t.path)
	if errors.Is(err, os.ErrNotExist) {
		t.tokens, t.modTime, t.size = map[string]Token{}, time.Time{}, 0
		return nil
	}
	if err != nil {
		return fmt.Errorf("api tokens: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		// The file holds only hashes, but its integrity decides who gets in.
		if err := os.Chmod(t.path, 0o600); err != nil {
			return fmt.Errorf("api tokens: %s is readable by others and cannot be fixed: %w", t.path, err)
		}
	}
	b, err := os.ReadFile(t.path)
	if err != nil {
		return fmt.Errorf("api tokens: %w", err)
	}
	var doc tokenFileDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("api tokens: %s: %w", t.path, err)
	}
	m := make(map[string]Token, len(doc.Tokens))
	for _, tok := range doc.Tokens {
		if _, ok := scopeRank[tok.Scope]; !ok || tok.ID == "" || tok.SecretHash == "" {
			return fmt.Errorf("api tokens: %s: bad token entry %q", t.path, tok.ID)
		}
		m[tok.ID] = tok
	}
	t.tokens, t.modTime, t.size = m, st.ModTime(), st.Size()
	return nil
}

// refresh rereads the file when it changed, at most once a second.
func (t *TokenFile) refresh() error {
	now := t.now()
	if now.Sub(t.checked) < time.Second {
		return nil
	}
	t.checked = now
	st, err := os.Stat(t.path)
	switch {
	case errors.Is(err, os.ErrNotExist) && len(t.tokens) == 0:
		return nil
	case err == nil && st.ModTime().Equal(t.modTime) && st.Size() == t.size:
		return nil
	}
	return t.load()
}

// reloadIfChanged rereads the file when another writer changed it since
// this one last read or wrote it; the caller holds mu. Unlike refresh it
// always looks, and unlike load it does not re-parse an unchanged file
// (enrolling a thousand agents would otherwise parse it a thousand times).
func (t *TokenFile) reloadIfChanged() error {
	st, err := os.Stat(t.path)
	if errors.Is(err, os.ErrNotExist) && t.size == 0 && t.modTime.IsZero() {
		return nil
	}
	if err == nil && st.ModTime().Equal(t.modTime) && st.Size() == t.size {
		return nil
	}
	return t.load()
}

// save writes the tokens atomically; the caller holds mu.
func (t *TokenFile) save() error {
	doc := tokenFileDoc{Tokens: make([]Token, 0, len(t.tokens))}
	for _, tok := range t.tokens {
		doc.Tokens = append(doc.Tokens, tok)
	}
	slices.SortFunc(doc.Tokens, func(a, b Token) int { return a.CreatedAt.Compare(b.CreatedAt) })
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return fmt.Errorf("api tokens: %w", err)
	}
	if err := writeFileAtomic(t.path, append(b, '\n')); err != nil {
		return fmt.Errorf("api tokens: %w", err)
	}
	if st, err := os.Stat(t.path); err == nil {
		t.modTime, t.size = st.ModTime(), st.Size()
	}
	return nil
}

// writeFileAtomic writes b to path with mode 0600 through a temporary file
// and a rename, so readers never see half a file.
func writeFileAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

func hashSecret(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// TokenStore keeps API tokens: a TokenFile on one host, KVTokens where
// server replicas share them.
type TokenStore interface {
	// Create makes a token and returns it (the only time it is visible)
	// with its record.
	Create(spec NewToken) (string, Token, error)
	Revoke(id string) error
	// List returns the tokens, oldest first, without their hashes.
	List() ([]Token, error)
	// Get returns the record of the token with this id, without its hash.
	Get(id string) (Token, error)
	// Check verifies a presented token and returns its record.
	Check(tok string) (Token, error)
}

// newToken makes a token and its record.
func newToken(now time.Time, spec NewToken) (string, Token, error) {
	if _, ok := scopeRank[spec.Scope]; !ok {
		return "", Token{}, fmt.Errorf("api tokens: unknown scope %q", spec.Scope)
	}
	if spec.TTL < 0 {
		return "", Token{}, fmt.Errorf("api tokens: negative ttl")
	}
	var id [6]byte
	var secret [32]byte
	_, _ = rand.Read(id[:])
	_, _ = rand.Read(secret[:])
	now = now.UTC().Truncate(time.Second)
	rec := Token{ID: hex.EncodeToString(id[:]), Name: spec.Name, Scope: spec.Scope, CreatedAt: now, Parent: spec.Parent}
	if spec.TTL > 0 {
		rec.ExpiresAt = now.Add(spec.TTL)
	}
	sec := base64.RawURLEncoding.EncodeToString(secret[:])
	rec.SecretHash = hashSecret(sec)
	return tokenPrefix + rec.ID + "." + sec, rec, nil
}

// parseToken splits a presented token into its id and secret.
func parseToken(tok string) (id, secret string, err error) {
	if tok == "" {
		return "", "", ErrNoToken
	}
	rest, ok := strings.CutPrefix(tok, tokenPrefix)
	id, sec, ok2 := strings.Cut(rest, ".")
	if !ok || !ok2 || len(id) != 12 || len(sec) != 43 {
		return "", "", ErrInvalidToken
	}
	return id, sec, nil
}

// verify checks secret against a stored record at now.
func verify(rec Token, found bool, secret string, now time.Time) (Token, error) {
	if !found || subtle.ConstantTimeCompare([]byte(hashSecret(secret)), []byte(rec.SecretHash)) != 1 {
		return Token{}, ErrInvalidToken
	}
	if !rec.ExpiresAt.IsZero() && !now.Before(rec.ExpiresAt) {
		return Token{}, ErrInvalidToken
	}
	return rec, nil
}

// listed sorts tokens oldest first and clears their hashes.
func listed(toks []Token) []Token {
	for i := range toks {
		toks[i].SecretHash = ""
	}
	slices.SortFunc(toks, func(a, b Token) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return toks
}

// Create makes a token and returns it (the only time it is visible) with
// its record.
func (t *TokenFile) Create(spec NewToken) (string, Token, error) {
	tok, rec, err := newToken(t.now(), spec)
	if err != nil {
		return "", Token{}, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.reloadIfChanged(); err != nil { // never overwrite another writer's tokens
		return "", Token{}, err
	}
	t.tokens[rec.ID] = rec
	if err := t.save(); err != nil {
		delete(t.tokens, rec.ID)
		return "", Token{}, err
	}
	return tok, rec, nil
}

// Revoke deletes the token with this id.
func (t *TokenFile) Revoke(id string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.load(); err != nil {
		return err
	}
	if _, ok := t.tokens[id]; !ok {
		return fmt.Errorf("api token %s: %w", id, errNotFound)
	}
	delete(t.tokens, id)
	return t.save()
}

// List returns the tokens, oldest first, without their hashes.
func (t *TokenFile) List() ([]Token, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.refresh(); err != nil {
		return nil, err
	}
	out := make([]Token, 0, len(t.tokens))
	for _, tok := range t.tokens {
		out = append(out, tok)
	}
	return listed(out), nil
}

// Get returns the record of the token with this id, without its hash.
func (t *TokenFile) Get(id string) (Token, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.refresh(); err != nil {
		return Token{}, err
	}
	rec, ok := t.tokens[id]
	if !ok {
		return Token{}, fmt.Errorf("api token %s: %w", id, errNotFound)
	}
	rec.SecretHash = ""
	return rec, nil
}

// Check verifies a presented token and returns its record.
func (t *TokenFile) Check(tok string) (Token, error) {
	id, sec, err := parseToken(tok)
	if err != nil {
		return Token{}, err
	}
	t.mu.Lock()
	err = t.refresh()
	rec, found := t.tokens[id]
	t.mu.Unlock()
	if err != nil {
		return Token{}, err
	}
	return verify(rec, found, sec, t.now())
}

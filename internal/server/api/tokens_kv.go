package api

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mamori-dev/mamori/internal/transport"
)

// APITokenBucket is the JetStream key-value bucket where server replicas on
// an external NATS cluster share API tokens, so a token made through one
// replica works on all of them and a revocation holds everywhere.
const APITokenBucket = "mamori_api_tokens"

// KVTokens keeps API tokens in a transport.Store (a JetStream key-value
// bucket). Every check reads the bucket, so a revocation takes effect at
// once on every replica.
type KVTokens struct {
	st      transport.Store[Token]
	now     func() time.Time
	timeout time.Duration
}

// NewKVTokens returns a TokenStore over st.
func NewKVTokens(st transport.Store[Token]) *KVTokens {
	return &KVTokens{st: st, now: time.Now, timeout: 10 * time.Second}
}

func (k *KVTokens) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), k.timeout)
}

// Create makes a token and stores its record.
func (k *KVTokens) Create(spec NewToken) (string, Token, error) {
	tok, rec, err := newToken(k.now(), spec)
	if err != nil {
		return "", Token{}, err
	}
	ctx, cancel := k.ctx()
	defer cancel()
	if err := k.st.Create(ctx, rec.ID, rec); err != nil {
		return "", Token{}, fmt.Errorf("api tokens: %w", err)
	}
	return tok, rec, nil
}

// Revoke deletes the token with this id.
func (k *KVTokens) Revoke(id string) error {
	ctx, cancel := k.ctx()
	defer cancel()
	if _, _, err := k.st.Get(ctx, id); errors.Is(err, transport.ErrNotFound) {
		return fmt.Errorf("api token %s: %w", id, errNotFound)
	} else if err != nil {
		return fmt.Errorf("api tokens: %w", err)
	}
	if err := k.st.Delete(ctx, id); err != nil {
		return fmt.Errorf("api tokens: %w", err)
	}
	return nil
}

// List returns the tokens, oldest first, without their hashes.
func (k *KVTokens) List() ([]Token, error) {
	ctx, cancel := k.ctx()
	defer cancel()
	toks, err := k.st.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("api tokens: %w", err)
	}
	return listed(toks), nil
}

// Get returns the record of the token with this id, without its hash.
func (k *KVTokens) Get(id string) (Token, error) {
	ctx, cancel := k.ctx()
	defer cancel()
	rec, _, err := k.st.Get(ctx, id)
	if errors.Is(err, transport.ErrNotFound) {
		return Token{}, fmt.Errorf("api token %s: %w", id, errNotFound)
	} else if err != nil {
		return Token{}, fmt.Errorf("api tokens: %w", err)
	}
	rec.SecretHash = ""
	return rec, nil
}

// Check verifies a presented token against the shared bucket.
func (k *KVTokens) Check(tok string) (Token, error) {
	id, sec, err := parseToken(tok)
	if err != nil {
		return Token{}, err
	}
	ctx, cancel := k.ctx()
	defer cancel()
	rec, _, err := k.st.Get(ctx, id)
	found := err == nil
	if err != nil && !errors.Is(err, transport.ErrNotFound) {
		return Token{}, fmt.Errorf("api tokens: %w", err)
	}
	return verify(rec, found, sec, k.now())
}

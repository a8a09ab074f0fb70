package transport

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	mrand "math/rand/v2"
	"strings"
	"sync"
	"time"
)

// redeemAttempts bounds the compare-and-set retries of one redemption.
const redeemAttempts = 12

// ErrInvalidToken is returned for any unusable join token: malformed, unknown,
// wrong secret, expired, revoked or used up. Callers are deliberately not
// told which.
var ErrInvalidToken = errors.New("invalid or expired join token")

// UnlimitedUses lets a join token enroll any number of nodes (e.g. one token
// in a DaemonSet's secret).
const UnlimitedUses = -1

const tokenPrefix = "mjt1."

// TokenOptions describe a new join token.
type TokenOptions struct {
	// TTL until expiry: 24h when 0; negative means the token never expires.
	TTL time.Duration
	// MaxUses is how many enrollments it allows: 1 when 0; UnlimitedUses.
	MaxUses int
	// AllowRebind lets the token re-enroll a node id already bound to another
	// key (a node that lost its data dir). Without it that is a conflict.
	AllowRebind bool
	Description string
}

// TokenRecord is a stored join token. Only the SHA-256 of the secret is
// kept; the token itself is shown once, at creation.
type TokenRecord struct {
	ID          string    `json:"id"`
	SecretHash  string    `json:"secretHash,omitempty"` // always set when stored
	Description string    `json:"description,omitempty"`
	CreatedAt   time.Time `json:"createdAt"`
	ExpiresAt   time.Time `json:"expiresAt,omitzero"`
	MaxUses     int       `json:"maxUses"`
	Uses        int       `json:"uses"`
	AllowRebind bool      `json:"allowRebind,omitempty"`
	Revoked     bool      `json:"revoked,omitempty"`
}

// usable reports why r cannot enroll now, or nil.
func (r *TokenRecord) usable(now time.Time) error {
	switch {
	case r.Revoked:
		return fmt.Errorf("%w (revoked)", ErrInvalidToken)
	case !r.ExpiresAt.IsZero() && !now.Before(r.ExpiresAt):
		return fmt.Errorf("%w (expired)", ErrInvalidToken)
	case r.MaxUses != UnlimitedUses && r.Uses >= r.MaxUses:
		return fmt.Errorf("%w (used up)", ErrInvalidToken)
	}
	return nil
}

// Tokens creates, checks and redeems join tokens held in a Store.
type Tokens struct {
	store Store[TokenRecord]
	now   func() time.Time
	// redeem serialises this replica's redemptions of one token (striped
	// by token): a fleet enrolling at once with one shared token (a
	// DaemonSet rollout) otherwise retries its compare-and-set into the
	// ground. Replicas still race each other; that is what the retries
	// with backoff are for.
	redeem [64]sync.Mutex
}

// NewTokens manages tokens in store (a KVStore for replicated servers).
func NewTokens(store Store[TokenRecord]) *Tokens {
	return &Tokens{store: store, now: time.Now}
}

// Create makes a join token and returns it (the only time the secret is
// visible) with its record.
func (t *Tokens) Create(ctx context.Context, o TokenOptions) (string, TokenRecord, error) {
	var id [6]byte
	var secret [32]byte
	_, _ = rand.Read(id[:])
	_, _ = rand.Read(secret[:])
	now := t.now().UTC()
	rec := TokenRecord{ID: hex.EncodeToString(id[:]), Description: o.Description, CreatedAt: now,
		MaxUses: o.MaxUses, AllowRebind: o.AllowRebind}
	if rec.MaxUses == 0 {
		rec.MaxUses = 1
	}
	if rec.MaxUses < UnlimitedUses {
		return "", TokenRecord{}, fmt.Errorf("join token: bad MaxUses %d", o.MaxUses)
	}
	switch {
	case o.TTL == 0:
		rec.ExpiresAt = now.Add(24 * time.Hour)
	case o.TTL > 0:
		rec.ExpiresAt = now.Add(o.TTL)
	}
	secretStr := base64.RawURLEncoding.EncodeToString(secret[:])
	rec.SecretHash = hashSecret(secretStr)
	if err := t.store.Create(ctx, rec.ID, rec); err != nil {
		return "", TokenRecord{}, fmt.Errorf("join token: %w", err)
	}
	return tokenPrefix + rec.ID + "." + secretStr, rec, nil
}

func hashSecret(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// parseToken splits "mjt1.<id>.<secret>".
func parseToken(tok string) (id, secret string, ok bool) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(tok), tokenPrefix)
	if !ok {
		return "", "", false
	}
	id, secret, ok = strings.Cut(rest, ".")
	if !ok || len(id) != 12 || len(secret) != 43 {
		return "", "", false
	}
	if _, err := hex.DecodeString(id); err != nil {
		return "", "", false
	}
	return id, secret, true
}

// check verifies tok against the store without using it up.
func (t *Tokens) check(ctx context.Context, tok string) (TokenRecord, uint64, error) {
	id, secret, ok := parseToken(tok)
	if !ok {
		return TokenRecord{}, 0, fmt.Errorf("%w (malformed)", ErrInvalidToken)
	}
	rec, rev, err := t.store.Get(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return TokenRecord{}, 0, fmt.Errorf("%w (unknown)", ErrInvalidToken)
	}
	if err != nil {
		return TokenRecord{}, 0, fmt.Errorf("join token: %w", err)
	}
	if subtle.ConstantTimeCompare([]byte(hashSecret(secret)), []byte(rec.SecretHash)) != 1 {
		return TokenRecord{}, 0, fmt.Errorf("%w (wrong secret)", ErrInvalidToken)
	}
	if err := rec.usable(t.now()); err != nil {
		return TokenRecord{}, 0, err
	}
	return rec, rev, nil
}

// Check verifies tok without using it up.
func (t *Tokens) Check(ctx context.Context, tok string) (TokenRecord, error) {
	rec, _, err := t.check(ctx, tok)
	return rec, err
}

// Redeem verifies tok and counts one use, atomically even across replicas.
func (t *Tokens) Redeem(ctx context.Context, tok string) (TokenRecord, error) {
	h := fnv.New32a()
	h.Write([]byte(tok))
	mu := &t.redeem[h.Sum32()%uint32(len(t.redeem))]
	mu.Lock()
	defer mu.Unlock()
	for attempt := range redeemAttempts {
		rec, rev, err := t.check(ctx, tok)
		if err != nil {
			return TokenRecord{}, err
		}
		rec.Uses++
		err = t.store.Update(ctx, rec.ID, rec, rev)
		if err == nil {
			return rec, nil
		}
		if !errors.Is(err, ErrConflict) {
			return TokenRecord{}, fmt.Errorf("join token: %w", err)
		}
		// Another replica counted a use meanwhile: back off a random
		// while, growing, so the replicas stop colliding.
		wait := time.Duration(1+mrand.IntN(5<<min(attempt, 5))) * time.Millisecond
		select {
		case <-ctx.Done():
			return TokenRecord{}, fmt.Errorf("join token: %w", ctx.Err())
		case <-time.After(wait):
		}
	}
	return TokenRecord{}, fmt.Errorf("join token: %w (too much contention)", ErrConflict)
}

// Revoke makes the token with this id unusable.
func (t *Tokens) Revoke(ctx context.Context, id string) error {
	for range 8 {
		rec, rev, err := t.store.Get(ctx, id)
		if err != nil {
			return fmt.Errorf("revoke token %s: %w", id, err)
		}
		rec.Revoked = true
		if err = t.store.Update(ctx, id, rec, rev); err == nil {
			return nil
		}
		if !errors.Is(err, ErrConflict) {
			return fmt.Errorf("revoke token %s: %w", id, err)
		}
	}
	return fmt.Errorf("revoke token %s: %w", id, ErrConflict)
}

// List returns every token record (with secret hashes blanked).
func (t *Tokens) List(ctx context.Context) ([]TokenRecord, error) {
	recs, err := t.store.List(ctx)
	if err != nil {
		return nil, err
	}
	for i := range recs {
		recs[i].SecretHash = ""
	}
	return recs, nil
}

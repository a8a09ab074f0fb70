package api

import (
	"errors"
	"testing"
	"time"

	"github.com/mamori-dev/mamori/internal/transport"
)

// Both token stores behave alike: a token checks until revoked or expired,
// forged and malformed ones never do, and hashes are not listed. (The
// bucket's sharing across replicas is exercised on a real NATS cluster by
// test/cluster.)
func TestTokenStores(t *testing.T) {
	stores := map[string]func(t *testing.T) (TokenStore, *time.Time){
		"file": func(t *testing.T) (TokenStore, *time.Time) {
			tf, err := OpenTokenFile(t.TempDir() + "/tokens.json")
			if err != nil {
				t.Fatal(err)
			}
			now := time.Now()
			tf.now = func() time.Time { return now }
			return tf, &now
		},
		"kv": func(t *testing.T) (TokenStore, *time.Time) {
			kv := NewKVTokens(transport.NewMemStore[Token]())
			now := time.Now()
			kv.now = func() time.Time { return now }
			return kv, &now
		},
	}
	for name, open := range stores {
		t.Run(name, func(t *testing.T) {
			ts, now := open(t)
			tok, rec, err := ts.Create(NewToken{Name: "ci", Scope: ScopeRead, TTL: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			if got, err := ts.Check(tok); err != nil || got.ID != rec.ID || got.Scope != ScopeRead {
				t.Fatalf("check: %+v %v", got, err)
			}
			flipped := tok[:len(tok)-1] + "A"
			if tok[len(tok)-1] == 'A' {
				flipped = tok[:len(tok)-1] + "B"
			}
			for _, bad := range []string{"", "mat1.x", flipped, "mat1.000000000000." + tok[len(tok)-43:]} {
				if _, err := ts.Check(bad); err == nil {
					t.Errorf("accepted %q", bad)
				}
			}
			if _, err := ts.Check(""); !errors.Is(err, ErrNoToken) {
				t.Errorf("empty token: %v", err)
			}
			list, err := ts.List()
			if err != nil || len(list) != 1 || list[0].SecretHash != "" {
				t.Fatalf("list %+v %v", list, err)
			}
			if got, err := ts.Get(rec.ID); err != nil || got.Name != "ci" || got.SecretHash != "" {
				t.Fatalf("get: %+v %v", got, err)
			}
			if _, err := ts.Get("000000000000"); !errors.Is(err, errNotFound) {
				t.Errorf("get of an unknown id: %v", err)
			}
			*now = now.Add(2 * time.Hour)
			if _, err := ts.Check(tok); !errors.Is(err, ErrInvalidToken) {
				t.Errorf("expired token: %v", err)
			}
			if err := ts.Revoke(rec.ID); err != nil {
				t.Fatal(err)
			}
			if err := ts.Revoke(rec.ID); !errors.Is(err, errNotFound) {
				t.Errorf("second revoke: %v", err)
			}
			if _, err := ts.Get(rec.ID); !errors.Is(err, errNotFound) {
				t.Errorf("get of a revoked token: %v", err)
			}
			if _, _, err := ts.Create(NewToken{Name: "x", Scope: Scope("root")}); err == nil {
				t.Error("unknown scope accepted")
			}
		})
	}
}

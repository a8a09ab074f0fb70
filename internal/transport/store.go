package transport

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// Store errors.
var (
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("conflict: changed concurrently or already exists")
)

// Store is a small keyed record store with optimistic concurrency, used for
// join tokens and enrolled nodes. Revisions make read-modify-write safe
// across server replicas.
type Store[T any] interface {
	Get(ctx context.Context, key string) (T, uint64, error) // ErrNotFound
	Create(ctx context.Context, key string, v T) error      // ErrConflict if it exists
	Update(ctx context.Context, key string, v T, rev uint64) error
	Delete(ctx context.Context, key string) error
	List(ctx context.Context) ([]T, error)
}

// Bucket names of the JetStream key-value stores.
const (
	TokenBucket = "mamori_join_tokens"
	NodeBucket  = "mamori_nodes"
)

// KVStore keeps records as JSON in a JetStream key-value bucket, so every
// server replica sees the same tokens and nodes.
type KVStore[T any] struct{ kv jetstream.KeyValue }

// NewKVStore opens (creating if needed) the bucket named bucket.
func NewKVStore[T any](ctx context.Context, js jetstream.JetStream, bucket string, replicas int) (*KVStore[T], error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket, History: 1,
		Replicas: max(replicas, 1), Storage: jetstream.FileStorage})
	if err != nil {
		return nil, fmt.Errorf("kv bucket %s: %w", bucket, err)
	}
	return &KVStore[T]{kv: kv}, nil
}

// Get returns the record under key and its revision.
func (s *KVStore[T]) Get(ctx context.Context, key string) (T, uint64, error) {
	var v T
	e, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return v, 0, ErrNotFound
	}
	if err != nil {
		return v, 0, fmt.Errorf("kv get: %w", err)
	}
	if err := json.Unmarshal(e.Value(), &v); err != nil {
		return v, 0, fmt.Errorf("kv get %s: %w", key, err)
	}
	return v, e.Revision(), nil
}

// Create stores v under key unless the key exists.
func (s *KVStore[T]) Create(ctx context.Context, key string, v T) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if _, err := s.kv.Create(ctx, key, data); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return ErrConflict
		}
		return fmt.Errorf("kv create: %w", err)
	}
	return nil
}

// Update replaces key's record if its revision is still rev.
func (s *KVStore[T]) Update(ctx context.Context, key string, v T, rev uint64) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if _, err := s.kv.Update(ctx, key, data, rev); err != nil {
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return ErrConflict
		}
		return fmt.Errorf("kv update: %w", err)
	}
	return nil
}

// Delete removes key.
func (s *KVStore[T]) Delete(ctx context.Context, key string) error {
	if err := s.kv.Delete(ctx, key); err != nil {
		return fmt.Errorf("kv delete: %w", err)
	}
	return nil
}

// List returns every record.
func (s *KVStore[T]) List(ctx context.Context) ([]T, error) {
	keys, err := s.kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("kv list: %w", err)
	}
	var out []T
	for k := range keys.Keys() {
		v, _, err := s.Get(ctx, k)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// MemStore is an in-memory Store, for tests and single-process setups that
// do not need records to survive a restart.
type MemStore[T any] struct {
	mu   sync.Mutex
	recs map[string]memRec[T]
	rev  uint64
}

type memRec[T any] struct {
	v   T
	rev uint64
}

// NewMemStore returns an empty MemStore.
func NewMemStore[T any]() *MemStore[T] { return &MemStore[T]{recs: map[string]memRec[T]{}} }

// Get returns the record under key and its revision.
func (s *MemStore[T]) Get(_ context.Context, key string) (T, uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.recs[key]
	if !ok {
		var zero T
		return zero, 0, ErrNotFound
	}
	return r.v, r.rev, nil
}

// Create stores v under key unless the key exists.
func (s *MemStore[T]) Create(_ context.Context, key string, v T) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.recs[key]; ok {
		return ErrConflict
	}
	s.rev++
	s.recs[key] = memRec[T]{v, s.rev}
	return nil
}

// Update replaces key's record if its revision is still rev.
func (s *MemStore[T]) Update(_ context.Context, key string, v T, rev uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.recs[key]; !ok || r.rev != rev {
		return ErrConflict
	}
	s.rev++
	s.recs[key] = memRec[T]{v, s.rev}
	return nil
}

// Delete removes key.
func (s *MemStore[T]) Delete(_ context.Context, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.recs, key)
	return nil
}

// List returns every record, in key order.
func (s *MemStore[T]) List(_ context.Context) ([]T, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := make([]string, 0, len(s.recs))
	for k := range s.recs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([]T, 0, len(keys))
	for _, k := range keys {
		out = append(out, s.recs[k].v)
	}
	return out, nil
}

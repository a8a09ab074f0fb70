package ingest

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/mamori-dev/mamori/internal/server/store"
)

// rules caches the ARCHIVE rules (suppression), re-read every interval so
// that changes made through another replica apply.
type rules struct {
	st    store.Store
	every time.Duration
	now   func() time.Time

	mu     sync.Mutex
	loaded time.Time
	active []store.Rule // ARCHIVE rules in rank order
}

func (r *rules) invalidate() {
	r.mu.Lock()
	r.loaded = time.Time{}
	r.mu.Unlock()
}

// suppressor returns the function deciding suppression for a merged
// record: the id of the first ARCHIVE rule it matches, or "".
func (r *rules) suppressor(ctx context.Context) (func(*store.Record) string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := r.now(); r.loaded.IsZero() || now.Sub(r.loaded) >= r.every {
		all, err := r.st.ListRules(ctx)
		switch {
		case err != nil && r.loaded.IsZero():
			return nil, fmt.Errorf("load suppression rules: %w", err)
		case err == nil:
			r.active = r.active[:0:0]
			for _, x := range all {
				if x.Action == store.ActionArchive {
					r.active = append(r.active, x)
				}
			}
			r.loaded = now
		}
		// On a failed refresh the previous rules stay in force.
	}
	active := r.active
	if len(active) == 0 {
		return nil, nil
	}
	return func(rec *store.Record) string {
		doc, err := store.Doc(rec)
		if err != nil {
			return ""
		}
		for _, x := range active {
			if store.MatchAll(x.Criteria, doc) {
				return x.ID
			}
		}
		return ""
	}, nil
}

// clusters remembers each node's cluster (from heartbeats, or the coverage
// row another replica wrote).
type clusters struct {
	st  store.Store
	now func() time.Time

	mu sync.Mutex
	m  map[string]clusterEntry
}

type clusterEntry struct {
	cluster string
	at      time.Time
}

const (
	clusterTTL      = time.Minute
	maxClusterCache = 100000
)

func (c *clusters) learn(node, cluster string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= maxClusterCache {
		clear(c.m) // bounded: forgetting only costs a lookup
	}
	c.m[node] = clusterEntry{cluster: cluster, at: c.now()}
}

func (c *clusters) cluster(ctx context.Context, node string) string {
	c.mu.Lock()
	e, ok := c.m[node]
	c.mu.Unlock()
	if ok && c.now().Sub(e.at) < clusterTTL {
		return e.cluster
	}
	cluster := ""
	if n, err := c.st.GetNode(ctx, node); err == nil {
		cluster = n.Cluster
	}
	c.learn(node, cluster)
	return cluster
}

package coverage

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"
	"sync"
)

// A heartbeat's hook list is most of its size (~70 hooks, ~8 KB of JSON)
// and almost never changes. Agents therefore send it when it changes and
// on every FullEvery-th heartbeat, and otherwise only its digest; the
// server fills it back in from the last list it saw with that digest.

// HooksDigest names a hook list: the first 128 bits of the SHA-256 of its
// JSON, hex-encoded.
func HooksDigest(hooks []Hook) string {
	b, _ := json.Marshal(hooks) // plain structs: cannot fail
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// HookElision is the agent's side: Apply sets h.HooksDigest and drops an
// unchanged list. It is not safe for concurrent use (one heartbeat loop).
type HookElision struct {
	// FullEvery sends the list anyway on every n-th heartbeat, so a server
	// that missed the change (a lost message, a new replica) learns it
	// again [10].
	FullEvery int

	last      string
	lastHooks []Hook // the list last digested, to skip re-hashing an equal one
	since     int
}

// Apply prepares h for sending.
func (e *HookElision) Apply(h *Heartbeat) {
	every := e.FullEvery
	if every <= 0 {
		every = 10
	}
	d := e.last
	if e.last == "" || !slices.Equal(h.Hooks, e.lastHooks) {
		d = HooksDigest(h.Hooks)
		e.lastHooks = slices.Clone(h.Hooks)
	}
	h.HooksDigest = d
	if d == e.last && e.since < every-1 {
		e.since++
		h.Hooks = nil
		return
	}
	e.last, e.since = d, 0
}

// hookCache is the server's side: node → last full hook list, bounded.
type hookCache struct {
	mu sync.Mutex
	m  map[string]hookEntry
}

type hookEntry struct {
	digest string
	hooks  []Hook
}

const hookCacheMax = 200000

func (c *hookCache) put(node, digest string, hooks []Hook) {
	if digest == "" || len(hooks) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= hookCacheMax {
		c.m = map[string]hookEntry{} // a fleet this large re-fills from the store
	}
	c.m[node] = hookEntry{digest, hooks}
}

func (c *hookCache) get(node, digest string) ([]Hook, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[node]
	if !ok || e.digest != digest {
		return nil, false
	}
	return e.hooks, true
}

// restoreHooks fills in the hook list of a heartbeat that carries only its
// digest: from the cache, else from prev (the node's stored heartbeat)
// when its digest matches. When neither knows the digest the stored list
// stands in, possibly stale, until the agent's next full heartbeat; it
// reports whether the list is known to be current.
func (m *Monitor) restoreHooks(h *Heartbeat, prev func() *Heartbeat) bool {
	if len(h.Hooks) > 0 || h.HooksDigest == "" {
		m.hooks.put(h.NodeID, h.HooksDigest, h.Hooks)
		return true
	}
	if hooks, ok := m.hooks.get(h.NodeID, h.HooksDigest); ok {
		h.Hooks = hooks
		return true
	}
	p := prev()
	if p == nil {
		return false
	}
	h.Hooks = p.Hooks
	if p.HooksDigest == h.HooksDigest {
		m.hooks.put(h.NodeID, h.HooksDigest, p.Hooks)
		return true
	}
	return false
}

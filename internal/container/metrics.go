package container

import "sync/atomic"

// The table and the retry cache export plain Stats structs; the agent's
// metrics registry turns them into Prometheus series (names suggested:
// mamori_container_<field>_total), so this package needs no metrics library.

// counters are the table's own; Lookup bumps them with atomics only.
type counters struct {
	lookups, misses, rescans, evictions, tableFull      atomic.Uint64
	resolveErrors, partial, lifecycleDropped, impostors atomic.Uint64
}

// Stats are a Table's counters and sizes.
type Stats struct {
	Cgroups    int // cgroups in the table, live and recently removed
	Containers int
	Pending    int    // containers whose metadata is still being read
	Lookups    uint64 // Lookup calls (and first lookups by a RetryCache)
	Misses     uint64 // lookups answered "not known yet"
	Rescans    uint64
	Evictions  uint64 // cgroups forgotten: removed past their TTL, or to make room
	TableFull  uint64 // cgroups not recorded because the table was full of live containers
	// ResolveErrors counts containers whose runtime metadata stayed
	// unavailable (they keep the identity their cgroup path gives).
	ResolveErrors    uint64
	Partial          uint64 // containers published with path-only identity after SettleTimeout
	LifecycleDropped uint64 // start/stop notifications lost to a full queue
	// Impostors counts cgroups named after a live container elsewhere
	// than its own (see Table.claimsLocked): taken as the host's.
	Impostors uint64
}

// Stats returns the counters.
func (t *Table) Stats() Stats {
	t.mu.RLock()
	s := Stats{Cgroups: len(t.byID), Containers: len(t.ctrs), Pending: len(t.pending)}
	t.mu.RUnlock()
	s.Lookups, s.Misses, s.Rescans = t.st.lookups.Load(), t.st.misses.Load(), t.st.rescans.Load()
	s.Evictions, s.TableFull = t.st.evictions.Load(), t.st.tableFull.Load()
	s.ResolveErrors, s.Partial, s.LifecycleDropped = t.st.resolveErrors.Load(), t.st.partial.Load(), t.st.lifecycleDropped.Load()
	s.Impostors = t.st.impostors.Load()
	return s
}

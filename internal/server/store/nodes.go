package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"time"
)

const nodeCols = `node_id, cluster, hostname, resource_type, status, issue, status_since, first_seen, last_heartbeat, heartbeat, state`

// Statements of the heartbeat path (prepared once on SQLite: hotStatements).
const (
	// nodeColumns are a node row's columns as scanNode reads them, the
	// hook list last; nodeFrom joins the list's row.
	nodeColumns = `SELECT n.node_id, n.cluster, n.hostname, n.resource_type, n.status, n.issue, n.status_since, n.first_seen,
		n.last_heartbeat, n.heartbeat, n.state, h.digest, `
	nodeFrom = ` FROM nodes n LEFT JOIN node_hooks h ON h.node_id = n.node_id`
	// nodeSelect reads a node with its hook list.
	nodeSelect = nodeColumns + `h.hooks` + nodeFrom
	sqlNodeGet = nodeSelect + ` WHERE n.node_id = $1`
	// Updates read rows without the hook list (Node.LoadHooks).
	nodeSelectForUpdate = nodeColumns + `NULL` + nodeFrom
	sqlNodeGetForUpdate = nodeSelectForUpdate + ` WHERE n.node_id = $1`
	// nodeSelectStates reads rows without their heartbeat document or hook
	// list (ListNodeStates).
	nodeSelectStates = `SELECT n.node_id, n.cluster, n.hostname, n.resource_type, n.status, n.issue, n.status_since,
		n.first_seen, n.last_heartbeat, '', n.state, NULL, NULL FROM nodes n`
	sqlNodeHooksGet = `SELECT hooks FROM node_hooks WHERE node_id = $1 AND digest = $2`
	sqlNodeHooks    = `INSERT INTO node_hooks (node_id, digest, hooks) VALUES ($1, $2, $3)
		ON CONFLICT (node_id) DO UPDATE SET digest = excluded.digest, hooks = excluded.hooks`
	// nodeUpsert ends both node writes: one row, or many from arrays.
	nodeUpsert = ` ON CONFLICT (node_id) DO UPDATE SET cluster = excluded.cluster, hostname = excluded.hostname,
		resource_type = excluded.resource_type, status = excluded.status, issue = excluded.issue,
		status_since = excluded.status_since, first_seen = excluded.first_seen, last_heartbeat = excluded.last_heartbeat,
		heartbeat = excluded.heartbeat, state = excluded.state`
	sqlNodeWrite = `INSERT INTO nodes (` + nodeCols + `) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)` + nodeUpsert
	sqlNodeEvent = `INSERT INTO coverage_events (node_id, cluster, at, from_status, to_status, issue, previous_issue)
		VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING seq`
)

func scanNode(sc scanner) (*Node, error) {
	var (
		n              Node
		hb, st         string
		since, fs, lhb int64
		digest, hooks  sql.NullString
	)
	if err := sc.Scan(&n.NodeID, &n.Cluster, &n.Hostname, &n.ResourceType, &n.Status, &n.Issue, &since, &fs, &lhb, &hb, &st,
		&digest, &hooks); err != nil {
		return nil, err
	}
	n.HooksDigest = digest.String
	if hooks.String != "" {
		n.Hooks = []byte(hooks.String)
	}
	n.StatusSince, n.FirstSeen, n.LastHeartbeat = fromMicros(since), fromMicros(fs), fromMicros(lhb)
	if hb != "" {
		n.Heartbeat = []byte(hb)
	}
	if st != "" {
		n.State = []byte(st)
	}
	return &n, nil
}

// nodeLockKey is the PostgreSQL advisory lock of one node id; it also
// covers a node that has no row yet.
func nodeLockKey(id string) int64 {
	h := fnv.New64a()
	h.Write([]byte("node:" + id))
	return int64(h.Sum64())
}

func (s *sqlStore) UpdateNode(ctx context.Context, nodeID string,
	fn func(old *Node) (*Node, *CoverageEvent, error)) (*Node, *CoverageEvent, error) {
	res, err := s.UpdateNodes(ctx, []NodeUpdate{{NodeID: nodeID, Fn: fn}})
	if err != nil {
		return nil, nil, err
	}
	return res[0].Node, res[0].Event, res[0].Err
}

// UpdateNodes applies updates in order in one transaction: heartbeats of a
// thousand nodes cost one commit, not a thousand. Updates of one node see
// each other's result. An update whose Fn fails is skipped (its Err is
// set); a store error fails them all.
func (s *sqlStore) UpdateNodes(ctx context.Context, updates []NodeUpdate) (res []NodeResult, err error) {
	defer s.observe("node_update", time.Now(), &err)
	for _, u := range updates {
		if u.NodeID == "" {
			return nil, fmt.Errorf("%w: empty node id", ErrInvalid)
		}
	}
	err = s.tx(ctx, func(tx *sql.Tx) error {
		res = make([]NodeResult, len(updates))
		// stored: rows as read (nil: no row yet); current: as this
		// transaction leaves them. Each changed node is written once, at
		// the end, however many of its heartbeats the batch holds.
		stored, current := map[string]*Node{}, map[string]*Node{}
		if s.engine == EnginePostgres {
			if err := s.lockAndReadNodes(ctx, tx, updates, stored); err != nil {
				return err
			}
			maps.Copy(current, stored)
		}
		var dirty []string // in first-change order
		changed := map[string]bool{}
		removed := map[string]time.Time{} // removal times read (zero: never removed)
		for i, u := range updates {
			old, ok := current[u.NodeID]
			if !ok {
				row, err := s.txQueryRow(ctx, tx, sqlNodeGetForUpdate, u.NodeID)
				if err != nil {
					return fmt.Errorf("read node: %w", err)
				}
				old, err = scanNode(row)
				if errors.Is(err, sql.ErrNoRows) {
					old = nil
				} else if err != nil {
					return fmt.Errorf("read node: %w", err)
				}
				if old != nil {
					old.hooksFrom = s.hooksIn(tx, old.NodeID, old.HooksDigest)
				}
				stored[u.NodeID], current[u.NodeID] = old, old
			}
			if old == nil && !u.MadeAt.IsZero() {
				at, ok := removed[u.NodeID]
				if !ok {
					if at, err = s.removedAt(ctx, tx, u.NodeID); err != nil {
						return err
					}
					removed[u.NodeID] = at
				}
				if u.MadeAt.Before(at) {
					continue // made before its node was removed: leaves no row
				}
			}
			next, event, err := u.Fn(old)
			if err != nil {
				res[i].Err = err
				continue
			}
			if next != nil {
				next.NodeID = u.NodeID
				// A node without a new hook list keeps the one it has.
				if old != nil && next.HooksDigest == "" {
					next.HooksDigest, next.Hooks, next.hooksFrom = old.HooksDigest, old.Hooks, old.hooksFrom
				}
				if !changed[u.NodeID] {
					changed[u.NodeID] = true
					dirty = append(dirty, u.NodeID)
				}
				current[u.NodeID] = next
			}
			if event != nil {
				event.NodeID = u.NodeID
				if event.At.IsZero() {
					event.At = s.now()
				}
				row, err := s.txQueryRow(ctx, tx, sqlNodeEvent, u.NodeID, cleanText(event.Cluster), micros(event.At),
					event.From, event.To, cleanText(event.Issue), cleanText(event.Previous))
				if err == nil {
					err = row.Scan(&event.Seq)
				}
				if err != nil {
					return fmt.Errorf("log coverage event: %w", err)
				}
			}
			res[i].Node, res[i].Event = next, event
		}
		if s.engine == EnginePostgres {
			return s.writeNodesBatch(ctx, tx, dirty, current, stored)
		}
		for _, id := range dirty {
			if err := s.writeNode(ctx, tx, current[id], stored[id]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// The transaction is over: a list still unread comes from the pool.
	for _, r := range res {
		if n := r.Node; n != nil && n.hooksFrom != nil {
			n.hooksFrom = s.hooksIn(nil, n.NodeID, n.HooksDigest)
		}
	}
	return res, nil
}

// hooksIn reads a node's hook list named digest through tx, or the read
// pool when tx is nil.
func (s *sqlStore) hooksIn(tx *sql.Tx, nodeID, digest string) func(context.Context) ([]byte, error) {
	if digest == "" {
		return nil
	}
	return func(ctx context.Context) ([]byte, error) {
		var hooks string
		var err error
		if tx != nil {
			var row *sql.Row
			if row, err = s.txQueryRow(ctx, tx, sqlNodeHooksGet, nodeID, digest); err == nil {
				err = row.Scan(&hooks)
			}
		} else {
			err = s.r.QueryRowContext(ctx, s.q(sqlNodeHooksGet), nodeID, digest).Scan(&hooks)
		}
		if errors.Is(err, sql.ErrNoRows) {
			// Replaced since the row was read (only possible once the
			// transaction is over): the caller goes without this list.
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		return []byte(hooks), nil
	}
}

// lockAndReadNodes takes every updated node's lock, in one order so that
// two replicas' batches cannot deadlock, and reads their rows into stored
// (nil for a node without a row): two round trips for the whole batch.
func (s *sqlStore) lockAndReadNodes(ctx context.Context, tx *sql.Tx, updates []NodeUpdate, stored map[string]*Node) error {
	var ids []string
	var keys []int64
	for _, u := range updates {
		if _, ok := stored[u.NodeID]; !ok {
			stored[u.NodeID] = nil
			ids = append(ids, u.NodeID)
			keys = append(keys, nodeLockKey(u.NodeID))
		}
	}
	slices.Sort(keys)
	// unnest yields the array in order, so the locks are taken in key order.
	if _, err := tx.ExecContext(ctx, `SELECT count(pg_advisory_xact_lock(k)) FROM unnest($1::bigint[]) AS k`, keys); err != nil {
		return fmt.Errorf("lock nodes: %w", err)
	}
	rows, err := tx.QueryContext(ctx, nodeSelectForUpdate+` WHERE n.node_id = ANY($1)`, ids)
	if err != nil {
		return fmt.Errorf("read nodes: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		n, err := scanNode(rows)
		if err != nil {
			return fmt.Errorf("read nodes: %w", err)
		}
		n.hooksFrom = s.hooksIn(tx, n.NodeID, n.HooksDigest)
		stored[n.NodeID] = n
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read nodes: %w", err)
	}
	return nil
}

// writeNode writes n's row, and its hook list when that differs from
// old's (a node without a new list keeps the stored one).
func (s *sqlStore) writeNode(ctx context.Context, tx *sql.Tx, n, old *Node) error {
	_, err := s.txExec(ctx, tx, sqlNodeWrite,
		n.NodeID, cleanText(n.Cluster), cleanText(n.Hostname), n.ResourceType, n.Status, cleanText(n.Issue),
		micros(n.StatusSince), micros(n.FirstSeen), micros(n.LastHeartbeat),
		cleanText(string(n.Heartbeat)), cleanText(string(n.State)))
	if err != nil {
		return fmt.Errorf("write node: %w", err)
	}
	return s.writeHooks(ctx, tx, n, old)
}

// writeHooks writes n's hook list when it differs from old's (a node
// without a new list keeps the stored one).
func (s *sqlStore) writeHooks(ctx context.Context, tx *sql.Tx, n, old *Node) error {
	if n.HooksDigest == "" || len(n.Hooks) == 0 || (old != nil && old.HooksDigest == n.HooksDigest) {
		return nil
	}
	if _, err := s.txExec(ctx, tx, sqlNodeHooks, n.NodeID, cleanText(n.HooksDigest), cleanText(string(n.Hooks))); err != nil {
		return fmt.Errorf("write node hooks: %w", err)
	}
	return nil
}

// sqlNodeWriteBatch upserts many node rows from parallel arrays.
const sqlNodeWriteBatch = `INSERT INTO nodes (` + nodeCols + `)
	SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
		$7::bigint[], $8::bigint[], $9::bigint[], $10::text[], $11::text[])` + nodeUpsert

// writeNodesBatch writes the changed rows of a batch in one statement on
// PostgreSQL, where each statement is a round trip: a heartbeat batch
// costs three round trips, not two plus one per node. Hook lists change
// rarely and are written one by one.
func (s *sqlStore) writeNodesBatch(ctx context.Context, tx *sql.Tx, ids []string, current, stored map[string]*Node) error {
	if len(ids) == 0 {
		return nil
	}
	var cols [8][]string
	var times [3][]int64
	for _, id := range ids {
		n := current[id]
		for i, v := range []string{n.NodeID, cleanText(n.Cluster), cleanText(n.Hostname), n.ResourceType, n.Status,
			cleanText(n.Issue), cleanText(string(n.Heartbeat)), cleanText(string(n.State))} {
			cols[i] = append(cols[i], v)
		}
		for i, t := range []time.Time{n.StatusSince, n.FirstSeen, n.LastHeartbeat} {
			times[i] = append(times[i], micros(t))
		}
	}
	if _, err := tx.ExecContext(ctx, sqlNodeWriteBatch, cols[0], cols[1], cols[2], cols[3], cols[4], cols[5],
		times[0], times[1], times[2], cols[6], cols[7]); err != nil {
		return fmt.Errorf("write nodes: %w", err)
	}
	for _, id := range ids {
		if err := s.writeHooks(ctx, tx, current[id], stored[id]); err != nil {
			return err
		}
	}
	return nil
}

func (s *sqlStore) GetNode(ctx context.Context, nodeID string) (n *Node, err error) {
	defer s.observe("node_get", time.Now(), &err)
	n, err = scanNode(s.r.QueryRowContext(ctx, s.q(sqlNodeGet), nodeID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("node %s: %w", nodeID, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get node %s: %w", nodeID, err)
	}
	return n, nil
}

func (s *sqlStore) ListNodes(ctx context.Context) (out []Node, err error) {
	defer s.observe("node_list", time.Now(), &err)
	return s.listNodes(ctx, nodeSelect)
}

func (s *sqlStore) ListNodeStates(ctx context.Context) (out []Node, err error) {
	defer s.observe("node_list_states", time.Now(), &err)
	return s.listNodes(ctx, nodeSelectStates)
}

// listNodes reads every node with query (one of the node selects).
func (s *sqlStore) listNodes(ctx context.Context, query string) ([]Node, error) {
	rows, err := s.r.QueryContext(ctx, query+` ORDER BY n.cluster, n.node_id`)
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	defer rows.Close()
	out := []Node{}
	for rows.Next() {
		n, err := scanNode(rows)
		if err != nil {
			return nil, fmt.Errorf("list nodes: %w", err)
		}
		out = append(out, *n)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	return out, nil
}

// DeleteNode deletes a node's row and records its removal, so that an
// update made before it (a heartbeat still queued, on any replica, or
// after a restart) does not bring the row back: see NodeUpdate.MadeAt.
// The removal is recorded even when the node has no row (ErrNotFound).
func (s *sqlStore) DeleteNode(ctx context.Context, nodeID string) (err error) {
	defer s.observe("node_delete", time.Now(), &err)
	if nodeID == "" {
		return fmt.Errorf("%w: empty node id", ErrInvalid)
	}
	var gone int64
	err = s.tx(ctx, func(tx *sql.Tx) error {
		if s.engine == EnginePostgres {
			// The lock UpdateNodes takes: a batch reading the row now
			// finishes first, or reads the removal.
			if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, nodeLockKey(nodeID)); err != nil {
				return fmt.Errorf("lock node: %w", err)
			}
		}
		if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO removed_nodes (node_id, removed_at) VALUES ($1, $2)
			ON CONFLICT (node_id) DO UPDATE SET removed_at = excluded.removed_at`), nodeID, micros(s.now())); err != nil {
			return fmt.Errorf("record node removal: %w", err)
		}
		r, err := tx.ExecContext(ctx, s.q(`DELETE FROM nodes WHERE node_id = $1`), nodeID)
		if err != nil {
			return fmt.Errorf("delete node: %w", err)
		}
		gone, _ = r.RowsAffected()
		return nil
	})
	if err == nil && gone == 0 {
		err = fmt.Errorf("node %s: %w", nodeID, ErrNotFound)
	}
	return err
}

// removedAt is when a node was last removed (zero: never, or purged).
func (s *sqlStore) removedAt(ctx context.Context, tx *sql.Tx, nodeID string) (time.Time, error) {
	var at int64
	err := tx.QueryRowContext(ctx, s.q(`SELECT removed_at FROM removed_nodes WHERE node_id = $1`), nodeID).Scan(&at)
	if errors.Is(err, sql.ErrNoRows) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("read node removal: %w", err)
	}
	return fromMicros(at), nil
}

func (s *sqlStore) CoverageEvents(ctx context.Context, after int64, limit int) (out []CoverageEvent, err error) {
	defer s.observe("coverage_events", time.Now(), &err)
	if limit <= 0 || limit > 10000 {
		limit = 1000
	}
	rows, err := s.r.QueryContext(ctx, s.q(`SELECT seq, node_id, cluster, at, from_status, to_status, issue, previous_issue
		FROM coverage_events WHERE seq > $1 ORDER BY seq LIMIT $2`), after, limit)
	if err != nil {
		return nil, fmt.Errorf("coverage events: %w", err)
	}
	defer rows.Close()
	out = []CoverageEvent{}
	for rows.Next() {
		var e CoverageEvent
		var at int64
		if err := rows.Scan(&e.Seq, &e.NodeID, &e.Cluster, &at, &e.From, &e.To, &e.Issue, &e.Previous); err != nil {
			return nil, fmt.Errorf("coverage events: %w", err)
		}
		e.At = fromMicros(at)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("coverage events: %w", err)
	}
	return out, nil
}

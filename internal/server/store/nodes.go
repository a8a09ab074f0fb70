package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"time"
)

const nodeCols = `node_id, cluster, hostname, resource_type, status, issue, status_since, first_seen, last_heartbeat, heartbeat, state`

func scanNode(sc scanner) (*Node, error) {
	var (
		n              Node
		hb, st         string
		since, fs, lhb int64
	)
	if err := sc.Scan(&n.NodeID, &n.Cluster, &n.Hostname, &n.ResourceType, &n.Status, &n.Issue, &since, &fs, &lhb, &hb, &st); err != nil {
		return nil, err
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
	fn func(old *Node) (*Node, *CoverageEvent, error)) (n *Node, ev *CoverageEvent, err error) {
	defer s.observe("node_update", time.Now(), &err)
	if nodeID == "" {
		return nil, nil, fmt.Errorf("%w: empty node id", ErrInvalid)
	}
	err = s.tx(ctx, func(tx *sql.Tx) error {
		n, ev = nil, nil
		if s.engine == EnginePostgres {
			if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, nodeLockKey(nodeID)); err != nil {
				return fmt.Errorf("lock node: %w", err)
			}
		}
		old, err := scanNode(tx.QueryRowContext(ctx, s.q(`SELECT `+nodeCols+` FROM nodes WHERE node_id = $1`), nodeID))
		if errors.Is(err, sql.ErrNoRows) {
			old = nil
		} else if err != nil {
			return fmt.Errorf("read node: %w", err)
		}
		next, event, err := fn(old)
		if err != nil {
			return err
		}
		if next != nil {
			next.NodeID = nodeID
			_, err := tx.ExecContext(ctx, s.q(`INSERT INTO nodes (`+nodeCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
				ON CONFLICT (node_id) DO UPDATE SET cluster = excluded.cluster, hostname = excluded.hostname,
				resource_type = excluded.resource_type, status = excluded.status, issue = excluded.issue,
				status_since = excluded.status_since, first_seen = excluded.first_seen, last_heartbeat = excluded.last_heartbeat,
				heartbeat = excluded.heartbeat, state = excluded.state`),
				nodeID, cleanText(next.Cluster), cleanText(next.Hostname), next.ResourceType, next.Status, cleanText(next.Issue),
				micros(next.StatusSince), micros(next.FirstSeen), micros(next.LastHeartbeat),
				cleanText(string(next.Heartbeat)), cleanText(string(next.State)))
			if err != nil {
				return fmt.Errorf("write node: %w", err)
			}
		}
		if event != nil {
			event.NodeID = nodeID
			if event.At.IsZero() {
				event.At = s.now()
			}
			err := tx.QueryRowContext(ctx, s.q(`INSERT INTO coverage_events (node_id, cluster, at, from_status, to_status, issue, previous_issue)
				VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING seq`), nodeID, cleanText(event.Cluster), micros(event.At),
				event.From, event.To, cleanText(event.Issue), cleanText(event.Previous)).Scan(&event.Seq)
			if err != nil {
				return fmt.Errorf("log coverage event: %w", err)
			}
		}
		n, ev = next, event
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return n, ev, nil
}

func (s *sqlStore) GetNode(ctx context.Context, nodeID string) (n *Node, err error) {
	defer s.observe("node_get", time.Now(), &err)
	n, err = scanNode(s.r.QueryRowContext(ctx, s.q(`SELECT `+nodeCols+` FROM nodes WHERE node_id = $1`), nodeID))
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
	rows, err := s.r.QueryContext(ctx, `SELECT `+nodeCols+` FROM nodes ORDER BY cluster, node_id`)
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	defer rows.Close()
	out = []Node{}
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

func (s *sqlStore) DeleteNode(ctx context.Context, nodeID string) (err error) {
	defer s.observe("node_delete", time.Now(), &err)
	return s.tx(ctx, func(tx *sql.Tx) error {
		r, err := tx.ExecContext(ctx, s.q(`DELETE FROM nodes WHERE node_id = $1`), nodeID)
		if err != nil {
			return fmt.Errorf("delete node: %w", err)
		}
		if n, _ := r.RowsAffected(); n == 0 {
			return fmt.Errorf("node %s: %w", nodeID, ErrNotFound)
		}
		return nil
	})
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

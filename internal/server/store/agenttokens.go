package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// AgentToken is the API token of one enrolled node (agent scope: it fetches
// the rules and intel distributed to agents). Only the SHA-256 of its
// secret is kept. A node has at most one: enrolling again replaces it.
type AgentToken struct {
	NodeID     string
	TokenID    string
	SecretHash string
	CreatedAt  time.Time
}

func (s *sqlStore) PutAgentToken(ctx context.Context, t AgentToken) (err error) {
	defer s.observe("agent_token_put", time.Now(), &err)
	if t.NodeID == "" || t.TokenID == "" || t.SecretHash == "" {
		return fmt.Errorf("%w: agent token needs a node, an id and a hash", ErrInvalid)
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, s.q(`INSERT INTO agent_tokens (node_id, token_id, secret_hash, created_at) VALUES ($1, $2, $3, $4)
			ON CONFLICT (node_id) DO UPDATE SET token_id = excluded.token_id, secret_hash = excluded.secret_hash, created_at = excluded.created_at`),
			cleanText(t.NodeID), t.TokenID, t.SecretHash, micros(t.CreatedAt))
		if err != nil {
			return fmt.Errorf("put agent token of %s: %w", t.NodeID, err)
		}
		return nil
	})
}

func (s *sqlStore) AgentToken(ctx context.Context, tokenID string) (_ *AgentToken, err error) {
	defer s.observe("agent_token_get", time.Now(), &err)
	var t AgentToken
	var created int64
	err = s.r.QueryRowContext(ctx, s.q(`SELECT node_id, token_id, secret_hash, created_at FROM agent_tokens WHERE token_id = $1`), tokenID).
		Scan(&t.NodeID, &t.TokenID, &t.SecretHash, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("agent token %s: %w", tokenID, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("agent token %s: %w", tokenID, err)
	}
	t.CreatedAt = fromMicros(created)
	return &t, nil
}

func (s *sqlStore) DeleteAgentToken(ctx context.Context, nodeID, tokenID string) (err error) {
	defer s.observe("agent_token_delete", time.Now(), &err)
	col, key := "node_id", nodeID
	if nodeID == "" {
		col, key = "token_id", tokenID
	}
	if key == "" {
		return fmt.Errorf("%w: no node or token id", ErrInvalid)
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		r, err := tx.ExecContext(ctx, s.q(`DELETE FROM agent_tokens WHERE `+col+` = $1`), key)
		if err != nil {
			return fmt.Errorf("delete agent token: %w", err)
		}
		if n, _ := r.RowsAffected(); n == 0 {
			return fmt.Errorf("agent token of %q: %w", key, ErrNotFound)
		}
		return nil
	})
}

func (s *sqlStore) ListAgentTokens(ctx context.Context) (out []AgentToken, err error) {
	defer s.observe("agent_token_list", time.Now(), &err)
	rows, err := s.r.QueryContext(ctx, `SELECT node_id, token_id, secret_hash, created_at FROM agent_tokens ORDER BY node_id`)
	if err != nil {
		return nil, fmt.Errorf("list agent tokens: %w", err)
	}
	defer rows.Close()
	out = []AgentToken{}
	for rows.Next() {
		var t AgentToken
		var created int64
		if err := rows.Scan(&t.NodeID, &t.TokenID, &t.SecretHash, &created); err != nil {
			return nil, fmt.Errorf("list agent tokens: %w", err)
		}
		t.CreatedAt = fromMicros(created)
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list agent tokens: %w", err)
	}
	return out, nil
}

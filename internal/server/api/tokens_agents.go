package api

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mamori-dev/mamori/internal/server/store"
)

// Enrolled agents' API tokens live in the server's store, one row per node,
// apart from people's tokens: a fleet enrolling ten thousand nodes must not
// rewrite a token file ten thousand times (it did, and enrolling grew with
// the square of the fleet).

// AgentTokenStore keeps one agent token per node (store.Store does).
type AgentTokenStore interface {
	PutAgentToken(ctx context.Context, t store.AgentToken) error
	AgentToken(ctx context.Context, tokenID string) (*store.AgentToken, error)
	DeleteAgentToken(ctx context.Context, nodeID, tokenID string) error
	ListAgentTokens(ctx context.Context) ([]store.AgentToken, error)
}

// tokenTimeout bounds a token operation's store round trip.
const tokenTimeout = 10 * time.Second

// AgentTokens issues each enrolled agent an agent-scope API token (it
// fetches the distributed rules and intel with it, nothing else) and
// revokes it with the node: the server's transport.AgentTokens.
type AgentTokens struct {
	Store AgentTokenStore
	// Legacy, when set, is the TokenStore earlier builds issued agent
	// tokens into; a node's tokens there are revoked when it enrolls again
	// or is removed.
	Legacy TokenStore
}

// Issue makes the node's token, replacing (so revoking) any it had.
func (a AgentTokens) Issue(ctx context.Context, nodeID string) (string, error) {
	if err := a.revokeLegacy(nodeID); err != nil {
		return "", err
	}
	tok, rec, err := newToken(time.Now(), NewToken{Name: AgentTokenName(nodeID), Scope: ScopeAgent})
	if err != nil {
		return "", err
	}
	err = a.Store.PutAgentToken(ctx, store.AgentToken{NodeID: nodeID, TokenID: rec.ID, SecretHash: rec.SecretHash, CreatedAt: rec.CreatedAt})
	if err != nil {
		return "", fmt.Errorf("agent token: %w", err)
	}
	return tok, nil
}

// Revoke revokes the node's token.
func (a AgentTokens) Revoke(ctx context.Context, nodeID string) error {
	if err := a.revokeLegacy(nodeID); err != nil {
		return err
	}
	if err := a.Store.DeleteAgentToken(ctx, nodeID, ""); err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("agent token: %w", err)
	}
	return nil
}

func (a AgentTokens) revokeLegacy(nodeID string) error {
	if a.Legacy == nil {
		return nil
	}
	toks, err := a.Legacy.List()
	if err != nil {
		return err
	}
	for _, t := range toks {
		if t.Name == AgentTokenName(nodeID) && t.Scope == ScopeAgent {
			if err := a.Legacy.Revoke(t.ID); err != nil && !errors.Is(err, errNotFound) {
				return err
			}
		}
	}
	return nil
}

// WithAgentTokens returns a TokenStore answering for people's tokens and
// enrolled agents' together: a check tries both, a list shows both, a
// revocation finds the token in either. New tokens go to people.
func WithAgentTokens(people TokenStore, agents AgentTokenStore) TokenStore {
	return &unionTokens{people: people, agents: agents, now: time.Now}
}

type unionTokens struct {
	people TokenStore
	agents AgentTokenStore
	now    func() time.Time
}

func (u *unionTokens) Create(spec NewToken) (string, Token, error) {
	return u.people.Create(spec)
}

func (u *unionTokens) Revoke(id string) error {
	err := u.people.Revoke(id)
	if !errors.Is(err, errNotFound) {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), tokenTimeout)
	defer cancel()
	if err := u.agents.DeleteAgentToken(ctx, "", id); errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("api token %s: %w", id, errNotFound)
	} else if err != nil {
		return fmt.Errorf("api tokens: %w", err)
	}
	return nil
}

func (u *unionTokens) List() ([]Token, error) {
	toks, err := u.people.List()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), tokenTimeout)
	defer cancel()
	agents, err := u.agents.ListAgentTokens(ctx)
	if err != nil {
		return nil, fmt.Errorf("api tokens: %w", err)
	}
	for _, a := range agents {
		toks = append(toks, agentToken(a))
	}
	return listed(toks), nil
}

func (u *unionTokens) Get(id string) (Token, error) {
	rec, err := u.people.Get(id)
	if !errors.Is(err, errNotFound) {
		return rec, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), tokenTimeout)
	defer cancel()
	a, err := u.agents.AgentToken(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return Token{}, fmt.Errorf("api token %s: %w", id, errNotFound)
	} else if err != nil {
		return Token{}, fmt.Errorf("api tokens: %w", err)
	}
	rec = agentToken(*a)
	rec.SecretHash = ""
	return rec, nil
}

func (u *unionTokens) Check(tok string) (Token, error) {
	rec, err := u.people.Check(tok)
	if !errors.Is(err, ErrInvalidToken) {
		return rec, err
	}
	id, sec, err := parseToken(tok)
	if err != nil {
		return Token{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), tokenTimeout)
	defer cancel()
	a, err := u.agents.AgentToken(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return Token{}, ErrInvalidToken
	}
	if err != nil {
		return Token{}, fmt.Errorf("api tokens: %w", err)
	}
	return verify(agentToken(*a), true, sec, u.now())
}

func agentToken(a store.AgentToken) Token {
	return Token{ID: a.TokenID, Name: AgentTokenName(a.NodeID), Scope: ScopeAgent, SecretHash: a.SecretHash, CreatedAt: a.CreatedAt}
}

package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/mamori-dev/mamori/internal/server/store"
	"github.com/mamori-dev/mamori/internal/transport"
)

// AgentAdmin manages enrolled agents and their join tokens: the server's
// side of the agent transport (transport.Enroller and transport.Tokens).
type AgentAdmin interface {
	Nodes(ctx context.Context) ([]transport.NodeRecord, error)
	// RemoveNode forgets a node and revokes its credential at once.
	RemoveNode(ctx context.Context, nodeID string) error
	CreateJoinToken(ctx context.Context, o transport.TokenOptions) (string, transport.TokenRecord, error)
	JoinTokens(ctx context.Context) ([]transport.TokenRecord, error)
	RevokeJoinToken(ctx context.Context, id string) error
	// NATSURLs are what agents dial now.
	NATSURLs() []string
}

// AgentTransport is where agents reach the server's NATS now.
type AgentTransport struct {
	NATSURLs []string `json:"natsUrls"`
}

// agentTransport answers an agent whose enrolled NATS address does not
// answer: the server may have moved since (or the operator changed
// --nats-agent-url).
func (a *API) agentTransport(w http.ResponseWriter, r *http.Request) error {
	if a.opt.Agents == nil {
		return errorf(http.StatusNotImplemented, "this server has no agent transport")
	}
	return writeJSON(w, http.StatusOK, AgentTransport{NATSURLs: a.opt.Agents.NATSURLs()})
}

func (a *API) listJoinTokens(w http.ResponseWriter, r *http.Request) error {
	if a.opt.Agents == nil {
		return errorf(http.StatusNotImplemented, "this server has no agent transport")
	}
	toks, err := a.opt.Agents.JoinTokens(r.Context())
	if err != nil {
		return err
	}
	slices.SortFunc(toks, func(x, y transport.TokenRecord) int { return x.CreatedAt.Compare(y.CreatedAt) })
	return writeJSON(w, http.StatusOK, map[string]any{"joinTokens": toks})
}

func (a *API) revokeJoinToken(w http.ResponseWriter, r *http.Request) error {
	if a.opt.Agents == nil {
		return errorf(http.StatusNotImplemented, "this server has no agent transport")
	}
	id := r.PathValue("id")
	err := a.opt.Agents.RevokeJoinToken(r.Context(), id)
	if errors.Is(err, transport.ErrNotFound) {
		return errorf(http.StatusNotFound, "no join token %q", id)
	}
	if err != nil {
		return err
	}
	a.opt.Logger.Info("api: join token revoked", "id", id)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// JoinTokenRequest creates a join token for enrolling agents.
type JoinTokenRequest struct {
	Description string `json:"description,omitempty"`
	// TTL is a Go duration ("24h", the default); "0" never expires.
	TTL string `json:"ttl,omitempty"`
	// MaxUses is how many agents may enroll with it: 1 by default, -1 unlimited.
	MaxUses int `json:"maxUses,omitempty"`
	// AllowRebind lets it re-enroll a node id bound to another key (a node
	// that lost its data dir); the old key is revoked.
	AllowRebind bool `json:"allowRebind,omitempty"`
}

// JoinTokenResponse carries a new join token: the only time it is shown.
type JoinTokenResponse struct {
	Token string `json:"token"`
	transport.TokenRecord
}

func (a *API) listAgents(w http.ResponseWriter, r *http.Request) error {
	if a.opt.Agents == nil {
		return errorf(http.StatusNotImplemented, "this server has no agent transport")
	}
	nodes, err := a.opt.Agents.Nodes(r.Context())
	if err != nil {
		return err
	}
	if nodes == nil {
		nodes = []transport.NodeRecord{}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"agents": nodes})
}

func (a *API) removeAgent(w http.ResponseWriter, r *http.Request) error {
	if a.opt.Agents == nil {
		return errorf(http.StatusNotImplemented, "this server has no agent transport")
	}
	id := r.PathValue("nodeId")
	if !transport.ValidNodeID(id) {
		return errorf(http.StatusBadRequest, "invalid node id")
	}
	enrolled := a.opt.Agents.RemoveNode(r.Context(), id)
	if enrolled != nil && !errors.Is(enrolled, transport.ErrNotFound) {
		return enrolled
	}
	// Its coverage goes too: a decommissioned node would read "not
	// reporting" for ever. A node removed before coverage went with it
	// (or whose coverage came back from a late heartbeat) is cleared too.
	// The store records the removal, so that heartbeats made before it
	// and still queued do not bring the row back, on any replica.
	covered := a.opt.Store.DeleteNode(r.Context(), id)
	if covered != nil && !errors.Is(covered, store.ErrNotFound) {
		return fmt.Errorf("agent %s removed, but not its coverage: %w", id, covered)
	}
	if enrolled != nil && covered != nil {
		return errorf(http.StatusNotFound, "no enrolled agent or coverage node %q", id)
	}
	a.opt.Logger.Info("api: agent removed and its credential revoked", "node", id)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *API) createJoinToken(w http.ResponseWriter, r *http.Request) error {
	if err := refuseSession(r, "join tokens"); err != nil {
		return err
	}
	if a.opt.Agents == nil {
		return errorf(http.StatusNotImplemented, "this server has no agent transport")
	}
	var req JoinTokenRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	if len(req.Description) > 200 {
		return errorf(http.StatusBadRequest, "description over 200 characters")
	}
	o := transport.TokenOptions{Description: req.Description, AllowRebind: req.AllowRebind}
	switch req.TTL {
	case "":
	case "0":
		o.TTL = -1
	default:
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 {
			return errorf(http.StatusBadRequest, "ttl must be a positive duration like 24h, or 0 for none")
		}
		o.TTL = d
	}
	switch {
	case req.MaxUses == -1:
		o.MaxUses = transport.UnlimitedUses
	case req.MaxUses < -1 || req.MaxUses > 1_000_000:
		return errorf(http.StatusBadRequest, "maxUses must be 1-1000000, or -1 for unlimited")
	default:
		o.MaxUses = req.MaxUses
	}
	tok, rec, err := a.opt.Agents.CreateJoinToken(r.Context(), o)
	if err != nil {
		return err
	}
	rec.SecretHash = "" // the token itself is in the answer; its hash is nobody's business
	return writeJSON(w, http.StatusCreated, JoinTokenResponse{Token: tok, TokenRecord: rec})
}

// AgentTokenName names the API token issued to an enrolled node.
func AgentTokenName(nodeID string) string { return "agent:" + nodeID }

// isAgentToken reports whether t is a token issued at enrollment.
func isAgentToken(t Token) bool {
	return t.Scope == ScopeAgent && strings.HasPrefix(t.Name, "agent:")
}

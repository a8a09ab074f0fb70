package transport

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// EnrollPath is where the server package is expected to mount Enroller.
const EnrollPath = "/api/v1/agents/enroll"

// maxEnrollBody bounds enrollment requests and responses.
const maxEnrollBody = 64 << 10

// EnrollRequest is what an agent POSTs (JSON) to enroll.
type EnrollRequest struct {
	Token     string `json:"token"`
	NodeID    string `json:"nodeId"`
	PublicKey string `json:"publicKey"` // the agent's user nkey (U...), made on the node
	Hostname  string `json:"hostname,omitempty"`
	// Cluster is the cluster the agent says it belongs to (its --cluster),
	// so coverage can list the node before its first heartbeat.
	Cluster string `json:"cluster,omitempty"`
}

// EnrollResponse is the server's answer to a successful enrollment.
type EnrollResponse struct {
	NodeID   string   `json:"nodeId"`
	JWT      string   `json:"jwt"`
	CAPEM    string   `json:"caPem"`
	NATSURLs []string `json:"natsUrls"`
	// APIToken is an agent-scope API token for fetching the rules and
	// intel the server distributes (empty when the server issues none).
	APIToken string `json:"apiToken,omitempty"`
}

// NodeRecord binds an enrolled node id to the key it enrolled with.
type NodeRecord struct {
	NodeID     string    `json:"nodeId"`
	PublicKey  string    `json:"publicKey"`
	TokenID    string    `json:"tokenId"`
	Hostname   string    `json:"hostname,omitempty"`
	EnrolledAt time.Time `json:"enrolledAt"`
}

// EnrollerConfig configures the server side of enrollment.
type EnrollerConfig struct {
	Auth     *Auth
	Tokens   *Tokens
	Nodes    Store[NodeRecord]
	NATSURLs []string      // what agents should dial, e.g. tls://mamori.example:4222
	CAPEM    []byte        // the CA agents pin for the NATS connection
	CredTTL  time.Duration // agent JWT lifetime; 0 means no expiry
	// Revoke, when set, is called with a node's old key when the node is
	// re-bound to a new key or removed (Embedded.RevokeUser, or Auth.Revoke
	// for an external cluster), so a stolen copy of the old credential dies.
	Revoke func(userPub string) error
	// Enrolled, when set, is told of every successful enrollment (coverage
	// lists the node as not reporting until its first heartbeat). An error
	// is logged; the enrollment stands.
	Enrolled func(ctx context.Context, nodeID, cluster string, at time.Time) error
	// AgentTokens, when set, issues each enrolled agent its API token and
	// revokes it with the node (SetAgentTokens may set it later).
	AgentTokens AgentTokens
	Metrics     *Metrics
	Logger      *slog.Logger
}

// AgentTokens issues and revokes the API token of an enrolled node.
type AgentTokens interface {
	Issue(ctx context.Context, nodeID string) (string, error)
	Revoke(ctx context.Context, nodeID string) error
}

// Enroller turns a join token and an agent's public key into a user JWT that
// may publish only on that node's subjects. It is an http.Handler: mount it
// at EnrollPath (over HTTPS in production: the token travels in the body).
type Enroller struct {
	mu  sync.Mutex // guards cfg.AgentTokens
	cfg EnrollerConfig
	m   *Metrics
	log *slog.Logger
}

// ErrNodeConflict means the node id is already enrolled with another key and
// the token does not allow rebinding it.
var ErrNodeConflict = errors.New("node id already enrolled with another key")

// errBadEnroll marks malformed enrollment requests.
var errBadEnroll = errors.New("bad enrollment request")

// NewEnroller checks cfg and returns an Enroller.
func NewEnroller(cfg EnrollerConfig) (*Enroller, error) {
	if cfg.Auth == nil || cfg.Tokens == nil || cfg.Nodes == nil {
		return nil, errors.New("enroller: Auth, Tokens and Nodes are required")
	}
	if len(cfg.NATSURLs) == 0 {
		return nil, errors.New("enroller: no NATS URL to hand out")
	}
	if _, err := ClientTLSConfig(cfg.CAPEM); err != nil {
		return nil, fmt.Errorf("enroller: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Enroller{cfg: cfg, m: orNewMetrics(cfg.Metrics), log: cfg.Logger}, nil
}

// Enroll validates req, redeems its token, binds the node id to the key
// and signs the agent's JWT.
func (e *Enroller) Enroll(ctx context.Context, req EnrollRequest) (*EnrollResponse, error) {
	if !ValidNodeID(req.NodeID) {
		return nil, fmt.Errorf("%w: node id must be 1-64 of [A-Za-z0-9_-]", errBadEnroll)
	}
	if !nkeys.IsValidPublicUserKey(req.PublicKey) {
		return nil, fmt.Errorf("%w: publicKey is not a user nkey", errBadEnroll)
	}
	if len(req.Hostname) > 253 {
		return nil, fmt.Errorf("%w: hostname too long", errBadEnroll)
	}
	if !validCluster(req.Cluster) {
		return nil, fmt.Errorf("%w: cluster must be at most 128 of [A-Za-z0-9._:/-]", errBadEnroll)
	}
	tok, err := e.cfg.Tokens.Check(ctx, req.Token)
	if err != nil {
		return nil, err
	}
	existing, rev, err := e.cfg.Nodes.Get(ctx, req.NodeID)
	switch {
	case errors.Is(err, ErrNotFound):
		rev = 0
	case err != nil:
		return nil, fmt.Errorf("enroll: %w", err)
	case existing.PublicKey != req.PublicKey && !tok.AllowRebind:
		return nil, fmt.Errorf("%w: %s", ErrNodeConflict, req.NodeID)
	}
	if tok, err = e.cfg.Tokens.Redeem(ctx, req.Token); err != nil {
		return nil, err
	}
	rec := NodeRecord{NodeID: req.NodeID, PublicKey: req.PublicKey, TokenID: tok.ID,
		Hostname: req.Hostname, EnrolledAt: time.Now().UTC()}
	if rev == 0 {
		err = e.cfg.Nodes.Create(ctx, req.NodeID, rec)
	} else {
		err = e.cfg.Nodes.Update(ctx, req.NodeID, rec, rev)
	}
	if errors.Is(err, ErrConflict) {
		return nil, fmt.Errorf("%w: %s (concurrent enrollment)", ErrNodeConflict, req.NodeID)
	}
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	if rev != 0 && existing.PublicKey != req.PublicKey && e.cfg.Revoke != nil {
		if err := e.cfg.Revoke(existing.PublicKey); err != nil {
			return nil, fmt.Errorf("enroll: revoke the node's previous key: %w", err)
		}
	}
	userJWT, err := e.cfg.Auth.IssueAgentJWT(req.NodeID, req.PublicKey, e.cfg.CredTTL)
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	var apiToken string
	if at := e.agentTokens(); at != nil {
		if apiToken, err = at.Issue(ctx, req.NodeID); err != nil {
			return nil, fmt.Errorf("enroll: api token: %w", err)
		}
	}
	e.log.Info("agent enrolled", "node", req.NodeID, "token", tok.ID, "hostname", fmt.Sprintf("%q", req.Hostname), "cluster", req.Cluster)
	if e.cfg.Enrolled != nil {
		if err := e.cfg.Enrolled(ctx, req.NodeID, req.Cluster, rec.EnrolledAt); err != nil {
			e.log.Warn("enrollment: coverage not told", "node", req.NodeID, "err", err)
		}
	}
	return &EnrollResponse{NodeID: req.NodeID, JWT: userJWT, CAPEM: string(e.cfg.CAPEM), NATSURLs: e.cfg.NATSURLs, APIToken: apiToken}, nil
}

// CreateJoinToken makes a join token agents enroll with here.
func (e *Enroller) CreateJoinToken(ctx context.Context, o TokenOptions) (string, TokenRecord, error) {
	return e.cfg.Tokens.Create(ctx, o)
}

// JoinTokens lists the join tokens (without their hashes), revoked and
// spent ones included.
func (e *Enroller) JoinTokens(ctx context.Context) ([]TokenRecord, error) {
	return e.cfg.Tokens.List(ctx)
}

// RevokeJoinToken makes a join token unusable; nodes enrolled with it stay.
func (e *Enroller) RevokeJoinToken(ctx context.Context, id string) error {
	return e.cfg.Tokens.Revoke(ctx, id)
}

// SetAgentTokens sets EnrollerConfig.AgentTokens after construction (the
// token store may need the transport the Enroller is part of).
func (e *Enroller) SetAgentTokens(at AgentTokens) {
	e.mu.Lock()
	e.cfg.AgentTokens = at
	e.mu.Unlock()
}

func (e *Enroller) agentTokens() AgentTokens {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.cfg.AgentTokens
}

// NATSURLs are what agents dial now.
func (e *Enroller) NATSURLs() []string { return slices.Clone(e.cfg.NATSURLs) }

// Nodes lists the enrolled nodes.
func (e *Enroller) Nodes(ctx context.Context) ([]NodeRecord, error) { return e.cfg.Nodes.List(ctx) }

// RemoveNode forgets an enrolled node and revokes its key (when a Revoke
// hook is configured). The node must enroll again, with a new token.
func (e *Enroller) RemoveNode(ctx context.Context, nodeID string) error {
	rec, _, err := e.cfg.Nodes.Get(ctx, nodeID)
	if err != nil {
		return fmt.Errorf("remove node %s: %w", nodeID, err)
	}
	if e.cfg.Revoke != nil {
		if err := e.cfg.Revoke(rec.PublicKey); err != nil {
			return fmt.Errorf("remove node %s: %w", nodeID, err)
		}
	}
	if err := e.cfg.Nodes.Delete(ctx, nodeID); err != nil {
		return fmt.Errorf("remove node %s: %w", nodeID, err)
	}
	if at := e.agentTokens(); at != nil {
		if err := at.Revoke(ctx, nodeID); err != nil {
			return fmt.Errorf("remove node %s: api token: %w", nodeID, err)
		}
	}
	e.log.Info("agent removed", "node", nodeID)
	return nil
}

// ServeHTTP handles POST with a JSON EnrollRequest.
func (e *Enroller) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		e.fail(w, http.StatusMethodNotAllowed, "bad_request", "POST only")
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		e.fail(w, http.StatusUnsupportedMediaType, "bad_request", "Content-Type must be application/json")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxEnrollBody))
	if err != nil {
		e.fail(w, http.StatusRequestEntityTooLarge, "bad_request", "request too large or unreadable")
		return
	}
	var req EnrollRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || dec.More() {
		e.fail(w, http.StatusBadRequest, "bad_request", "request is not a valid JSON enrollment object")
		return
	}
	resp, err := e.Enroll(r.Context(), req)
	switch {
	case err == nil:
		e.m.Enrollments.WithLabelValues("ok").Inc()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(resp)
	case errors.Is(err, errBadEnroll):
		e.fail(w, http.StatusBadRequest, "bad_request", err.Error())
	case errors.Is(err, ErrInvalidToken):
		e.log.Warn("enrollment refused", "node", fmt.Sprintf("%q", req.NodeID), "err", err)
		e.fail(w, http.StatusUnauthorized, "bad_token", ErrInvalidToken.Error())
	case errors.Is(err, ErrNodeConflict):
		e.fail(w, http.StatusConflict, "conflict", err.Error())
	default:
		e.log.Error("enrollment failed", "err", err)
		e.fail(w, http.StatusInternalServerError, "error", "internal error")
	}
}

func (e *Enroller) fail(w http.ResponseWriter, code int, result, msg string) {
	e.m.Enrollments.WithLabelValues(result).Inc()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// EnrollOptions are the agent side of enrollment.
type EnrollOptions struct {
	URL    string // full enroll URL, e.g. https://mamori:8443/api/v1/agents/enroll
	Token  string
	NodeID string
	// Cluster is passed to the server (EnrollRequest.Cluster).
	Cluster string
	// CAFingerprint, when set, must equal CAFingerprint of the CA the server
	// hands out (hex SHA-256): it pins the bus CA even over an enrollment
	// channel the agent cannot fully verify.
	CAFingerprint string
	HTTPClient    *http.Client // http.DefaultClient with a 30s timeout when nil
}

// Enroll makes the node's key pair, enrolls it with the server and returns
// the credentials (save them with SaveCredentials). The private seed never
// leaves this process.
func Enroll(ctx context.Context, o EnrollOptions) (*Credentials, error) {
	if !ValidNodeID(o.NodeID) {
		return nil, fmt.Errorf("enroll: invalid node id %q (use NodeIDFor)", o.NodeID)
	}
	kp, err := nkeys.CreateUser()
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	pub, _ := kp.PublicKey()
	seed, _ := kp.Seed()
	host, _ := os.Hostname()
	body, _ := json.Marshal(EnrollRequest{Token: o.Token, NodeID: o.NodeID, PublicKey: pub, Hostname: host, Cluster: o.Cluster})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.URL, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	client := o.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: 30 * time.Second}
	}
	res, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, maxEnrollBody+1))
	if err != nil {
		return nil, fmt.Errorf("enroll: read response: %w", err)
	}
	if res.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(data, &e)
		if res.StatusCode == http.StatusConflict {
			return nil, fmt.Errorf("enroll: server said %s: %q: the server still has node %s enrolled with another key — "+
				"remove it there first (mamori agents remove %s), or enroll with a join token made with "+
				"mamori agents join-token --rebind", res.Status, e.Error, o.NodeID, o.NodeID)
		}
		return nil, fmt.Errorf("enroll: server said %s: %q", res.Status, e.Error)
	}
	if len(data) > maxEnrollBody {
		return nil, errors.New("enroll: response too large")
	}
	var resp EnrollResponse
	if err := json.Unmarshal(data, &resp); err != nil {
		return nil, fmt.Errorf("enroll: bad response: %w", err)
	}
	uc, err := jwt.DecodeUserClaims(resp.JWT)
	if err != nil || uc.Subject != pub {
		return nil, errors.New("enroll: server returned a JWT for another key")
	}
	if o.CAFingerprint != "" {
		fp, err := CAFingerprint([]byte(resp.CAPEM))
		if err != nil || !strings.EqualFold(fp, o.CAFingerprint) {
			return nil, errors.New("enroll: CA fingerprint does not match the pinned one")
		}
	}
	c := &Credentials{NodeID: resp.NodeID, JWT: resp.JWT, Seed: string(seed), CAPEM: []byte(resp.CAPEM), NATSURLs: resp.NATSURLs,
		APIToken: resp.APIToken}
	if c.NodeID != o.NodeID {
		return nil, fmt.Errorf("enroll: server enrolled %q, asked for %q", c.NodeID, o.NodeID)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	return c, nil
}

// validCluster accepts empty or a short name of letters, digits and ._:/-
// (Kubernetes and ECS cluster names and ARNs fit).
func validCluster(c string) bool {
	if len(c) > 128 {
		return false
	}
	for _, r := range c {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', strings.ContainsRune("._:/-", r):
		default:
			return false
		}
	}
	return true
}

package api

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/mamori-dev/mamori/internal/server/coverage"
	"github.com/mamori-dev/mamori/internal/server/store"
	"github.com/mamori-dev/mamori/internal/transport"
)

// Client calls the API; the CLI uses it.
type Client struct {
	base  string
	token string
	http  *http.Client
}

// NewClient returns a client of the API at base ("http://127.0.0.1:PORT").
func NewClient(base, token string) (*Client, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("server URL %q: want http(s)://host:port", base)
	}
	return &Client{base: strings.TrimRight(base, "/"), token: token, http: &http.Client{Timeout: 60 * time.Second}}, nil
}

// UseHTTPClient makes the client send its requests with h (for example a
// transport.PinnedHTTPClient trusting a CA by its fingerprint).
func (c *Client) UseHTTPClient(h *http.Client) { c.http = h }

// TrustCA makes the client trust only the CA in caPEM (a server's own
// self-signed API certificate, DATA_DIR/api/tls/ca.pem).
func (c *Client) TrustCA(caPEM []byte) error {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return errors.New("api client: no CA certificate in PEM")
	}
	c.http.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	return nil
}

// StatusError is an API error answer.
type StatusError struct {
	Status  int
	Message string
}

func (e *StatusError) Error() string {
	switch e.Status {
	case http.StatusUnauthorized:
		return "unauthorized (401): " + e.Message + " — check --token or the data directory's admin.token"
	case http.StatusForbidden:
		return "forbidden (403): " + e.Message
	}
	return fmt.Sprintf("server answered %d: %s", e.Status, e.Message)
}

// do sends a request and decodes a JSON answer into out (when not nil).
func (c *Client) do(ctx context.Context, method, path string, query url.Values, body, out any) error {
	u := c.base + Prefix + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return fmt.Errorf("request: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		var e Error
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(b))
		}
		return &StatusError{Status: resp.StatusCode, Message: e.Error}
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if raw, ok := out.(*json.RawMessage); ok {
		*raw = append((*raw)[:0], b...)
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
	}
	return nil
}

// Health checks the server is up.
func (c *Client) Health(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, "/health", nil, nil, nil)
}

// ListFindings returns one page of findings; query takes the parameters of
// GET /findings.
func (c *Client) ListFindings(ctx context.Context, query url.Values) (*store.Page, error) {
	var p store.Page
	if err := c.do(ctx, http.MethodGet, "/findings", query, nil, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// GetFinding returns one finding.
func (c *Client) GetFinding(ctx context.Context, id string) (*store.Record, error) {
	var r store.Record
	if err := c.do(ctx, http.MethodGet, "/findings/"+url.PathEscape(id), nil, nil, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// SetArchived archives or unarchives findings by id.
func (c *Client) SetArchived(ctx context.Context, ids []string, archived bool) (int, error) {
	path := "/findings/unarchive"
	if archived {
		path = "/findings/archive"
	}
	var out ArchiveResponse
	err := c.do(ctx, http.MethodPost, path, nil, ArchiveRequest{IDs: ids}, &out)
	return out.Changed, err
}

// ArchiveMatching archives every finding matching criteria.
func (c *Client) ArchiveMatching(ctx context.Context, criteria []store.Criterion) (int, error) {
	var out ArchiveResponse
	err := c.do(ctx, http.MethodPost, "/findings/archive", nil, ArchiveRequest{Criteria: criteria}, &out)
	return out.Changed, err
}

// Samples stores sample findings.
func (c *Client) Samples(ctx context.Context, types []string) (*SamplesResponse, error) {
	var out SamplesResponse
	if err := c.do(ctx, http.MethodPost, "/sample-findings", nil, SamplesRequest{Types: types}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListRules returns suppression rules and saved filters.
func (c *Client) ListRules(ctx context.Context) ([]store.Rule, error) {
	var out struct {
		Rules []store.Rule `json:"rules"`
	}
	err := c.do(ctx, http.MethodGet, "/suppression-rules", nil, nil, &out)
	return out.Rules, err
}

// CreateRule creates a rule; applyExisting also archives matching stored
// findings (ARCHIVE rules).
func (c *Client) CreateRule(ctx context.Context, req RuleRequest, applyExisting bool) (*RuleResponse, error) {
	var q url.Values
	if applyExisting {
		q = url.Values{"applyExisting": {"true"}}
	}
	var out RuleResponse
	if err := c.do(ctx, http.MethodPost, "/suppression-rules", q, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteRule deletes a rule.
func (c *Client) DeleteRule(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/suppression-rules/"+url.PathEscape(id), nil, nil, nil)
}

// Coverage lists nodes; query takes cluster, status, resourceType.
func (c *Client) Coverage(ctx context.Context, query url.Values) ([]coverage.NodeStatus, error) {
	var out struct {
		Nodes []coverage.NodeStatus `json:"nodes"`
	}
	err := c.do(ctx, http.MethodGet, "/coverage", query, nil, &out)
	return out.Nodes, err
}

// CoverageStatistics counts nodes by status.
func (c *Client) CoverageStatistics(ctx context.Context) (*CoverageStatistics, error) {
	var out CoverageStatistics
	if err := c.do(ctx, http.MethodGet, "/coverage/statistics", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Raw performs a GET and returns the answer's JSON as is.
func (c *Client) Raw(ctx context.Context, path string, query url.Values) (json.RawMessage, error) {
	var raw json.RawMessage
	err := c.do(ctx, http.MethodGet, path, query, nil, &raw)
	return raw, err
}

// IsStatus reports whether err is an API answer with this status.
func IsStatus(err error, status int) bool {
	var se *StatusError
	return errors.As(err, &se) && se.Status == status
}

// ListAgents returns the enrolled agents.
func (c *Client) ListAgents(ctx context.Context) ([]transport.NodeRecord, error) {
	var out struct {
		Agents []transport.NodeRecord `json:"agents"`
	}
	err := c.do(ctx, http.MethodGet, "/agents", nil, nil, &out)
	return out.Agents, err
}

// RemoveAgent forgets an agent and revokes its credential.
func (c *Client) RemoveAgent(ctx context.Context, nodeID string) error {
	return c.do(ctx, http.MethodDelete, "/agents/"+url.PathEscape(nodeID), nil, nil, nil)
}

// CreateJoinToken makes a join token for enrolling agents.
func (c *Client) CreateJoinToken(ctx context.Context, req JoinTokenRequest) (*JoinTokenResponse, error) {
	var out JoinTokenResponse
	if err := c.do(ctx, http.MethodPost, "/join-tokens", nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// JoinTokens lists the join tokens, without secrets.
func (c *Client) JoinTokens(ctx context.Context) ([]transport.TokenRecord, error) {
	var out struct {
		JoinTokens []transport.TokenRecord `json:"joinTokens"`
	}
	err := c.do(ctx, http.MethodGet, "/join-tokens", nil, nil, &out)
	return out.JoinTokens, err
}

// RevokeJoinToken makes a join token unusable.
func (c *Client) RevokeJoinToken(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/join-tokens/"+url.PathEscape(id), nil, nil, nil)
}

// CreateToken makes an API token (admin scope needed).
func (c *Client) CreateToken(ctx context.Context, req TokenRequest) (*TokenResponse, error) {
	var out TokenResponse
	if err := c.do(ctx, http.MethodPost, "/tokens", nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RevokeToken revokes an API token by id.
func (c *Client) RevokeToken(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/tokens/"+url.PathEscape(id), nil, nil, nil)
}

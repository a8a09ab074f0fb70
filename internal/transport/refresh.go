package transport

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// AgentTransportPath is the API route answering where agents reach NATS now.
const AgentTransportPath = "/api/v1/agent/transport"

// Bounds on the answer: a server is trusted to name its NATS, not to make
// the agent hold megabytes or dial hundreds of hosts.
const (
	maxTransportBody = 64 << 10
	maxNATSURLs      = 16
)

// CurrentNATSURLs asks the server's API (serverURL, with the agent's API
// token) where agents dial NATS now. An agent calls it when the address of
// its enrollment does not answer: the server may have moved. client nil
// uses a plain client with a 10 s timeout.
func CurrentNATSURLs(ctx context.Context, client *http.Client, serverURL, apiToken string) ([]string, error) {
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(serverURL, "/")+AgentTransportPath, nil)
	if err != nil {
		return nil, fmt.Errorf("ask the server for its NATS address: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+apiToken)
	res, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("ask the server for its NATS address: %w", err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, maxTransportBody+1))
	if err != nil {
		return nil, fmt.Errorf("ask the server for its NATS address: %w", err)
	}
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("ask the server for its NATS address: server said %s", res.Status)
	}
	if len(data) > maxTransportBody {
		return nil, fmt.Errorf("ask the server for its NATS address: answer over %d bytes", maxTransportBody)
	}
	var v struct {
		NATSURLs []string `json:"natsUrls"`
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("ask the server for its NATS address: %w", err)
	}
	if len(v.NATSURLs) == 0 || len(v.NATSURLs) > maxNATSURLs {
		return nil, fmt.Errorf("ask the server for its NATS address: %d URLs, want 1 to %d", len(v.NATSURLs), maxNATSURLs)
	}
	for _, s := range v.NATSURLs {
		u, err := url.Parse(s)
		if err != nil || u.Host == "" || !slices.Contains([]string{"tls", "nats"}, u.Scheme) {
			return nil, fmt.Errorf("ask the server for its NATS address: %q is not a nats:// or tls:// URL", s)
		}
	}
	return v.NATSURLs, nil
}

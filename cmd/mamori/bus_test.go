package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/mamori-dev/mamori/internal/transport"
)

// TestAgentAsksWhereNATSIsOnlyOverTrustedLinks: an agent whose bus does
// not answer at start asks the server's API where NATS is now over
// loopback HTTP, but not over plain HTTP to another address, where anyone
// on the path could answer with a bus of their own. (0.0.0.0 reaches this
// host's loopback listener, as a remote address would reach a hostile
// answerer: a mutated check shows as a request.)
func TestAgentAsksWhereNATSIsOnlyOverTrustedLinks(t *testing.T) {
	var asked atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"natsUrls":["nats://127.0.0.1:1"]}`)
	}))
	defer srv.Close()
	port := srv.URL[strings.LastIndexByte(srv.URL, ':'):]
	down := errors.New("dial: connection refused")
	for _, c := range []struct {
		url  string
		asks bool
	}{
		{"http://127.0.0.1" + port, true},
		{"http://0.0.0.0" + port, false},
		{"", false},
	} {
		asked.Store(0)
		creds := &transport.Credentials{NodeID: "node-a", NATSURLs: []string{"nats://127.0.0.1:2"}, APIToken: "agent-token"}
		var logged strings.Builder
		var pcfg transport.PublisherConfig
		followServer(&pcfg, t.TempDir(), creds, c.url, "", down, slog.New(slog.NewTextHandler(&logged, nil)))
		if pcfg.Locate != nil {
			// What the publisher does at its start, without the bus.
			if _, err := pcfg.Locate(context.Background()); err != nil {
				t.Errorf("%q: ask: %v", c.url, err)
			}
		}
		if got := asked.Load() > 0; got != c.asks || pcfg.AskAtStart != c.asks {
			t.Errorf("%q: asked the API %v (at start %v), want %v\n%s", c.url, got, pcfg.AskAtStart, c.asks, logged.String())
		}
		if !c.asks && !strings.Contains(logged.String(), "only over https://") {
			t.Errorf("%q: the agent does not say why it will not ask:\n%s", c.url, logged.String())
		}
	}
}

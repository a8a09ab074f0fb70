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
		err := followNATS(context.Background(), t.TempDir(), creds, c.url, "", down, slog.New(slog.NewTextHandler(&logged, nil)))
		if got := asked.Load() > 0; got != c.asks {
			t.Errorf("%q: asked the API %v, want %v (err %v)\n%s", c.url, got, c.asks, err, logged.String())
		}
		if !c.asks {
			if err != nil || creds.NATSURLs[0] != "nats://127.0.0.1:2" || !strings.Contains(logged.String(), "only over https://") {
				t.Errorf("%q: err %v, address now %v, log:\n%s", c.url, err, creds.NATSURLs, logged.String())
			}
		}
	}
}

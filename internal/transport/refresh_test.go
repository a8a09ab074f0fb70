package transport

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestCurrentNATSURLs: the agent takes the server's answer only when it
// is a short list of nats:// or tls:// URLs, asked with its token.
func TestCurrentNATSURLs(t *testing.T) {
	var answer string
	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != AgentTransportPath || r.Header.Get("Authorization") != "Bearer agent-token" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.WriteHeader(status)
		_, _ = w.Write([]byte(answer))
	}))
	defer srv.Close()
	ctx := context.Background()

	answer = `{"natsUrls":["tls://10.0.0.5:4222","nats://10.0.0.6:4222"]}`
	got, err := CurrentNATSURLs(ctx, nil, srv.URL+"/", "agent-token")
	if err != nil || len(got) != 2 || got[0] != "tls://10.0.0.5:4222" {
		t.Fatalf("good answer: %v %v", got, err)
	}
	if _, err := CurrentNATSURLs(ctx, nil, srv.URL, "wrong"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("refused token: %v", err)
	}
	for name, bad := range map[string]string{
		"empty list":  `{"natsUrls":[]}`,
		"http URL":    `{"natsUrls":["http://evil.example/"]}`,
		"no host":     `{"natsUrls":["tls://"]}`,
		"not JSON":    `<html>`,
		"too many":    `{"natsUrls":[` + strings.Repeat(`"tls://h:1",`, 16) + `"tls://h:1"]}`,
		"too large":   `{"natsUrls":["tls://h:1"],"pad":"` + strings.Repeat("x", 70<<10) + `"}`,
		"not a list":  `{"natsUrls":"tls://h:1"}`,
		"no such key": `{}`,
	} {
		answer = bad
		if got, err := CurrentNATSURLs(ctx, nil, srv.URL, "agent-token"); err == nil {
			t.Errorf("%s: taken as %v", name, got)
		}
	}
	answer, status = `{"natsUrls":["tls://h:1"]}`, http.StatusInternalServerError
	if _, err := CurrentNATSURLs(ctx, nil, srv.URL, "agent-token"); err == nil {
		t.Error("a 500 answer was taken")
	}
}

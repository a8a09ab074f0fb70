package transport

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestTokensLifecycle(t *testing.T) {
	ctx := context.Background()
	tk := NewTokens(NewMemStore[TokenRecord]())
	now := time.Now()
	tk.now = func() time.Time { return now }

	single, rec, err := tk.Create(ctx, TokenOptions{Description: "one node"})
	if err != nil {
		t.Fatal(err)
	}
	if rec.MaxUses != 1 || rec.ExpiresAt.Sub(now) != 24*time.Hour || strings.Contains(rec.SecretHash, single[18:]) {
		t.Fatalf("record %+v", rec)
	}
	if _, err := tk.Redeem(ctx, single); err != nil {
		t.Fatalf("first use: %v", err)
	}
	if _, err := tk.Redeem(ctx, single); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("second use of a single-use token: %v", err)
	}

	multi, _, _ := tk.Create(ctx, TokenOptions{MaxUses: 3, TTL: time.Hour})
	for i := range 3 {
		if _, err := tk.Redeem(ctx, multi); err != nil {
			t.Fatalf("use %d of 3: %v", i+1, err)
		}
	}
	if _, err := tk.Redeem(ctx, multi); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("fourth use of a 3-use token: %v", err)
	}

	expiring, _, _ := tk.Create(ctx, TokenOptions{MaxUses: UnlimitedUses, TTL: time.Minute})
	if _, err := tk.Redeem(ctx, expiring); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Minute)
	if _, err := tk.Redeem(ctx, expiring); !errors.Is(err, ErrInvalidToken) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired token: %v", err)
	}

	forever, frec, _ := tk.Create(ctx, TokenOptions{MaxUses: UnlimitedUses, TTL: -1})
	now = now.Add(10 * 365 * 24 * time.Hour)
	for range 5 {
		if _, err := tk.Redeem(ctx, forever); err != nil {
			t.Fatal(err)
		}
	}
	if err := tk.Revoke(ctx, frec.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := tk.Redeem(ctx, forever); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("revoked token: %v", err)
	}

	// Wrong secret, unknown id, garbage.
	wrong := forever[:len(forever)-4] + "AAAA"
	for _, bad := range []string{wrong, "mjt1.000000000000." + strings.Repeat("A", 43), "", "mjt1.", "hello", forever + "x"} {
		if _, err := tk.Redeem(ctx, bad); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("token %q: %v", bad, err)
		}
	}
	list, _ := tk.List(ctx)
	if len(list) != 4 {
		t.Fatalf("listed %d tokens, want 4", len(list))
	}
	for _, r := range list {
		if r.SecretHash != "" {
			t.Fatal("List exposes secret hashes")
		}
	}
}

func TestEnrollHTTP(t *testing.T) {
	b := startBus(t, t.TempDir(), -1)
	ctx := context.Background()
	url := b.http.URL + EnrollPath

	// Good enrollment; saved credentials are private and load back.
	creds := b.enroll("node-1")
	dataDir := t.TempDir()
	if err := SaveCredentials(dataDir, creds); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(CredentialsFile(dataDir))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("credentials file mode %v (%v)", fi.Mode(), err)
	}
	if di, _ := os.Stat(filepath.Dir(CredentialsFile(dataDir))); di.Mode().Perm() != 0o700 {
		t.Fatalf("credentials dir mode %v", di.Mode())
	}
	loaded, err := LoadCredentials(dataDir)
	if err != nil || loaded.Seed != creds.Seed || loaded.JWT != creds.JWT {
		t.Fatalf("load: %v", err)
	}
	os.Chmod(CredentialsFile(dataDir), 0o644)
	if _, err := LoadCredentials(dataDir); err == nil {
		t.Fatal("loaded a world-readable credentials file")
	}
	// The JWT allows exactly the node's own subjects.
	uc, err := jwt.DecodeUserClaims(creds.JWT)
	if err != nil {
		t.Fatal(err)
	}
	if got := []string(uc.Pub.Allow); len(got) != 3 || got[0] != "mamori.agent.node-1.findings" {
		t.Fatalf("pub allow %v", got)
	}
	if uc.IssuerAccount != b.emb.Auth.AccountPublicKey() {
		t.Fatal("JWT not issued for the MAMORI account")
	}

	// The CA pin: right fingerprint enrolls, wrong one is refused.
	fp, _ := CAFingerprint(b.emb.TLS.CAPEM)
	tok, _, _ := b.tokens.Create(ctx, TokenOptions{MaxUses: 2})
	if _, err := Enroll(ctx, EnrollOptions{URL: url, Token: tok, NodeID: "node-2", CAFingerprint: fp}); err != nil {
		t.Fatalf("enroll with the right CA pin: %v", err)
	}
	if _, err := Enroll(ctx, EnrollOptions{URL: url, Token: tok, NodeID: "node-3", CAFingerprint: strings.Repeat("0", 64)}); err == nil ||
		!strings.Contains(err.Error(), "fingerprint") {
		t.Fatalf("enroll with a wrong CA pin: %v", err)
	}

	// Re-enrolling a bound node id with another key is a conflict...
	tok, _, _ = b.tokens.Create(ctx, TokenOptions{})
	if _, err := Enroll(ctx, EnrollOptions{URL: url, Token: tok, NodeID: "node-1"}); err == nil || !strings.Contains(err.Error(), "409") {
		t.Fatalf("hijacking node-1: %v", err)
	}
	// ...which did not use the token up.
	if _, err := b.tokens.Check(ctx, tok); err != nil {
		t.Fatalf("conflict consumed the token: %v", err)
	}
	// A rebind token may (a node that lost its data dir).
	rebind, _, _ := b.tokens.Create(ctx, TokenOptions{AllowRebind: true})
	if _, err := Enroll(ctx, EnrollOptions{URL: url, Token: rebind, NodeID: "node-1"}); err != nil {
		t.Fatalf("rebind: %v", err)
	}

	// Hostile and broken requests.
	key, _ := nkeys.CreateUser()
	pub, _ := key.PublicKey()
	good, _, _ := b.tokens.Create(ctx, TokenOptions{MaxUses: UnlimitedUses})
	accountKey := b.emb.Auth.AccountPublicKey()
	cases := []struct {
		name, method, ctype, body string
		code                      int
		result                    string
	}{
		{"GET", http.MethodGet, "", "", 405, "bad_request"},
		{"not json", http.MethodPost, "application/json", "token=x", 400, "bad_request"},
		{"text/plain", http.MethodPost, "text/plain", "{}", 415, "bad_request"},
		{"unknown field", http.MethodPost, "", `{"token":"` + good + `","nodeId":"n9","publicKey":"` + pub + `","admin":true}`, 400, "bad_request"},
		{"two objects", http.MethodPost, "", `{"token":"` + good + `","nodeId":"n9","publicKey":"` + pub + `"}{}`, 400, "bad_request"},
		{"too large", http.MethodPost, "", `{"token":"` + strings.Repeat("a", 100<<10) + `"}`, 413, "bad_request"},
		{"bad node id", http.MethodPost, "", `{"token":"` + good + `","nodeId":"n9.>","publicKey":"` + pub + `"}`, 400, "bad_request"},
		{"account key", http.MethodPost, "", `{"token":"` + good + `","nodeId":"n9","publicKey":"` + accountKey + `"}`, 400, "bad_request"},
		{"bad token", http.MethodPost, "", `{"token":"mjt1.nope","nodeId":"n9","publicKey":"` + pub + `"}`, 401, "bad_token"},
		{"no token", http.MethodPost, "", `{"nodeId":"n9","publicKey":"` + pub + `"}`, 401, "bad_token"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := testutil.ToFloat64(b.metrics.Enrollments.WithLabelValues(c.result))
			req := httptest.NewRequest(c.method, EnrollPath, strings.NewReader(c.body))
			if c.ctype != "" {
				req.Header.Set("Content-Type", c.ctype)
			}
			rec := httptest.NewRecorder()
			b.enrol.ServeHTTP(rec, req)
			if rec.Code != c.code {
				t.Fatalf("status %d, want %d: %s", rec.Code, c.code, rec.Body)
			}
			if !strings.Contains(rec.Body.String(), `"error"`) {
				t.Fatalf("no error message: %s", rec.Body)
			}
			if got := testutil.ToFloat64(b.metrics.Enrollments.WithLabelValues(c.result)); got != before+1 {
				t.Fatalf("enrollments{%s} went %v -> %v", c.result, before, got)
			}
		})
	}
	// The 401 does not say why.
	rec := httptest.NewRecorder()
	b.enrol.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, EnrollPath,
		strings.NewReader(`{"token":"`+good[:len(good)-1]+`B","nodeId":"n9","publicKey":"`+pub+`"}`)))
	if rec.Code != 401 || strings.Contains(rec.Body.String(), "secret") {
		t.Fatalf("wrong-secret answer leaks detail: %d %s", rec.Code, rec.Body)
	}
}

// The enrolled agent's credentials work against the bus after a server
// restart: keys and certificates persist in the data dir.
func TestEnrollmentSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	b := startBus(t, dir, -1)
	creds := b.enroll("node-1")
	port := b.port
	b.down()
	b.start(port)
	nc := agentConn(t, creds, make(chan error, 1))
	if !nc.IsConnected() {
		t.Fatal("not connected")
	}
	// The join tokens and node bindings persisted too (JetStream KV).
	tok, _, _ := b.tokens.Create(context.Background(), TokenOptions{})
	if _, err := Enroll(context.Background(), EnrollOptions{URL: b.http.URL + EnrollPath, Token: tok, NodeID: "node-1"}); err == nil {
		t.Fatal("node binding forgotten across restart")
	}
}

// NATSConfig is enough for a separately configured nats-server (the external
// cluster case) to accept agents' credentials with the same permissions.
func TestNATSConfigForExternalServer(t *testing.T) {
	dir := t.TempDir()
	auth, err := LoadOrCreateAuth(filepath.Join(dir, "auth.json"))
	if err != nil {
		t.Fatal(err)
	}
	again, err := LoadOrCreateAuth(filepath.Join(dir, "auth.json"))
	if err != nil || again.AccountPublicKey() != auth.AccountPublicKey() {
		t.Fatalf("auth not persisted: %v", err)
	}
	conf := auth.NATSConfig(filepath.Join(dir, "jwt")) + "listen: 127.0.0.1:-1\njetstream: {store_dir: " + `"` + filepath.Join(dir, "js") + `"` + "}\n"
	confPath := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(confPath)
	if err != nil {
		t.Fatalf("nats-server rejects the generated config: %v\n%s", err, conf)
	}
	opts.NoSigs, opts.NoLog = true, true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	defer func() { s.Shutdown(); s.WaitForShutdown() }()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("external server not ready")
	}
	key, _ := nkeys.CreateUser()
	pub, _ := key.PublicKey()
	seed, _ := key.Seed()
	userJWT, err := auth.IssueAgentJWT("ext-1", pub, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 4)
	nc, err := nats.Connect(s.ClientURL(), nats.UserJWTAndSeed(userJWT, string(seed)),
		nats.CustomInboxPrefix(AgentInboxPrefix("ext-1")),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
	if err != nil {
		t.Fatalf("agent cannot connect to the external server: %v", err)
	}
	defer nc.Close()
	_ = nc.Publish(SubjectFor("ext-2", KindFinding), []byte("{}"))
	select {
	case err := <-errs:
		if !errors.Is(err, nats.ErrPermissionViolation) {
			t.Fatalf("got %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("external server let ext-1 publish as ext-2")
	}
	// A server replica's credentials work there too, and its revoker pushes
	// a revocation to the running server: ext-1's connection is cut and
	// its credential refused from then on.
	ctx := context.Background()
	snc, err := ConnectServer(ctx, ServerConnConfig{URLs: []string{s.ClientURL()}, Auth: auth, Name: "replica"})
	if err != nil {
		t.Fatalf("server creds: %v", err)
	}
	defer snc.Close()
	sys, err := ConnectServer(ctx, ServerConnConfig{URLs: []string{s.ClientURL()}, Auth: auth, Name: "replica", System: true})
	if err != nil {
		t.Fatalf("system creds: %v", err)
	}
	defer sys.Close()
	js, _ := jetstream.New(snc)
	rev, err := NewClusterRevoker(ctx, js, 1, auth, sys, nil)
	if err != nil {
		t.Fatalf("revoker: %v", err)
	}
	if err := rev.Revoke(pub); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for nc.IsConnected() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if nc.IsConnected() {
		t.Fatal("revoked agent still connected to the external server")
	}
	if again, err := nats.Connect(s.ClientURL(), nats.UserJWTAndSeed(userJWT, string(seed))); err == nil {
		again.Close()
		t.Fatal("revoked credential accepted by the external server")
	}
	// A replica starting from an auth file without the revocation merges it
	// from the shared bucket and does not un-revoke the key.
	copyAuth := filepath.Join(dir, "copy.json")
	raw, _ := os.ReadFile(filepath.Join(dir, "auth.json"))
	var f authFile
	_ = json.Unmarshal(raw, &f)
	f.Revoked = nil
	raw, _ = json.Marshal(f)
	_ = os.WriteFile(copyAuth, raw, 0o600)
	old, err := LoadOrCreateAuth(copyAuth)
	if err != nil || old.IsRevoked(pub) {
		t.Fatalf("stale copy: %v", err)
	}
	if _, err := NewClusterRevoker(ctx, js, 1, old, sys, nil); err != nil {
		t.Fatalf("second replica's revoker: %v", err)
	}
	if !old.IsRevoked(pub) {
		t.Fatal("replica with a stale auth file did not learn the revocation")
	}
	if again, err := nats.Connect(s.ClientURL(), nats.UserJWTAndSeed(userJWT, string(seed))); err == nil {
		again.Close()
		t.Fatal("revocation undone by a replica with a stale auth file")
	}
}

// Removing a node, or re-binding its id to a new key, revokes the old key:
// its connection is cut and it cannot come back, also after a restart.
func TestRevocation(t *testing.T) {
	b := startBus(t, t.TempDir(), -1)
	port := b.port
	ctx := context.Background()
	a, other := b.enroll("node-a"), b.enroll("node-b")
	closed := make(chan struct{})
	nca := agentConn(t, a, make(chan error, 4), nats.NoReconnect(), nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	ncb := agentConn(t, other, make(chan error, 4))

	pub, _ := nkeys.FromSeed([]byte(a.Seed))
	apub, _ := pub.PublicKey()
	if err := b.enrol.RemoveNode(ctx, "node-a"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("revoked agent still connected")
	}
	if !nca.IsClosed() || !ncb.IsConnected() {
		t.Fatalf("after revoking node-a: a closed=%v, b connected=%v", nca.IsClosed(), ncb.IsConnected())
	}
	if !b.emb.Auth.IsRevoked(apub) {
		t.Fatal("key not recorded as revoked")
	}
	tc, _ := ClientTLSConfig(a.CAPEM)
	if nc, err := nats.Connect(a.NATSURLs[0], nats.UserJWTAndSeed(a.JWT, a.Seed), nats.Secure(tc)); err == nil {
		nc.Close()
		t.Fatal("revoked credentials connected again")
	}
	// The revocation survives a restart (it is in the auth file).
	b.down()
	b.start(port)
	if nc, err := nats.Connect(a.NATSURLs[0], nats.UserJWTAndSeed(a.JWT, a.Seed), nats.Secure(tc)); err == nil {
		nc.Close()
		t.Fatal("revoked credentials connected after a restart")
	}
	// The node can enroll again with a new token and key.
	a2 := b.enroll("node-a")
	agentConn(t, a2, make(chan error, 1))

	// Re-binding node-a's id to yet another key revokes a2's key.
	rebind, _, _ := b.tokens.Create(ctx, TokenOptions{AllowRebind: true})
	if _, err := Enroll(ctx, EnrollOptions{URL: b.http.URL + EnrollPath, Token: rebind, NodeID: "node-a"}); err != nil {
		t.Fatal(err)
	}
	if nc, err := nats.Connect(a2.NATSURLs[0], nats.UserJWTAndSeed(a2.JWT, a2.Seed), nats.Secure(tc)); err == nil {
		nc.Close()
		t.Fatal("credentials replaced by a rebind still connect")
	}
}

// A fleet enrolling at once with one shared token (a DaemonSet rollout)
// through two replicas on one key-value bucket: every node gets in, each
// use is counted once, and the token is used up exactly at its limit.
func TestSharedTokenUnderConcurrentEnrollment(t *testing.T) {
	b := startBus(t, t.TempDir(), -1)
	ctx := context.Background()
	kv, err := NewKVStore[TokenRecord](ctx, b.js, "mamori_join_tokens_race", 1)
	if err != nil {
		t.Fatal(err)
	}
	replicas := []*Tokens{NewTokens(kv), NewTokens(kv)}
	const fleet = 300
	tok, _, err := replicas[0].Create(ctx, TokenOptions{Description: "daemonset", MaxUses: fleet})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var failed atomic.Int32
	for i := range fleet {
		wg.Go(func() {
			if _, err := replicas[i%2].Redeem(ctx, tok); err != nil {
				failed.Add(1)
				t.Errorf("node %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d of %d enrollments refused", failed.Load(), fleet)
	}
	rec, err := replicas[1].Check(ctx, tok)
	if err == nil || !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("token after %d uses of %d: %+v %v", fleet, fleet, rec, err)
	}
	if _, err := replicas[0].Redeem(ctx, tok); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("use beyond the limit: %v", err)
	}
}

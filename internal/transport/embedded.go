package transport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// EmbeddedConfig configures the NATS JetStream server that `mamori run`
// embeds.
type EmbeddedConfig struct {
	// DataDir is the mamori data directory; the server keeps everything under
	// DataDir/nats: auth.json (keys, 0600), tls/ (CA and server certificate),
	// jetstream/ (the store).
	DataDir string
	// Host to listen on; "127.0.0.1" when empty. Use "0.0.0.0" to let agents
	// on other hosts connect (and list their view of this host in TLSHosts).
	Host string
	// Port to listen on: 0 means 4222, -1 picks a free port.
	Port int
	// TLSHosts are extra names and addresses the server certificate must
	// cover, beyond DefaultTLSHosts.
	TLSHosts []string
	// MaxStoreBytes is JetStream's quota for its streams' bounds [1 GiB].
	// Left to NATS it would be 75% of the disk's free space at start, so a
	// server started on a small or nearly full disk could not create its
	// streams at all; the real free space is DiskGuard's to watch.
	MaxStoreBytes int64
	// ServerName names the server in NATS logs and monitoring.
	ServerName string
	Logger     *slog.Logger
}

// Embedded is a running embedded NATS server with JetStream, TLS required
// on its listener, and operator-mode auth.
type Embedded struct {
	Server *server.Server
	Auth   *Auth
	TLS    *TLSMaterial
	url    string

	storeDir string
	jsConfig server.JetStreamConfig // as started, for RestartJetStream
}

// EmbeddedPaths returns where an embedded server keeps its auth file, TLS
// directory and JetStream store under dataDir.
func EmbeddedPaths(dataDir string) (authFile, tlsDir, storeDir string) {
	base := filepath.Join(dataDir, "nats")
	return filepath.Join(base, "auth.json"), filepath.Join(base, "tls"), filepath.Join(base, "jetstream")
}

// StartEmbedded starts the server and waits until it accepts connections.
// Keys and certificates are created on first start and reused afterwards, so
// enrolled agents keep working across restarts.
func StartEmbedded(cfg EmbeddedConfig) (*Embedded, error) {
	if cfg.DataDir == "" {
		return nil, fmt.Errorf("embedded nats: no data dir")
	}
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if cfg.Port == 0 {
		cfg.Port = 4222
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxStoreBytes <= 0 {
		cfg.MaxStoreBytes = 1 << 30
	}
	if cfg.Port > 0 {
		// Said now, not after the 30 s readiness wait below.
		l, err := net.Listen("tcp", net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port)))
		if err != nil {
			return nil, fmt.Errorf("embedded nats: cannot listen on %s:%d (another NATS or mamori there? pick one with --nats-port): %w", cfg.Host, cfg.Port, err)
		}
		l.Close()
	}
	authPath, tlsDir, storeDir := EmbeddedPaths(cfg.DataDir)
	if err := os.MkdirAll(filepath.Dir(authPath), 0o700); err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	auth, err := LoadOrCreateAuth(authPath)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	hosts := append(DefaultTLSHosts(), cfg.TLSHosts...)
	if cfg.Host != "0.0.0.0" && cfg.Host != "::" {
		hosts = append(hosts, cfg.Host)
	}
	tlsm, err := LoadOrCreateTLS(tlsDir, hosts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	opts := &server.Options{
		ServerName:        cfg.ServerName,
		Host:              cfg.Host,
		Port:              cfg.Port,
		JetStream:         true,
		StoreDir:          storeDir,
		JetStreamMaxStore: cfg.MaxStoreBytes,
		TLS:               true,
		TLSConfig:         tlsm.ServerTLSConfig(),
		TLSTimeout:        5,
		MaxPayload:        MaxEnvelopeBytes + 64<<10,
		NoSigs:            true,
	}
	if err := auth.ConfigureServer(opts); err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	s.SetLoggerV2(slogAdapter{cfg.Logger.With("component", "nats")}, false, false, false)
	go s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("embedded nats: not ready after 30s (port %d in use?)", cfg.Port)
	}
	e := &Embedded{Server: s, Auth: auth, TLS: tlsm, storeDir: storeDir}
	if jc := s.JetStreamConfig(); jc != nil {
		e.jsConfig = *jc
		e.jsConfig.StoreDir = storeDir // NATS adds its own "jetstream" again
	}
	host := cfg.Host
	if host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	port := cfg.Port
	if a, ok := s.Addr().(*net.TCPAddr); ok {
		port = a.Port
	}
	e.url = "tls://" + net.JoinHostPort(host, strconv.Itoa(port))
	return e, nil
}

// ClientURL is a URL agents on this host can use (loopback when listening on
// every address). Enrollers advertise their own configured URLs instead.
func (e *Embedded) ClientURL() string { return e.url }

// Port is the TCP port the server listens on.
func (e *Embedded) Port() int {
	if a, ok := e.Server.Addr().(*net.TCPAddr); ok {
		return a.Port
	}
	return 0
}

// ConnectInProcess opens a connection for the mamori server itself: in
// process (no socket, no TLS needed), as a fresh unrestricted server user.
func (e *Embedded) ConnectInProcess(name string, extra ...nats.Option) (*nats.Conn, error) {
	userJWT, seed, err := e.Auth.ServerCreds(name)
	if err != nil {
		return nil, err
	}
	opts := append([]nats.Option{nats.Name(name), nats.InProcessServer(e.Server),
		nats.UserJWTAndSeed(userJWT, seed), nats.MaxReconnects(-1)}, extra...)
	nc, err := nats.Connect("", opts...)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: connect in process: %w", err)
	}
	return nc, nil
}

// RevokeUser revokes an agent's user key (Auth.Revoke) and applies it to the
// running server at once: the agent's connections are closed and it cannot
// reconnect with that key.
func (e *Embedded) RevokeUser(userPub string) error {
	if err := e.Auth.Revoke(userPub); err != nil {
		return err
	}
	accJWT := e.Auth.AccountJWT()
	ac, err := jwt.DecodeAccountClaims(accJWT)
	if err != nil {
		return fmt.Errorf("revoke: %w", err)
	}
	if err := e.Server.AccountResolver().Store(ac.Subject, accJWT); err != nil {
		return fmt.Errorf("revoke: %w", err)
	}
	acc, err := e.Server.LookupAccount(ac.Subject)
	if err != nil {
		return fmt.Errorf("revoke: %w", err)
	}
	e.Server.UpdateAccountClaims(acc, ac)
	return nil
}

// RestartJetStream stops JetStream and starts it again on the same store
// with the same limits: streams and consumers are reopened from disk, which
// clears a stream's failed-write state. Core NATS (connections,
// subscriptions) is not touched; JetStream clients see errors meanwhile and
// retry.
func (e *Embedded) RestartJetStream() error {
	if e.jsConfig.MaxStore <= 0 || e.jsConfig.MaxMemory <= 0 {
		return errors.New("restart JetStream: its configuration was not captured at start")
	}
	if err := e.Server.ShutdownJetStream(); err != nil {
		return fmt.Errorf("stop JetStream: %w", err)
	}
	cfg := e.jsConfig
	if err := e.Server.EnableJetStream(&cfg); err != nil {
		// A failed start can leave JetStream half up; stop it so the next
		// attempt starts from scratch.
		_ = e.Server.ShutdownJetStream()
		return fmt.Errorf("start JetStream: %w", err)
	}
	return nil
}

// Shutdown stops the server and waits for it to finish.
func (e *Embedded) Shutdown() {
	e.Server.Shutdown()
	e.Server.WaitForShutdown()
}

// ServerConnConfig describes how a mamori server replica reaches an external
// NATS cluster.
type ServerConnConfig struct {
	URLs  []string // e.g. tls://nats-0.nats:4222
	Auth  *Auth    // the installation's auth; a server user is minted from it
	CAPEM []byte   // CA of the NATS servers' certificates; system roots when nil
	Name  string
	// System connects as a system-account user (for pushing account JWTs,
	// see ClusterRevoker) instead of a server user of the MAMORI account.
	System bool
}

// ConnectServer connects a mamori server replica to an external NATS cluster,
// retrying in the background when the cluster is not up yet.
func ConnectServer(ctx context.Context, cfg ServerConnConfig, extra ...nats.Option) (*nats.Conn, error) {
	if len(cfg.URLs) == 0 || cfg.Auth == nil {
		return nil, fmt.Errorf("connect server: URLs and Auth are required")
	}
	creds := cfg.Auth.ServerCreds
	if cfg.System {
		creds = cfg.Auth.SystemCreds
	}
	userJWT, seed, err := creds(cfg.Name)
	if err != nil {
		return nil, err
	}
	opts := []nats.Option{nats.Name(cfg.Name), nats.UserJWTAndSeed(userJWT, seed),
		nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true)}
	if cfg.CAPEM != nil {
		tc, err := ClientTLSConfig(cfg.CAPEM)
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.Secure(tc))
	}
	nc, err := nats.Connect(strings.Join(cfg.URLs, ","), append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("connect server: %w", err)
	}
	if err := ctx.Err(); err != nil {
		nc.Close()
		return nil, err
	}
	return nc, nil
}

// slogAdapter routes nats-server's logs to slog.
type slogAdapter struct{ l *slog.Logger }

// Its notices (banner, start and stop steps) are debug detail to a
// mamori operator; its warnings and errors are not.
func (a slogAdapter) Noticef(f string, v ...any) { a.l.Debug(fmt.Sprintf(f, v...)) }
func (a slogAdapter) Warnf(f string, v ...any)   { a.l.Warn(fmt.Sprintf(f, v...)) }
func (a slogAdapter) Fatalf(f string, v ...any)  { a.l.Error(fmt.Sprintf(f, v...)) }
func (a slogAdapter) Errorf(f string, v ...any)  { a.l.Error(fmt.Sprintf(f, v...)) }
func (a slogAdapter) Debugf(f string, v ...any)  { a.l.Debug(fmt.Sprintf(f, v...)) }
func (a slogAdapter) Tracef(f string, v ...any)  { a.l.Debug(fmt.Sprintf(f, v...)) }

package transport

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
)

// Auth is the NATS decentralized-auth material of one mamori installation: an
// operator, a system account, and the MAMORI account that agents and servers
// live in. Agents' user JWTs are signed by the account's signing key (never
// the account key itself), with publish rights limited to their own subjects.
//
// Every mamori server replica of an installation must load the same Auth
// (for an external cluster: mount the auth file from a shared secret); the
// NATS servers trust it through the config fragment of NATSConfig.
type Auth struct {
	mu      sync.Mutex
	path    string           // where LoadOrCreateAuth found it; Revoke persists here
	revoked map[string]int64 // user public key -> JWTs issued up to this unix time are void

	operator   nkeys.KeyPair
	sysAccount nkeys.KeyPair
	account    nkeys.KeyPair
	signer     nkeys.KeyPair

	operatorJWT string
	sysJWT      string
	accountJWT  string
}

// authFile is the on-disk form of Auth (JSON, mode 0600).
type authFile struct {
	OperatorSeed      string `json:"operatorSeed"`
	SystemAccountSeed string `json:"systemAccountSeed"`
	AccountSeed       string `json:"accountSeed"`
	SigningKeySeed    string `json:"signingKeySeed"`
	// Revoked lists revoked agent user keys (and the unix time of revocation).
	Revoked map[string]int64 `json:"revoked,omitempty"`
}

// AccountName is the name of the NATS account agents and servers share.
const AccountName = "MAMORI"

// LoadOrCreateAuth reads the auth file at path, creating it with fresh keys
// (mode 0600) when it does not exist.
func LoadOrCreateAuth(path string) (*Auth, error) {
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		var f authFile
		if err := json.Unmarshal(data, &f); err != nil {
			return nil, fmt.Errorf("auth file %s: %w", path, err)
		}
		a, err := authFromFile(f)
		if a != nil {
			a.path = path
		}
		return a, err
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("auth file: %w", err)
	}
	var f authFile
	for _, k := range []struct {
		dst *string
		mk  func() (nkeys.KeyPair, error)
	}{{&f.OperatorSeed, nkeys.CreateOperator}, {&f.SystemAccountSeed, nkeys.CreateAccount},
		{&f.AccountSeed, nkeys.CreateAccount}, {&f.SigningKeySeed, nkeys.CreateAccount}} {
		kp, err := k.mk()
		if err != nil {
			return nil, fmt.Errorf("create nkey: %w", err)
		}
		seed, _ := kp.Seed()
		*k.dst = string(seed)
	}
	a, err := authFromFile(f)
	if err != nil {
		return nil, err
	}
	a.path = path
	if err := a.save(); err != nil {
		return nil, err
	}
	return a, nil
}

// save writes the seeds and revocations to a.path. Caller holds a.mu or owns a.
func (a *Auth) save() error {
	var f authFile
	for _, k := range []struct {
		dst *string
		kp  nkeys.KeyPair
	}{{&f.OperatorSeed, a.operator}, {&f.SystemAccountSeed, a.sysAccount}, {&f.AccountSeed, a.account}, {&f.SigningKeySeed, a.signer}} {
		seed, err := k.kp.Seed()
		if err != nil {
			return fmt.Errorf("auth: %w", err)
		}
		*k.dst = string(seed)
	}
	f.Revoked = a.revoked
	out, _ := json.MarshalIndent(f, "", "  ")
	if err := writeFileAtomic(a.path, out, 0o600); err != nil {
		return fmt.Errorf("auth file: %w", err)
	}
	return nil
}

func authFromFile(f authFile) (*Auth, error) {
	a := Auth{revoked: f.Revoked}
	if a.revoked == nil {
		a.revoked = map[string]int64{}
	}
	for _, k := range []struct {
		dst   *nkeys.KeyPair
		seed  string
		valid func(string) bool
	}{{&a.operator, f.OperatorSeed, nkeys.IsValidPublicOperatorKey}, {&a.sysAccount, f.SystemAccountSeed, nkeys.IsValidPublicAccountKey},
		{&a.account, f.AccountSeed, nkeys.IsValidPublicAccountKey}, {&a.signer, f.SigningKeySeed, nkeys.IsValidPublicAccountKey}} {
		kp, err := nkeys.FromSeed([]byte(k.seed))
		if err != nil {
			return nil, fmt.Errorf("auth: bad seed: %w", err)
		}
		if pub, _ := kp.PublicKey(); !k.valid(pub) {
			return nil, errors.New("auth: seed of the wrong key type")
		}
		*k.dst = kp
	}
	return &a, a.encodeJWTs()
}

func (a *Auth) encodeJWTs() error {
	opPub, _ := a.operator.PublicKey()
	sysPub, _ := a.sysAccount.PublicKey()
	accPub, _ := a.account.PublicKey()
	signPub, _ := a.signer.PublicKey()

	oc := jwt.NewOperatorClaims(opPub)
	oc.Name = "mamori"
	oc.SystemAccount = sysPub
	var err error
	if a.operatorJWT, err = oc.Encode(a.operator); err != nil {
		return fmt.Errorf("auth: operator jwt: %w", err)
	}
	sc := jwt.NewAccountClaims(sysPub)
	sc.Name = "SYS"
	if a.sysJWT, err = sc.Encode(a.operator); err != nil {
		return fmt.Errorf("auth: system account jwt: %w", err)
	}
	ac := jwt.NewAccountClaims(accPub)
	ac.Name = AccountName
	ac.SigningKeys.Add(signPub)
	ac.Limits.JetStreamLimits.DiskStorage = jwt.NoLimit
	ac.Limits.JetStreamLimits.MemoryStorage = jwt.NoLimit
	ac.Limits.DisallowBearer = true
	for pub, at := range a.revoked {
		ac.RevokeAt(pub, time.Unix(at, 0))
	}
	if a.accountJWT, err = ac.Encode(a.operator); err != nil {
		return fmt.Errorf("auth: account jwt: %w", err)
	}
	return nil
}

// AccountPublicKey is the MAMORI account's public nkey.
func (a *Auth) AccountPublicKey() string { k, _ := a.account.PublicKey(); return k }

// SystemAccountPublicKey is the system account's public nkey.
func (a *Auth) SystemAccountPublicKey() string { k, _ := a.sysAccount.PublicKey(); return k }

// AccountJWT is the MAMORI account's current JWT (it carries revocations).
func (a *Auth) AccountJWT() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.accountJWT
}

// Revoke voids every JWT issued so far to the agent user key userPub and
// persists that. NATS servers learn it from the re-signed account JWT: the
// embedded server through Embedded.RevokeUser, an external cluster through
// ClusterRevoker, which pushes it to the cluster's account resolver.
func (a *Auth) Revoke(userPub string) error {
	if !nkeys.IsValidPublicUserKey(userPub) {
		return errors.New("revoke: not a user public nkey")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.revoked[userPub] = time.Now().Unix()
	if err := a.encodeJWTs(); err != nil {
		return err
	}
	if a.path == "" {
		return nil
	}
	return a.save()
}

// IsRevoked reports whether userPub has been revoked.
func (a *Auth) IsRevoked(userPub string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.revoked[userPub]
	return ok
}

// ConfigureServer sets opts up to trust this installation's operator and
// resolve its two accounts from memory.
func (a *Auth) ConfigureServer(opts *server.Options) error {
	oc, err := jwt.DecodeOperatorClaims(a.operatorJWT)
	if err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	res := &server.MemAccResolver{}
	_ = res.Store(a.SystemAccountPublicKey(), a.sysJWT)
	_ = res.Store(a.AccountPublicKey(), a.AccountJWT())
	opts.TrustedOperators = []*jwt.OperatorClaims{oc}
	opts.AccountResolver = res
	opts.SystemAccount = a.SystemAccountPublicKey()
	return nil
}

// NATSConfig is a nats-server configuration fragment for an external NATS
// cluster that trusts this installation: the operator, the system account,
// and a full account resolver keeping account JWTs in resolverDir
// (one directory per NATS server), preloaded with both accounts. The full
// resolver is what lets mamori server replicas push a re-signed account JWT
// (a revocation) to the running cluster. Add listen, TLS, jetstream and
// cluster blocks around it.
func (a *Auth) NATSConfig(resolverDir string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "# mamori: generated; trusted operator and accounts\n")
	fmt.Fprintf(&b, "operator: %q\n", a.operatorJWT)
	fmt.Fprintf(&b, "system_account: %s\n", a.SystemAccountPublicKey())
	fmt.Fprintf(&b, "resolver: {\n  type: full\n  dir: %q\n  allow_delete: false\n  interval: \"2m\"\n}\n", resolverDir)
	fmt.Fprintf(&b, "resolver_preload: {\n  %s: %q\n  %s: %q\n}\n",
		a.SystemAccountPublicKey(), a.sysJWT, a.AccountPublicKey(), a.accountJWT)
	return b.String()
}

// SystemCreds mints a user (JWT and seed) of the system account, which is
// what may push account JWT updates to an external cluster's resolver.
func (a *Auth) SystemCreds(name string) (userJWT, seed string, err error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return "", "", fmt.Errorf("create system user: %w", err)
	}
	pub, _ := kp.PublicKey()
	s, _ := kp.Seed()
	uc := jwt.NewUserClaims(pub)
	uc.Name = "system:" + name
	if userJWT, err = uc.Encode(a.sysAccount); err != nil {
		return "", "", fmt.Errorf("sign system user jwt: %w", err)
	}
	return userJWT, string(s), nil
}

// Revocations returns a copy of the revoked user keys and their times.
func (a *Auth) Revocations() map[string]int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]int64, len(a.revoked))
	for k, v := range a.revoked {
		out[k] = v
	}
	return out
}

// MergeRevocations adds revocations other replicas made (keeping the later
// time of each key) and re-signs the account JWT when anything changed.
func (a *Auth) MergeRevocations(m map[string]int64) (changed bool, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for k, at := range m {
		if !nkeys.IsValidPublicUserKey(k) {
			continue
		}
		if old, ok := a.revoked[k]; !ok || at > old {
			a.revoked[k] = at
			changed = true
		}
	}
	if !changed {
		return false, nil
	}
	if err := a.encodeJWTs(); err != nil {
		return false, err
	}
	if a.path == "" {
		return true, nil
	}
	return true, a.save()
}

// AgentPermissions are the rights an agent user gets: publish on its own
// three subjects only; subscribe to its own inbox and control subjects.
func AgentPermissions(nodeID string) jwt.Permissions {
	var p jwt.Permissions
	p.Pub.Allow.Add(AgentPublishSubjects(nodeID)...)
	p.Sub.Allow.Add(AgentInboxPrefix(nodeID)+".>", ControlAllSubject, AgentControlSubject(nodeID))
	return p
}

// IssueAgentJWT signs a user JWT for node nodeID holding user public nkey
// userPub. ttl 0 means no expiry.
func (a *Auth) IssueAgentJWT(nodeID, userPub string, ttl time.Duration) (string, error) {
	if !ValidNodeID(nodeID) {
		return "", fmt.Errorf("invalid node id %q", nodeID)
	}
	if !nkeys.IsValidPublicUserKey(userPub) {
		return "", errors.New("not a user public nkey")
	}
	uc := jwt.NewUserClaims(userPub)
	uc.Name = "agent:" + nodeID
	uc.IssuerAccount = a.AccountPublicKey()
	uc.Permissions = AgentPermissions(nodeID)
	uc.Limits.Payload = MaxEnvelopeBytes + 4096 // envelope plus headers
	uc.Limits.Subs = 16
	uc.Tags.Add("mamori-agent")
	if ttl > 0 {
		uc.Expires = time.Now().Add(ttl).Unix()
	}
	tok, err := uc.Encode(a.signer)
	if err != nil {
		return "", fmt.Errorf("sign agent jwt: %w", err)
	}
	return tok, nil
}

// ServerCreds mints a fresh unrestricted user (JWT and seed) for a mamori
// server replica. Each call makes a new key; nothing is stored.
func (a *Auth) ServerCreds(name string) (userJWT, seed string, err error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return "", "", fmt.Errorf("create server user: %w", err)
	}
	pub, _ := kp.PublicKey()
	s, _ := kp.Seed()
	uc := jwt.NewUserClaims(pub)
	uc.Name = "server:" + name
	uc.IssuerAccount = a.AccountPublicKey()
	if userJWT, err = uc.Encode(a.signer); err != nil {
		return "", "", fmt.Errorf("sign server jwt: %w", err)
	}
	return userJWT, string(s), nil
}

// writeFileAtomic writes data to path through a temporary file and rename, so
// a crash leaves either the old or the new content.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

package transport

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// Credentials are what an enrolled agent needs to reach the bus: its node id,
// its user JWT (signed by the server) and nkey seed (made on the node, never
// sent anywhere), the pinned CA and the NATS URLs.
type Credentials struct {
	NodeID   string   `json:"nodeId"`
	JWT      string   `json:"jwt"`
	Seed     string   `json:"seed"`
	CAPEM    []byte   `json:"caPem"`
	NATSURLs []string `json:"natsUrls"`
	// APIToken fetches the server's distributed rules and intel.
	APIToken string `json:"apiToken,omitempty"`
}

// CredentialsFile is where SaveCredentials puts them under a data dir.
func CredentialsFile(dataDir string) string {
	return filepath.Join(dataDir, "transport", "credentials.json")
}

// Validate checks the credentials are complete and consistent: the JWT names
// the seed's public key and the node id, and the CA parses.
func (c *Credentials) Validate() error {
	if !ValidNodeID(c.NodeID) {
		return fmt.Errorf("credentials: invalid node id %q", c.NodeID)
	}
	kp, err := nkeys.FromSeed([]byte(c.Seed))
	if err != nil {
		return fmt.Errorf("credentials: seed: %w", err)
	}
	pub, _ := kp.PublicKey()
	uc, err := jwt.DecodeUserClaims(c.JWT)
	if err != nil {
		return fmt.Errorf("credentials: jwt: %w", err)
	}
	if uc.Subject != pub {
		return errors.New("credentials: jwt is for another key")
	}
	if uc.Name != "agent:"+c.NodeID {
		return fmt.Errorf("credentials: jwt is for %q, not node %q", uc.Name, c.NodeID)
	}
	if _, err := ClientTLSConfig(c.CAPEM); err != nil {
		return fmt.Errorf("credentials: %w", err)
	}
	if len(c.NATSURLs) == 0 {
		return errors.New("credentials: no NATS URL")
	}
	return nil
}

// SaveCredentials writes c under dataDir with mode 0600 (directory 0700).
func SaveCredentials(dataDir string, c *Credentials) error {
	if err := c.Validate(); err != nil {
		return err
	}
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("credentials: %w", err)
	}
	if err := writeFileAtomic(CredentialsFile(dataDir), data, 0o600); err != nil {
		return fmt.Errorf("save credentials: %w", err)
	}
	return nil
}

// LoadCredentials reads what SaveCredentials wrote. It refuses a file that
// other users can read, since it holds the node's private key.
func LoadCredentials(dataDir string) (*Credentials, error) {
	path := CredentialsFile(dataDir)
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("load credentials: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("load credentials: %s is readable by others (mode %o); chmod 600 it", path, fi.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load credentials: %w", err)
	}
	var c Credentials
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("load credentials %s: %w", path, err)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// ErrCredentialRefused means the NATS servers refused the node's
// credential: the node was removed, or its key revoked.
var ErrCredentialRefused = errors.New("the server refused this node's credential (the node was removed or its key revoked)")

// ProbeCredentials connects once with c and reports ErrCredentialRefused
// when the servers refuse it, another error when they cannot be reached,
// nil when they accept it.
func ProbeCredentials(c *Credentials, timeout time.Duration) error {
	tc, err := ClientTLSConfig(c.CAPEM)
	if err != nil {
		return err
	}
	nc, err := nats.Connect(strings.Join(c.NATSURLs, ","), nats.UserJWTAndSeed(c.JWT, c.Seed), nats.Secure(tc),
		nats.Timeout(timeout), nats.NoReconnect(), nats.Name("mamori-agent "+c.NodeID+" probe"))
	if err != nil {
		if errors.Is(err, nats.ErrAuthorization) || strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
			return ErrCredentialRefused
		}
		return fmt.Errorf("reach NATS at %s: %w", strings.Join(c.NATSURLs, ","), err)
	}
	nc.Close()
	return nil
}

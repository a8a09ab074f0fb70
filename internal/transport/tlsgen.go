package transport

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// TLSMaterial is a private CA and a server certificate signed by it. Agents
// receive CAPEM at enrollment and trust nothing else for the NATS connection.
type TLSMaterial struct {
	CAPEM   []byte
	CACert  *x509.Certificate
	Cert    tls.Certificate // server certificate and key
	CertPEM []byte
}

// File names inside the TLS directory.
const (
	caCertFile     = "ca.pem"
	caKeyFile      = "ca-key.pem"
	serverCertFile = "server.pem"
	serverKeyFile  = "server-key.pem"
)

const (
	caValidity     = 10 * 365 * 24 * time.Hour
	serverValidity = 825 * 24 * time.Hour
	renewBefore    = 30 * 24 * time.Hour
)

// DefaultTLSHosts are the names and addresses every generated server
// certificate covers: loopback and this host's name.
func DefaultTLSHosts() []string {
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	if h, err := os.Hostname(); err == nil && h != "" {
		hosts = append(hosts, h)
	}
	return hosts
}

// LoadOrCreateTLS loads the CA and server certificate from dir, creating the
// CA on first use. The server certificate is re-issued (by the same CA) when
// missing, close to expiry, or not covering every name in hosts.
func LoadOrCreateTLS(dir string, hosts []string) (*TLSMaterial, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("tls dir: %w", err)
	}
	caCert, caKey, caPEM, err := loadOrCreateCA(dir)
	if err != nil {
		return nil, err
	}
	m := &TLSMaterial{CAPEM: caPEM, CACert: caCert}
	certPath, keyPath := filepath.Join(dir, serverCertFile), filepath.Join(dir, serverKeyFile)
	if c, err := tls.LoadX509KeyPair(certPath, keyPath); err == nil && c.Leaf != nil &&
		certFits(c.Leaf, caCert, hosts) {
		m.Cert = c
		m.CertPEM, _ = os.ReadFile(certPath)
		return m, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("server key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: "mamori-nats"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(serverValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("sign server certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("server key: %w", err)
	}
	m.CertPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if err := writeFileAtomic(keyPath, keyPEM, 0o600); err != nil {
		return nil, fmt.Errorf("write server key: %w", err)
	}
	if err := writeFileAtomic(certPath, m.CertPEM, 0o644); err != nil {
		return nil, fmt.Errorf("write server certificate: %w", err)
	}
	if m.Cert, err = tls.X509KeyPair(m.CertPEM, keyPEM); err != nil {
		return nil, fmt.Errorf("server key pair: %w", err)
	}
	return m, nil
}

func certFits(leaf, ca *x509.Certificate, hosts []string) bool {
	if time.Until(leaf.NotAfter) < renewBefore || leaf.CheckSignatureFrom(ca) != nil {
		return false
	}
	for _, h := range hosts {
		if h != "" && leaf.VerifyHostname(h) != nil {
			return false
		}
	}
	return true
}

func loadOrCreateCA(dir string) (*x509.Certificate, *ecdsa.PrivateKey, []byte, error) {
	certPath, keyPath := filepath.Join(dir, caCertFile), filepath.Join(dir, caKeyFile)
	if c, err := tls.LoadX509KeyPair(certPath, keyPath); err == nil {
		key, ok := c.PrivateKey.(*ecdsa.PrivateKey)
		if !ok || c.Leaf == nil || !c.Leaf.IsCA {
			return nil, nil, nil, errors.New("tls: existing CA is not an ECDSA CA")
		}
		caPEM, err := os.ReadFile(certPath)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("tls: %w", err)
		}
		return c.Leaf, key, caPEM, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil, fmt.Errorf("tls: load CA: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "mamori CA", Organization: []string{"mamori"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("create CA: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("CA key: %w", err)
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := writeFileAtomic(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, nil, nil, fmt.Errorf("write CA key: %w", err)
	}
	if err := writeFileAtomic(certPath, caPEM, 0o644); err != nil {
		return nil, nil, nil, fmt.Errorf("write CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("parse CA: %w", err)
	}
	return cert, key, caPEM, nil
}

func randomSerial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

// ServerTLSConfig is the tls.Config for the NATS listener.
func (m *TLSMaterial) ServerTLSConfig() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{m.Cert}, MinVersion: tls.VersionTLS12}
}

// ClientTLSConfig trusts only the CA in caPEM (the pinned CA from enrollment).
func ClientTLSConfig(caPEM []byte) (*tls.Config, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("tls: no CA certificate in PEM")
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// CAFingerprint is the hex SHA-256 of the first certificate in caPEM's DER
// form: what an operator compares or passes to Enroll to pin the CA.
func CAFingerprint(caPEM []byte) (string, error) {
	block, _ := pem.Decode(caPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return "", errors.New("tls: no certificate in PEM")
	}
	sum := sha256.Sum256(block.Bytes)
	return hex.EncodeToString(sum[:]), nil
}

// ServerTLSConfigWithCA is ServerTLSConfig presenting the CA after the
// server certificate, so a client that pins the CA by fingerprint
// (PinnedHTTPClient) finds it in the handshake.
func (m *TLSMaterial) ServerTLSConfigWithCA() *tls.Config {
	c := m.Cert
	c.Certificate = append(append([][]byte{}, c.Certificate...), m.CACert.Raw)
	return &tls.Config{Certificates: []tls.Certificate{c}, MinVersion: tls.VersionTLS12}
}

// NormalizeFingerprint accepts a CA's SHA-256 as mamori prints it (64 hex
// digits), with a "sha256:" prefix, or as openssl prints it ("SHA256
// Fingerprint=A4:F4:..."), and returns mamori's form.
func NormalizeFingerprint(s string) (string, error) {
	f := strings.TrimSpace(s)
	if i := strings.LastIndex(f, "="); i >= 0 {
		f = f[i+1:]
	}
	f = strings.ToLower(f)
	f = strings.TrimPrefix(f, "sha256:")
	f = strings.ReplaceAll(f, ":", "")
	if len(f) != 64 || strings.Trim(f, "0123456789abcdef") != "" {
		return "", fmt.Errorf("CA fingerprint %q: want the SHA-256 of the CA certificate, 64 hex digits (colons allowed), as mamori server prints it", s)
	}
	return f, nil
}

// PinnedHTTPClient is an HTTPS client trusting exactly one CA: the one whose
// CAFingerprint is fingerprint, which the server must present in its chain.
// The server certificate must be signed by it and name the host dialled.
// It lets an agent enroll over a server's self-signed TLS with nothing but a
// fingerprint the operator copied, as `kubeadm join` does with its CA hash.
func PinnedHTTPClient(fingerprint string, timeout time.Duration) *http.Client {
	want, err := NormalizeFingerprint(fingerprint)
	if err != nil {
		want = fingerprint // never matches: every connection is refused, naming it
	}
	conf := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Verification is done below, against the pinned CA only.
		InsecureSkipVerify: true, //nolint:gosec // replaced by VerifyConnection
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("tls: server presented no certificate")
			}
			roots := x509.NewCertPool()
			found := false
			for _, c := range cs.PeerCertificates[1:] {
				sum := sha256.Sum256(c.Raw)
				if hex.EncodeToString(sum[:]) == want && c.IsCA {
					roots.AddCert(c)
					found = true
				}
			}
			if !found {
				return fmt.Errorf("tls: server's CA does not match the pinned fingerprint %s", want)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, DNSName: cs.ServerName})
			if err != nil {
				return fmt.Errorf("tls: server certificate: %w", err)
			}
			return nil
		},
	}
	return &http.Client{Timeout: timeout, Transport: &http.Transport{TLSClientConfig: conf, Proxy: http.ProxyFromEnvironment}}
}

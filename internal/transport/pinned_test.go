package transport

import (
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// An agent holding only the CA's fingerprint reaches a server presenting
// that CA, and no other: not a server of another CA, not one hiding its CA,
// not one whose certificate names another host.
func TestPinnedHTTPClient(t *testing.T) {
	serve := func(t *testing.T, dir string, withCA bool, hosts ...string) (*httptest.Server, string) {
		t.Helper()
		m, err := LoadOrCreateTLS(dir, hosts)
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "hello") }))
		srv.TLS = m.ServerTLSConfig()
		if withCA {
			srv.TLS = m.ServerTLSConfigWithCA()
		}
		srv.StartTLS()
		t.Cleanup(srv.Close)
		fp, err := CAFingerprint(m.CAPEM)
		if err != nil {
			t.Fatal(err)
		}
		return srv, fp
	}
	get := func(fp, url string) error {
		res, err := PinnedHTTPClient(fp, 5*time.Second).Get(url)
		if err == nil {
			res.Body.Close()
		}
		return err
	}
	good, fp := serve(t, filepath.Join(t.TempDir(), "a"), true, "127.0.0.1")
	if err := get(fp, good.URL); err != nil {
		t.Fatalf("pinned CA refused: %v", err)
	}
	if err := get("sha256:"+strings.ToUpper(fp), good.URL); err != nil {
		t.Fatalf("fingerprint with prefix and upper case refused: %v", err)
	}
	other, _ := serve(t, filepath.Join(t.TempDir(), "b"), true, "127.0.0.1")
	if err := get(fp, other.URL); err == nil || !strings.Contains(err.Error(), "pinned fingerprint") {
		t.Fatalf("server of another CA accepted: %v", err)
	}
	hidden, hfp := serve(t, filepath.Join(t.TempDir(), "c"), false, "127.0.0.1")
	if err := get(hfp, hidden.URL); err == nil {
		t.Fatal("server not presenting its CA accepted")
	}
	wrongHost, wfp := serve(t, filepath.Join(t.TempDir(), "d"), true, "mamori.example")
	// DefaultTLSHosts always adds loopback; dial by the VM's own hostname
	// would match too, so check the name check with a name it lacks.
	req, _ := http.NewRequest(http.MethodGet, wrongHost.URL, nil)
	req.Host = "elsewhere.example"
	c := PinnedHTTPClient(wfp, 5*time.Second)
	c.Transport.(*http.Transport).TLSClientConfig.ServerName = "elsewhere.example"
	if res, err := c.Do(req); err == nil {
		res.Body.Close()
		t.Fatal("certificate for other names accepted")
	}
}

func TestNormalizeFingerprint(t *testing.T) {
	want := strings.Repeat("a4f4", 16)
	for _, in := range []string{want, "sha256:" + want, strings.ToUpper(want),
		"SHA256 Fingerprint=" + strings.TrimSuffix(strings.Repeat("A4:F4:", 16), ":")} {
		if got, err := NormalizeFingerprint(in); err != nil || got != want {
			t.Errorf("NormalizeFingerprint(%q) = %q, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "abc", want + "00", strings.Repeat("zz", 32)} {
		if _, err := NormalizeFingerprint(in); err == nil {
			t.Errorf("NormalizeFingerprint(%q) accepted", in)
		}
	}
}

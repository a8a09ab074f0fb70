package transport

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/nats-io/nkeys"
)

// FuzzEnrollHandler feeds arbitrary bodies to the enrollment endpoint, the
// one ingress reachable without any credential. Whatever arrives, the
// handler answers a client error (never 5xx, never a panic), and only a
// request carrying the valid token enrolls.
func FuzzEnrollHandler(f *testing.F) {
	dir := f.TempDir()
	auth, err := LoadOrCreateAuth(filepath.Join(dir, "auth.json"))
	if err != nil {
		f.Fatal(err)
	}
	tlsm, err := LoadOrCreateTLS(filepath.Join(dir, "tls"), []string{"127.0.0.1"})
	if err != nil {
		f.Fatal(err)
	}
	tokens := NewTokens(NewMemStore[TokenRecord]())
	valid, _, err := tokens.Create(f.Context(), TokenOptions{MaxUses: UnlimitedUses, TTL: -1})
	if err != nil {
		f.Fatal(err)
	}
	enr, err := NewEnroller(EnrollerConfig{Auth: auth, Tokens: tokens, Nodes: NewMemStore[NodeRecord](),
		NATSURLs: []string{"tls://127.0.0.1:4222"}, CAPEM: tlsm.CAPEM})
	if err != nil {
		f.Fatal(err)
	}
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	good, _ := json.Marshal(EnrollRequest{Token: valid, NodeID: "fuzz-1", PublicKey: pub})
	f.Add(good)
	f.Add([]byte(`{"token":"x","nodeId":"n","publicKey":"U"}`))
	f.Add([]byte(`{"token":"` + valid + `","nodeId":"../../etc","publicKey":"` + pub + `"}`))
	f.Add([]byte(`{"token":"` + valid + `","nodeId":"n1","publicKey":"` + pub + `","cluster":"a b"}`))
	f.Add([]byte(`{"token":"` + valid + `","nodeId":"n1","publicKey":"` + pub + `","extra":1}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"token":null}`))
	f.Add(bytes.Repeat([]byte("{"), 70000))
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, EnrollPath, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		enr.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("enrollment answered %d to %q: %s", rec.Code, body, rec.Body)
		}
		if rec.Code == http.StatusOK {
			var r EnrollRequest
			if json.Unmarshal(body, &r) != nil || r.Token != valid {
				t.Fatalf("enrolled without the valid token: %q", body)
			}
		}
	})
}

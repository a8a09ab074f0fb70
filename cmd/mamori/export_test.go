package main

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mamori-dev/mamori/internal/finding"
	"github.com/mamori-dev/mamori/internal/server/api"
	"github.com/mamori-dev/mamori/internal/server/export"
)

// TestExportOutlivesKill: findings stored while the webhook receiver is
// down, and updates held for the update frequency, are not lost when the
// server is killed with SIGKILL: after a restart every new finding reaches
// the receiver, once, and the updates still wait in the outbox.
func TestExportOutlivesKill(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dir := t.TempDir()
	var up atomic.Bool
	var refused atomic.Int64
	rcv := &hook{}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !up.Load() {
			refused.Add(1)
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		rcv.ServeHTTP(w, r)
	}))
	defer hs.Close()
	args := []string{"--api-addr", "127.0.0.1:0", "--export-webhook", hs.URL, "--export-format", "ocsf",
		"--export-update-frequency", "15m"}
	srv, _, _, _, _ := startServerProcess(t, dir, args...)
	d := "--data-dir=" + dir
	var samples api.SamplesResponse
	cliJSON(t, &samples, "findings", "samples", d)
	n := len(finding.Catalogue)
	if samples.Created != n {
		t.Fatalf("samples %d", samples.Created)
	}
	deadline := time.Now().Add(15 * time.Second)
	for refused.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if refused.Load() < 3 {
		t.Fatalf("the webhook did not try the down receiver: %d attempts", refused.Load())
	}
	cliJSON(t, &samples, "findings", "samples", d) // updates, held 15 minutes
	if err := srv.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = srv.Wait()

	up.Store(true)
	_, _, _, url, admin := startServerProcess(t, dir, args...)
	deadline = time.Now().Add(20 * time.Second)
	for len(rcv.snapshot()) < n && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // a duplicate would arrive now
	recs := rcv.snapshot()
	ids := map[string]bool{}
	for _, r := range recs {
		if r.ActivityID != export.OCSFActivityCreate {
			t.Errorf("record %s: activity %d before the update frequency", r.FindingInfo.UID, r.ActivityID)
		}
		ids[r.FindingInfo.UID] = true
	}
	if len(recs) != n || len(ids) != n {
		t.Fatalf("after the kill and restart the receiver got %d records for %d findings, want each of the %d once", len(recs), len(ids), n)
	}
	if pending := metricValue(t, url, admin, `mamori_export_outbox_pending{sink="webhook-0"}`); pending != float64(n) {
		t.Fatalf("updates waiting in the outbox after the restart: %v, want %d", pending, n)
	}
}

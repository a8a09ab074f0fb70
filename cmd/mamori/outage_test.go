package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mamori-dev/mamori/internal/server/coverage"
	"github.com/mamori-dev/mamori/internal/server/store/storetest"
	"github.com/mamori-dev/mamori/internal/testenv"
	"github.com/mamori-dev/mamori/internal/transport"
)

// TestServerThroughADatabaseOutage runs `mamori server` on PostgreSQL and
// stops the database under it for longer than a node's silence limit,
// while an enrolled agent (its real publisher, simulated detections)
// keeps reporting: /health says degraded meanwhile; afterwards every
// finding is stored once, and coverage never called the node silent. (The
// node's queued heartbeats are stored within a sweep of the recovery here,
// so this run does not need the outage named; the naming itself is
// TestSilenceWhileTheServerRefuses's and TestOutageBoardMergesReplicas's.)
func TestServerThroughADatabaseOutage(t *testing.T) {
	pg := storetest.PrivatePostgres(t)
	dir := t.TempDir()
	apiPort, natsPort := testenv.FreePort(t), testenv.FreePort(t)
	testenv.StartProcess(t, "", "server", mamoriBinary(t), "server", "--data-dir", dir, "--store", pg.DSN(),
		"--api-addr", "127.0.0.1:"+strconv.Itoa(apiPort), "--nats-port", strconv.Itoa(natsPort))
	token, url := testenv.WaitFile(t, filepath.Join(dir, "join-token")), testenv.WaitFile(t, filepath.Join(dir, "api", "address"))
	admin := testenv.WaitFile(t, filepath.Join(dir, "api", "admin.token"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const node = "node-db"
	creds, err := transport.Enroll(ctx, transport.EnrollOptions{URL: url + transport.EnrollPath, Token: token, NodeID: node})
	if err != nil {
		t.Fatalf("enroll: %v", err)
	}
	pub, err := transport.NewPublisher(transport.PublisherConfig{Creds: creds, SpoolDir: t.TempDir(), AckTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close(context.Background())

	// Heartbeats every second, announcing a 2 s interval: silent after 6 s.
	started := time.Now().UTC()
	go func() {
		for ctx.Err() == nil {
			now := time.Now().UTC()
			_, _ = pub.Publish(transport.KindHeartbeat, coverage.Heartbeat{NodeID: node, Hostname: node, Platform: "host",
				AgentVersion: "test", Kernel: "6.18.0", BTF: true, Time: now, Started: started, IntervalSeconds: 2, LastEvent: now})
			time.Sleep(time.Second)
		}
	}()
	ids := map[string]bool{}
	detect := func(n int) {
		t.Helper()
		for range n {
			f := storetest.Finding(storetest.Spec{Node: node, Actor: fmt.Sprintf("/tmp/dropped-%d", len(ids))})
			if _, err := pub.Publish(transport.KindFinding, f); err != nil {
				t.Fatal(err)
			}
			ids[f.ID] = true
		}
	}
	get := func(path string, v any) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, url+"/api/v1"+path, nil)
		req.Header.Set("Authorization", "Bearer "+admin)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0
		}
		defer res.Body.Close()
		if res.StatusCode == http.StatusOK && v != nil {
			if err := json.NewDecoder(res.Body).Decode(v); err != nil {
				t.Fatalf("GET %s: %v", path, err)
			}
		}
		return res.StatusCode
	}
	stored := func() map[string]float64 {
		var page struct {
			Findings []struct {
				ID      string
				Service struct{ Count float64 }
			}
		}
		out := map[string]float64{}
		if get("/findings?limit=500", &page) == http.StatusOK {
			for _, f := range page.Findings {
				out[f.ID] = f.Service.Count
			}
		}
		return out
	}
	waitFor := func(what string, within time.Duration, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(within); !cond(); time.Sleep(200 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out after %v waiting for %s", within, what)
			}
		}
	}
	healthy := func() bool {
		var n struct{ Status, Issue string }
		return get("/coverage/"+node, &n) == http.StatusOK && n.Status == coverage.Healthy
	}
	var health struct {
		Status   string
		Problems []string
	}

	waitFor("the node Healthy", 30*time.Second, healthy)
	detect(20)
	waitFor("the first findings stored", 30*time.Second, func() bool { return len(stored()) == 20 })

	pg.Stop()
	detect(20)
	waitFor("/health degraded", 30*time.Second, func() bool {
		return get("/health", &health) == http.StatusOK && health.Status == "degraded" &&
			len(health.Problems) == 1 && strings.HasPrefix(health.Problems[0], "database unavailable since ")
	})
	time.Sleep(10 * time.Second) // past the node's silence limit
	pg.Start()

	waitFor("every finding stored", 90*time.Second, func() bool { return len(stored()) == len(ids) })
	for id, count := range stored() {
		if !ids[id] || count != 1 {
			t.Errorf("finding %s stored with count %v (sent: %v)", id, count, ids[id])
		}
	}
	waitFor("the node Healthy again", 60*time.Second, healthy)
	waitFor("/health ok", 30*time.Second, func() bool { return get("/health", &health) == http.StatusOK && health.Status == "ok" })
	var evs struct {
		Events []struct{ To, Issue string }
	}
	if get("/coverage/events", &evs) != http.StatusOK {
		t.Fatal("coverage events unreadable")
	}
	for _, e := range evs.Events {
		if strings.HasPrefix(e.Issue, coverage.IssueNotReporting) {
			t.Errorf("the node was called silent through the database outage: %+v", e)
		}
	}
	t.Logf("coverage transitions: %+v", evs.Events)
}

// Package cluster tests mamori's distributed control plane as it runs at
// scale: three real nats-server processes forming a JetStream cluster, two
// `mamori server` replicas joined to it by URL and sharing one real
// PostgreSQL, and agents enrolled by join token. The agents here are the
// agent's own transport code (enrollment, publisher, spool) driven by the
// test, so findings can be counted exactly; the full agent binary's path
// over the same code is covered by test/e2e.
package cluster

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mamori-dev/mamori/internal/finding"
	"github.com/mamori-dev/mamori/internal/server/api"
	"github.com/mamori-dev/mamori/internal/server/store/storetest"
	"github.com/mamori-dev/mamori/internal/testenv"
	"github.com/mamori-dev/mamori/internal/transport"
)

func TestMain(m *testing.M) { storetest.Main(m) }

func build(t *testing.T, dir, out, pkg string) string {
	t.Helper()
	bin := filepath.Join(dir, out)
	if b, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", pkg, err, b)
	}
	return bin
}

func waitFor(t *testing.T, within time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// natsCluster starts three nats-server processes (built from the nats-server
// module mamori depends on) that trust the installation through the
// fragment `mamori server nats-config` prints.
type natsCluster struct {
	urls  []string
	procs []*testenv.Process
	bin   string
	dirs  []string
}

// restart starts server i again on its config and store.
func (c *natsCluster) restart(t *testing.T, i int) {
	t.Helper()
	c.procs[i] = testenv.StartProcess(t, c.dirs[i], fmt.Sprintf("nats-%d-again", i), c.bin, "-c", filepath.Join(c.dirs[i], "nats.conf"))
}

func startNATS(t *testing.T, natsBin, fragment string) *natsCluster {
	t.Helper()
	c := &natsCluster{bin: natsBin}
	ports := []int{testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t)}
	routes := []int{testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t)}
	for i := range 3 {
		dir := t.TempDir()
		var rs []string
		for j, r := range routes {
			if j != i {
				rs = append(rs, fmt.Sprintf("nats-route://127.0.0.1:%d", r))
			}
		}
		conf := fmt.Sprintf(`server_name: n%d
listen: 127.0.0.1:%d
include "mamori.conf"
jetstream { store_dir: %q }
cluster { name: mamori-test, listen: 127.0.0.1:%d, routes: [%s] }
`, i, ports[i], filepath.Join(dir, "js"), routes[i], strings.Join(rs, ", "))
		// include paths are relative to the including file.
		frag, err := os.ReadFile(fragment)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "mamori.conf"), frag, 0o600); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "nats.conf")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		c.dirs = append(c.dirs, dir)
		c.procs = append(c.procs, testenv.StartProcess(t, dir, fmt.Sprintf("nats-%d", i), natsBin, "-c", path))
		c.urls = append(c.urls, fmt.Sprintf("tls://127.0.0.1:%d", ports[i]))
	}
	for _, u := range c.urls {
		addr := strings.TrimPrefix(u, "tls://")
		waitFor(t, 30*time.Second, "nats-server at "+addr, func() bool {
			conn, err := net.Dial("tcp", addr)
			if err == nil {
				conn.Close()
			}
			return err == nil
		})
	}
	return c
}

// replica is one `mamori server` joined to the cluster.
type replica struct {
	*testenv.Process
	dataDir string
	client  *api.Client
	base    string // API URL
	enroll  string // enrollment URL
}

func startReplica(t *testing.T, bin, name, dataDir string, args ...string) *replica {
	t.Helper()
	_ = os.Remove(filepath.Join(dataDir, "api", "address"))
	all := append([]string{bin, "server", "--data-dir", dataDir, "--api-addr", "127.0.0.1:0", "--no-console"}, args...)
	p := testenv.StartProcess(t, "", name, all...)
	r := &replica{Process: p, dataDir: dataDir}
	waitFor(t, 150*time.Second, name+" API address", func() bool {
		_, err := os.Stat(filepath.Join(dataDir, "api", "address"))
		if p.Exited() {
			t.Fatalf("%s exited: %v", name, p.Cmd.ProcessState)
		}
		return err == nil
	})
	base, tok, err := api.LocalFor(dataDir).Read()
	if err != nil {
		t.Fatal(err)
	}
	if r.client, err = api.NewClient(base, tok); err != nil {
		t.Fatal(err)
	}
	r.base = base
	r.enroll = strings.TrimSuffix(base, "/") + transport.EnrollPath
	return r
}

func (r *replica) joinToken(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(r.dataDir, "join-token"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// createAPIToken makes a read token through r's API.
func createAPIToken(t *testing.T, r *replica, name string) (token, id string) {
	t.Helper()
	resp, err := r.client.CreateToken(context.Background(), api.TokenRequest{Name: name, Scope: api.ScopeRead})
	if err != nil {
		t.Fatalf("create API token on %s: %v", r.Name, err)
	}
	return resp.Value, resp.ID
}

// findingCounts lists every stored finding's id and count through r's API.
func (r *replica) findingCounts(t *testing.T) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	q := url.Values{"limit": {"500"}}
	for {
		page, err := r.client.ListFindings(context.Background(), q)
		if err != nil {
			t.Fatalf("list findings: %v", err)
		}
		for _, rec := range page.Findings {
			out[rec.Finding.ID] = rec.Finding.Service.Count
		}
		if page.Next == "" {
			return out
		}
		q.Set("cursor", page.Next)
	}
}

// agentSim is an enrolled node publishing through the agent's publisher.
type agentSim struct {
	node  string
	creds *transport.Credentials
	pub   *transport.Publisher
	made  map[int]*finding.Finding // the agent's aggregated findings
}

func enrollAgent(t *testing.T, r *replica, token, node string) *agentSim {
	t.Helper()
	creds, err := transport.Enroll(context.Background(), transport.EnrollOptions{URL: r.enroll, Token: token, NodeID: node, Cluster: "prod"})
	if err != nil {
		t.Fatalf("enroll %s through %s: %v", node, r.Name, err)
	}
	pub, err := transport.NewPublisher(transport.PublisherConfig{Creds: creds, SpoolDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = pub.Close(ctx)
	})
	return &agentSim{node: node, creds: creds, pub: pub, made: map[int]*finding.Finding{}}
}

// report publishes findings i in [from, to) of this node with cumulative
// count: new ones, or updates of the ones it made (same id and creation
// time, as the agent's aggregator sends them).
func (a *agentSim) report(t *testing.T, from, to int, count int64, want map[string]int64) {
	t.Helper()
	for i := from; i < to; i++ {
		f := a.made[i]
		if f == nil {
			f = storetest.Finding(storetest.Spec{Node: a.node, Actor: fmt.Sprintf("/tmp/dropped-%d", i)})
			a.made[i] = f
		}
		f.Service.Count = count
		f.UpdatedAt = time.Now().UTC()
		if _, err := a.pub.Publish(transport.KindFinding, f); err != nil {
			t.Fatalf("publish: %v", err)
		}
		want[f.ID] = count
	}
}

// connectsWith reports whether creds are accepted by the NATS server at u.
func connectsWith(creds *transport.Credentials, u string) bool {
	tc, err := transport.ClientTLSConfig(creds.CAPEM)
	if err != nil {
		return false
	}
	nc, err := nats.Connect(u, nats.UserJWTAndSeed(creds.JWT, creds.Seed), nats.Secure(tc), nats.NoReconnect(),
		nats.Timeout(3*time.Second))
	if err != nil {
		return false
	}
	defer nc.Close()
	return nc.FlushTimeout(3*time.Second) == nil
}

func sameCounts(got, want map[string]int64) string {
	if len(got) != len(want) {
		return fmt.Sprintf("%d findings stored, want %d", len(got), len(want))
	}
	for id, c := range want {
		if got[id] != c {
			return fmt.Sprintf("finding %s: count %d, want %d", id, got[id], c)
		}
	}
	return ""
}

// Two replicas on a three-server NATS cluster and one PostgreSQL: agents
// enroll through either, every finding is stored once with merged counts,
// a replica and a NATS server killed with SIGKILL lose nothing, the other
// replica sees the first one's enrollments, and a revocation made by one
// replica holds on every NATS server.
func TestReplicasOnExternalNATSCluster(t *testing.T) {
	dsn := storetest.PostgresDSN(t)
	dir := t.TempDir()
	bin := build(t, dir, "mamori", "github.com/mamori-dev/mamori/cmd/mamori")
	natsBin := build(t, dir, "nats-server", "github.com/nats-io/nats-server/v2")

	install := filepath.Join(dir, "install")
	frag := filepath.Join(dir, "mamori-nats.conf")
	if b, err := exec.Command(bin, "server", "nats-config", "--data-dir", install, "--out", frag).CombinedOutput(); err != nil {
		t.Fatalf("nats-config: %v\n%s", err, b)
	}
	cluster := startNATS(t, natsBin, frag)
	authFile, tlsDir, _ := transport.EmbeddedPaths(install)
	common := []string{"--nats-url", strings.Join(cluster.urls, ","), "--nats-auth", authFile,
		"--nats-ca", filepath.Join(tlsDir, "ca.pem"), "--nats-replicas", "3", "--store", dsn}
	// Replica 2 mounts its own copy of the auth file, as from a secret made
	// before any revocation: the cluster, not the file, must carry them.
	authCopy := filepath.Join(dir, "auth-copy.json")
	if b, err := os.ReadFile(authFile); err != nil || os.WriteFile(authCopy, b, 0o600) != nil {
		t.Fatalf("copy auth file: %v", err)
	}
	r1 := startReplica(t, bin, "replica-1", filepath.Join(dir, "r1"), common...)
	r2args := append(append([]string{}, common...), "--nats-auth", authCopy)
	r2 := startReplica(t, bin, "replica-2", filepath.Join(dir, "r2"), r2args...)

	// API tokens live in the cluster too: one made through replica 1 reads
	// through replica 2, and revoking it there shuts it out of both.
	madeToken, madeID := createAPIToken(t, r1, "cluster reader")
	shared, _ := api.NewClient(r2.base, madeToken)
	if _, err := shared.ListFindings(context.Background(), nil); err != nil {
		t.Fatalf("replica 1's token refused by replica 2: %v", err)
	}
	if err := r2.client.RevokeToken(context.Background(), madeID); err != nil {
		t.Fatalf("revoke through replica 2: %v", err)
	}
	other, _ := api.NewClient(r1.base, madeToken)
	if _, err := other.ListFindings(context.Background(), nil); !api.IsStatus(err, 401) {
		t.Fatalf("token revoked on replica 2 still works on replica 1: %v", err)
	}

	// Join tokens live in the cluster: replica 2 honours replica 1's.
	a := enrollAgent(t, r1, r1.joinToken(t), "node-a")
	b := enrollAgent(t, r2, r1.joinToken(t), "node-b")
	if len(a.creds.NATSURLs) != 3 {
		t.Fatalf("agent got NATS URLs %v, want the cluster's three", a.creds.NATSURLs)
	}
	// Enrollment through replica 1 shows in replica 2's coverage.
	waitFor(t, 20*time.Second, "node-a listed by replica 2 as not reporting", func() bool {
		nodes, err := r2.client.Coverage(context.Background(), nil)
		if err != nil {
			return false
		}
		for _, n := range nodes {
			if n.NodeID == "node-a" && strings.HasPrefix(n.Issue, "NO_HEARTBEAT:") {
				return true
			}
		}
		return false
	})

	// Both replicas learn of node-a's first transition (one logged it, the
	// other read it from the log) and publish it: the stream keeps one.
	time.Sleep(3 * time.Second)
	if n := coverageEvents(t, cluster.urls, authFile, tlsDir, "node-a"); n != 1 {
		t.Fatalf("node-a's enrollment transition published %d times, want once", n)
	}

	want := map[string]int64{}
	a.report(t, 0, 40, 1, want)
	b.report(t, 0, 40, 1, want)
	waitFor(t, 60*time.Second, "80 findings stored", func() bool { return sameCounts(r2.findingCounts(t), want) == "" })

	// SIGKILL replica 1 and one NATS server, keep reporting: updates of the
	// first findings (cumulative count 2) and new ones.
	r1.Kill()
	cluster.procs[0].Kill()
	a.report(t, 0, 40, 2, want)
	b.report(t, 0, 40, 2, want)
	a.report(t, 40, 80, 1, want)
	b.report(t, 40, 80, 1, want)
	var diff string
	deadline := time.Now().Add(90 * time.Second)
	for diff = sameCounts(r2.findingCounts(t), want); diff != ""; diff = sameCounts(r2.findingCounts(t), want) {
		if time.Now().After(deadline) {
			t.Fatalf("after the kills, within 90s: %s; %s", diff, streamState(t, cluster.urls[1:], authFile, tlsDir))
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(3 * time.Second) // redeliveries, if any, would land now
	if diff = sameCounts(r2.findingCounts(t), want); diff != "" {
		t.Fatalf("after settling: %s", diff)
	}

	// Replica 1 comes back on the shared store and sees the same.
	r1 = startReplica(t, bin, "replica-1b", filepath.Join(dir, "r1"), common...)
	if diff = sameCounts(r1.findingCounts(t), want); diff != "" {
		t.Fatalf("restarted replica 1: %s", diff)
	}

	// Revocation: node-a re-enrolls with a new key through replica 1 (the
	// test, holding the installation's keys, mints a rebind token as an
	// operator would); the old key must be refused by the NATS servers.
	ctx := context.Background()
	auth, err := transport.LoadOrCreateAuth(authFile)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, _ := os.ReadFile(filepath.Join(tlsDir, "ca.pem"))
	admin, err := transport.ConnectServer(ctx, transport.ServerConnConfig{URLs: cluster.urls[1:], Auth: auth, CAPEM: caPEM, Name: "test-admin"})
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	js, _ := jetstream.New(admin)
	kv, err := transport.NewKVStore[transport.TokenRecord](ctx, js, transport.TokenBucket, 3)
	if err != nil {
		t.Fatal(err)
	}
	rebind, _, err := transport.NewTokens(kv).Create(ctx, transport.TokenOptions{AllowRebind: true, Description: "test rebind"})
	if err != nil {
		t.Fatal(err)
	}
	old := a.creds
	for _, u := range cluster.urls[1:] {
		if !connectsWith(old, u) {
			t.Fatalf("node-a's credential refused by %s before revocation", u)
		}
	}
	a2 := enrollAgent(t, r1, rebind, "node-a")
	for _, u := range cluster.urls[1:] {
		waitFor(t, 15*time.Second, "old node-a key refused by "+u, func() bool { return !connectsWith(old, u) })
		if !connectsWith(a2.creds, u) {
			t.Fatalf("node-a's new credential refused by %s", u)
		}
	}
	// Replica 2 did not make the revocation and its auth file predates it;
	// restarting it must not undo it (it pushes the account JWT at start).
	r2.Stop()
	r2 = startReplica(t, bin, "replica-2b", filepath.Join(dir, "r2"), r2args...)
	for _, u := range cluster.urls[1:] {
		if connectsWith(old, u) {
			t.Fatalf("revocation undone by replica 2's restart (%s)", u)
		}
	}
	// An operator lists and removes agents through the CLI: removing node-b
	// on replica 2 revokes its credential everywhere; a join token made
	// there enrolls a new node.
	cli := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(bin, append(args, "--data-dir", filepath.Join(dir, "r2"))...).CombinedOutput()
		if err != nil {
			t.Fatalf("mamori %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	if out := cli("agents", "list"); !strings.Contains(out, "node-a") || !strings.Contains(out, "node-b") {
		t.Fatalf("agents list:\n%s", out)
	}
	cli("agents", "remove", "node-b")
	for _, u := range cluster.urls[1:] {
		waitFor(t, 15*time.Second, "removed node-b refused by "+u, func() bool { return !connectsWith(b.creds, u) })
	}
	fresh := strings.TrimSpace(cli("agents", "join-token", "--ttl", "10m"))
	enrollAgent(t, r1, fresh, "node-c")
	if out := cli("agents", "list"); strings.Contains(out, "node-b") || !strings.Contains(out, "node-c") {
		t.Fatalf("agents list after remove and a new enrollment:\n%s", out)
	}

	// The NATS server that was down during the revocation comes back with
	// the old account JWT; the replicas' periodic push (every 10s) fixes it.
	cluster.restart(t, 0)
	waitFor(t, 30*time.Second, "restarted nats-0 to accept node-a's new key", func() bool { return connectsWith(a2.creds, cluster.urls[0]) })
	waitFor(t, 30*time.Second, "restarted nats-0 to refuse node-a's revoked key", func() bool { return !connectsWith(old, cluster.urls[0]) })
}

// streamState describes the transport stream and ingest consumer (for
// failure messages).
func streamState(t *testing.T, urls []string, authFile, tlsDir string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	auth, err := transport.LoadOrCreateAuth(authFile)
	if err != nil {
		return err.Error()
	}
	caPEM, _ := os.ReadFile(filepath.Join(tlsDir, "ca.pem"))
	nc, err := transport.ConnectServer(ctx, transport.ServerConnConfig{URLs: urls, Auth: auth, CAPEM: caPEM, Name: "test-debug"})
	if err != nil {
		return err.Error()
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	st, err := js.Stream(ctx, transport.StreamName)
	if err != nil {
		return "stream: " + err.Error()
	}
	si, _ := st.Info(ctx)
	out := fmt.Sprintf("stream msgs=%d leader=%v", si.State.Msgs, si.Cluster)
	for ci := range st.ListConsumers(ctx).Info() {
		out += fmt.Sprintf("; consumer %s delivered=%d ackfloor=%d pending=%d ackpending=%d redelivered=%d leader=%v",
			ci.Name, ci.Delivered.Stream, ci.AckFloor.Stream, ci.NumPending, ci.NumAckPending, ci.NumRedelivered, ci.Cluster)
	}
	return out
}

// coverageEvents counts the coverage transitions of node on the event stream.
func coverageEvents(t *testing.T, urls []string, authFile, tlsDir, node string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	auth, err := transport.LoadOrCreateAuth(authFile)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, _ := os.ReadFile(filepath.Join(tlsDir, "ca.pem"))
	nc, err := transport.ConnectServer(ctx, transport.ServerConnConfig{URLs: urls, Auth: auth, CAPEM: caPEM, Name: "test-events"})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	st, err := js.Stream(ctx, transport.EventStreamName)
	if err != nil {
		t.Fatalf("event stream: %v", err)
	}
	subj := transport.CoverageEventSubject(node)
	si, err := st.Info(ctx, jetstream.WithSubjectFilter(subj))
	if err != nil {
		t.Fatal(err)
	}
	return si.State.Subjects[subj]
}

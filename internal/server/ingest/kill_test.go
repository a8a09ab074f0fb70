package ingest_test

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mamori-dev/mamori/internal/finding"
	"github.com/mamori-dev/mamori/internal/server/ingest"
	"github.com/mamori-dev/mamori/internal/server/store"
	"github.com/mamori-dev/mamori/internal/server/store/storetest"
)

// TestKillDuringIngest kills a server process (this test binary re-run as
// a helper) with SIGKILL while it ingests, then restarts ingestion with
// every message delivered again, as JetStream would redeliver what was not
// acknowledged (and, to be harsh, what was). Nothing the helper
// acknowledged may be missing after the kill, and at the end every finding
// has exactly the count its agents reported: none lost, none twice.
func TestKillDuringIngest(t *testing.T) {
	if testing.Short() {
		t.Skip("re-executes the test binary")
	}
	for _, engine := range storetest.Engines {
		t.Run(engine, func(t *testing.T) {
			dsn := storetest.DSN(t, engine)
			s := agentStream(t, 42, 4, 50, 2, 6)
			file := filepath.Join(t.TempDir(), "messages.json")
			if err := os.WriteFile(file, mustJSON(t, s.Msgs), 0o600); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(os.Args[0], "-test.run=^TestIngestHelperProcess$")
			cmd.Env = append(os.Environ(), "MAMORI_INGEST_HELPER=1", "MAMORI_HELPER_DSN="+dsn, "MAMORI_HELPER_MSGS="+file)
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			acked := map[int]bool{}
			killAt := len(s.Msgs) / 3
			sc := bufio.NewScanner(out)
			killed := false
			for sc.Scan() {
				i, ok := strings.CutPrefix(sc.Text(), "ack ")
				if !ok {
					continue
				}
				n, _ := strconv.Atoi(i)
				acked[n] = true
				if len(acked) == killAt && !killed {
					if err := cmd.Process.Kill(); err != nil { // SIGKILL
						t.Fatal(err)
					}
					killed = true
				}
			}
			err = cmd.Wait()
			if !killed {
				t.Fatalf("helper ended before the kill (%d acks): %v", len(acked), err)
			}
			t.Logf("killed after %d of %d messages acknowledged", len(acked), len(s.Msgs))
			if len(acked) >= len(s.Msgs) {
				t.Fatal("the helper finished before it was killed")
			}

			ctx := context.Background()
			if engine == store.EngineSQLite {
				db, _ := sql.Open("sqlite", strings.TrimPrefix(dsn, "sqlite:"))
				var res string
				if err := db.QueryRow("PRAGMA integrity_check").Scan(&res); err != nil || res != "ok" {
					t.Fatalf("integrity check after kill: %q %v", res, err)
				}
				db.Close()
			}
			st, err := store.Open(ctx, dsn, store.Options{})
			if err != nil {
				t.Fatalf("reopen after kill: %v", err)
			}
			defer st.Close()
			// Every acknowledged message's count must be in: per finding, at
			// least the sum over epochs of the highest acknowledged cumulative.
			minWant := map[string]int64{}
			best := map[string]int64{}
			for i := range acked {
				var f finding.Finding
				if err := json.Unmarshal(s.Msgs[i].Payload, &f); err != nil {
					t.Fatal(err)
				}
				k := f.ID + "|" + s.Msgs[i].NodeID + "|" + f.CreatedAt.String()
				best[k] = max(best[k], f.Service.Count)
			}
			for k, v := range best {
				minWant[strings.SplitN(k, "|", 2)[0]] += v
			}
			for id, want := range minWant {
				got, err := st.GetFinding(ctx, id)
				if err != nil {
					t.Errorf("acknowledged finding %s lost: %v", id, err)
					continue
				}
				if got.Service.Count < want {
					t.Errorf("finding %s: count %d after the kill, acknowledged %d", id, got.Service.Count, want)
				}
				if got.Service.Count > s.Want[id] {
					t.Errorf("finding %s: count %d exceeds what agents reported (%d)", id, got.Service.Count, s.Want[id])
				}
			}

			// Restart: everything is delivered again.
			in := newIngester(t, st, ingest.Config{})
			applyAll(t, in, s.Msgs, 8)
			checkCounts(t, st, s.Want)
		})
	}
}

// TestIngestHelperProcess is the server process TestKillDuringIngest kills.
func TestIngestHelperProcess(t *testing.T) {
	if os.Getenv("MAMORI_INGEST_HELPER") != "1" {
		t.Skip("helper process of TestKillDuringIngest")
	}
	ctx := context.Background()
	st, err := store.Open(ctx, os.Getenv("MAMORI_HELPER_DSN"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(os.Getenv("MAMORI_HELPER_MSGS"))
	if err != nil {
		t.Fatal(err)
	}
	var msgs []ingest.Input
	if err := json.Unmarshal(b, &msgs); err != nil {
		t.Fatal(err)
	}
	in, err := ingest.New(ingest.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	next := 0
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= len(msgs) {
					return
				}
				if err := in.Apply(ctx, msgs[i]); err != nil {
					fmt.Fprintf(os.Stderr, "apply %d: %v\n", i, err)
					continue
				}
				// Acknowledged only after Apply returned: the message's effect is committed.
				mu.Lock()
				fmt.Fprintf(os.Stdout, "ack %d\n", i)
				mu.Unlock()
				time.Sleep(time.Millisecond) // let the parent kill us mid-stream
			}
		})
	}
	wg.Wait()
}

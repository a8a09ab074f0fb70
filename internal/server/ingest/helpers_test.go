package ingest_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/mamori-dev/mamori/internal/finding"
	"github.com/mamori-dev/mamori/internal/server/ingest"
	"github.com/mamori-dev/mamori/internal/server/store/storetest"
	"github.com/mamori-dev/mamori/internal/transport"
)

func TestMain(m *testing.M) { storetest.Main(m) }

// stream is what a set of agents would publish: findings whose cumulative
// counts grow within aggregation epochs, each message with its own id.
type stream struct {
	Msgs []ingest.Input
	// Want is each finding's correct final count.
	Want map[string]int64
}

// agentStream builds messages of nodes × findings × epochs × steps, shuffled
// within bounds the way concurrent delivery reorders them.
func agentStream(t testing.TB, seed uint64, nodes, findings, epochs, steps int) stream {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed+1))
	s := stream{Want: map[string]int64{}}
	base := time.Now().UTC().Add(-2 * time.Hour).Truncate(time.Microsecond)
	for n := range nodes {
		node := fmt.Sprintf("node-%d", n)
		for fi := range findings {
			for ep := range epochs {
				spec := storetest.Spec{Node: node, Actor: fmt.Sprintf("/opt/bin/tool-%d", fi),
					Container: fmt.Sprintf("ctr-%d", fi%3), Seen: base.Add(time.Duration(ep) * time.Minute)}
				f := storetest.Finding(spec)
				var cum int64
				for st := range steps {
					cum += int64(1 + rng.IntN(3))
					c := *f
					c.Service.Count = cum
					c.Service.EventLastSeen = f.Service.EventFirstSeen.Add(time.Duration(st) * time.Second)
					s.Msgs = append(s.Msgs, input(t, node, transport.KindFinding, &c))
				}
				s.Want[f.ID] += cum
			}
		}
	}
	rng.Shuffle(len(s.Msgs), func(i, j int) { s.Msgs[i], s.Msgs[j] = s.Msgs[j], s.Msgs[i] })
	return s
}

// input wraps a payload as the transport would hand it over.
func input(t testing.TB, node string, kind transport.Kind, payload any) ingest.Input {
	t.Helper()
	env, err := transport.NewEnvelope(node, kind, payload)
	if err != nil {
		t.Fatal(err)
	}
	m := transport.Message{Envelope: env}
	return ingest.Input{Key: m.DedupKey(), NodeID: node, Kind: string(kind), SentAt: env.SentAt, Payload: env.Payload}
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func validFinding(node string) *finding.Finding {
	return storetest.Finding(storetest.Spec{Node: node, Actor: "/usr/bin/nc", Container: "c1", Image: "app:1"})
}

func fmtType(v any) string { return fmt.Sprintf("%T", v) }

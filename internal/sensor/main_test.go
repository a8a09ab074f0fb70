package sensor

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/mamori-dev/mamori/internal/event"
	"github.com/mamori-dev/mamori/internal/testenv"
)

// One sensor serves every test in the package: attaching ~100 programs
// takes seconds, and a real agent attaches once too.
var (
	shared     *Sensor
	sharedErr  error
	actorPath  string
	collected  = &collector{}
	setupOnce  sync.Once
	stopShared context.CancelFunc
)

func TestMain(m *testing.M) {
	code := m.Run()
	if stopShared != nil {
		stopShared()
	}
	if shared != nil {
		shared.Close()
	}
	if actorPath != "" {
		os.RemoveAll(filepath.Dir(actorPath))
	}
	os.Exit(code)
}

// collector keeps recent events for assertions.
type collector struct {
	mu      sync.Mutex
	events  []*event.Event
	trimmed int // events dropped from the front, so indexes stay absolute
}

func (c *collector) add(ev *event.Event) {
	c.mu.Lock()
	if len(c.events) > 200000 {
		c.trimmed += 100000
		c.events = append([]*event.Event(nil), c.events[100000:]...)
	}
	c.events = append(c.events, ev)
	c.mu.Unlock()
}

// since returns the events from absolute index abs on, and the next index.
func (c *collector) since(abs int) ([]*event.Event, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	i := abs - c.trimmed
	if i < 0 {
		i = 0
	}
	if i > len(c.events) {
		i = len(c.events)
	}
	out := c.events[i:]
	return out, c.trimmed + len(c.events)
}

// startSensor loads the shared sensor and builds the actor binary.
func startSensor(t *testing.T) *Sensor {
	t.Helper()
	testenv.RequireBPF(t)
	setupOnce.Do(func() {
		dir, err := os.MkdirTemp("", "mamori-actor-")
		if err != nil {
			sharedErr = err
			return
		}
		actorPath = filepath.Join(dir, "actor")
		cmd := exec.Command("go", "build", "-o", actorPath, "github.com/mamori-dev/mamori/test/actor")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			sharedErr = fmt.Errorf("build actor: %v: %s", err, out)
			return
		}
		shared, sharedErr = Load(Options{Compat: os.Getenv(compatEnv) == "1"})
		if sharedErr != nil {
			return
		}
		ctx, cancel := context.WithCancel(context.Background())
		stopShared = cancel
		go func() { _ = shared.Run(ctx, collected.add) }()
	})
	if sharedErr != nil {
		t.Fatalf("sensor: %v", sharedErr)
	}
	return shared
}

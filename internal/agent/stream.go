package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/mamori-dev/mamori/internal/event"
	"github.com/mamori-dev/mamori/internal/sensor"
)

// StreamRequest is the one line a client sends on the event socket.
type StreamRequest struct {
	Kinds     string `json:"kinds,omitempty"`
	Container string `json:"container,omitempty"`
	// Status asks for one Status object instead of an event stream.
	Status bool `json:"status,omitempty"`
}

// Status is what the socket answers to a status request: the agent's
// counters and the state of every hook.
type Status struct {
	Stats
	Hooks []sensor.HookStatus `json:"hooks"`
	// BPFObjects names the build loaded (Agent.BPFObjects).
	BPFObjects string `json:"bpfObjects"`
}

// StreamNotice is a line the server interleaves with events when it had to
// drop events for a slow client, so the client knows what it missed.
type StreamNotice struct {
	Dropped uint64 `json:"mamoriDropped"`
}

// clientQueue bounds the events waiting for one slow stream client.
const clientQueue = 4096

// ServeStream serves raw events on a unix socket at path (mode 0600: the
// stream shows every process's arguments, so only root may read it). Each
// client sends a StreamRequest line and then receives matching events as
// JSON lines. A slow client loses events, never the pipeline: its queue is
// bounded and each loss is reported to it as a StreamNotice.
func (a *Agent) ServeStream(ctx context.Context, path string) error {
	_ = os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("listen on event socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return fmt.Errorf("restrict event socket: %w", err)
	}
	context.AfterFunc(ctx, func() { l.Close(); os.Remove(path) })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				if ctx.Err() == nil {
					a.log.Warn("event socket accept", "err", err)
				}
				return
			}
			go a.serveClient(ctx, c)
		}
	}()
	return nil
}

func (a *Agent) serveClient(ctx context.Context, c net.Conn) {
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(io.LimitReader(c, 4096)).ReadBytes('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return
	}
	var req StreamRequest
	if err := json.Unmarshal(line, &req); err != nil {
		fmt.Fprintf(c, "{\"mamoriError\":%q}\n", "bad request: "+err.Error())
		return
	}
	if req.Status {
		_ = json.NewEncoder(c).Encode(Status{Stats: a.Stats(), Hooks: a.Hooks(), BPFObjects: a.BPFObjects()})
		return
	}
	f, err := NewFilter(req.Kinds, req.Container)
	if err != nil {
		fmt.Fprintf(c, "{\"mamoriError\":%q}\n", err.Error())
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	ch := make(chan []byte, clientQueue)
	var dropped atomic.Uint64
	cancel := a.Subscribe(func(ev *event.Event) {
		if !f.Match(ev) {
			return
		}
		b, err := json.Marshal(ev)
		if err != nil {
			return
		}
		select {
		case ch <- b:
		default:
			dropped.Add(1)
		}
	})
	defer cancel()
	// A closed client shows up as a read error.
	gone := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, c); close(gone) }()
	w := bufio.NewWriter(c)
	var reported uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-gone:
			return
		case b := <-ch:
			if d := dropped.Load(); d != reported {
				nb, _ := json.Marshal(StreamNotice{Dropped: d - reported})
				w.Write(append(nb, '\n'))
				reported = d
			}
			w.Write(append(b, '\n'))
			if len(ch) == 0 {
				if err := w.Flush(); err != nil {
					return
				}
			}
		}
	}
}

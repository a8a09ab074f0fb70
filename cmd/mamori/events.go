package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/mamori-dev/mamori/internal/agent"
	"github.com/mamori-dev/mamori/internal/event"
)

func init() { register(eventsCmd) }

func eventsCmd() *cobra.Command {
	var (
		dataDir, kinds, ctr string
		asJSON, standalone  bool
		duration            time.Duration
	)
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Stream raw enriched events (from the local agent, or from a sensor of its own)",
		Long: `Streams the node's raw events, enriched with process lineage and container
identity. When a local agent (mamori run / mamori agent) is running with the same
--data-dir, events come from it; otherwise this command loads a sensor itself.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := agent.NewFilter(kinds, ctr); err != nil {
				return fmt.Errorf("--kind: %w", err)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			w := bufio.NewWriter(cmd.OutOrStdout())
			defer w.Flush()
			emit := func(line []byte, ev *event.Event) {
				if asJSON {
					w.Write(line)
					w.WriteByte('\n')
				} else if ev != nil {
					fmt.Fprintln(w, ev.Summary())
				}
				w.Flush()
			}
			req := agent.StreamRequest{Kinds: kinds, Container: ctr}
			if !standalone {
				sock := filepath.Join(dataDir, "events.sock")
				err := streamFromAgent(ctx, sock, req, duration, emit)
				if err == nil || !errors.Is(err, errNoAgent) {
					return err
				}
				fmt.Fprintf(os.Stderr, "mamori: no agent answers at %s (is --data-dir right?); loading a sensor of its own\n", sock)
			}
			return streamStandalone(ctx, dataDir, req, duration, emit)
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", agent.DefaultDataDir, "the local agent's data directory")
	cmd.Flags().StringVar(&kinds, "kind", "", "event kinds, comma-separated (e.g. exec,dns); default all")
	cmd.Flags().StringVar(&ctr, "container", "", "container id (or 4+ char prefix) or name; \"host\" for host processes only")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per line")
	cmd.Flags().DurationVar(&duration, "duration", 0, "stop after this long (default: until interrupted)")
	cmd.Flags().BoolVar(&standalone, "standalone", false, "always load a sensor of its own")
	return cmd
}

var errNoAgent = errors.New("no local agent")

// streamFromAgent reads the local agent's event socket.
func streamFromAgent(ctx context.Context, sock string, req agent.StreamRequest, d time.Duration, emit func([]byte, *event.Event)) error {
	c, err := net.Dial("unix", sock)
	if err != nil {
		return fmt.Errorf("%w: %v", errNoAgent, err)
	}
	defer c.Close()
	ctx, cancel := withDuration(ctx, d)
	defer cancel()
	context.AfterFunc(ctx, func() { c.Close() })
	b, _ := json.Marshal(req)
	if _, err := c.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("%w: %v", errNoAgent, err)
	}
	r := bufio.NewReaderSize(c, 1<<20)
	for {
		line, err := r.ReadBytes('\n')
		if len(line) > 1 {
			line = line[:len(line)-1]
			var probe struct {
				Err     string `json:"mamoriError"`
				Dropped uint64 `json:"mamoriDropped"`
			}
			_ = json.Unmarshal(line, &probe)
			switch {
			case probe.Err != "":
				return errors.New(probe.Err)
			case probe.Dropped > 0:
				fmt.Fprintf(os.Stderr, "mamori: %d events dropped: this reader was too slow\n", probe.Dropped)
			default:
				var ev event.Event
				if json.Unmarshal(line, &ev) == nil {
					emit(line, &ev)
				}
			}
		}
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("read event stream: %w", err)
		}
	}
}

// streamStandalone loads a sensor for this command alone.
func streamStandalone(ctx context.Context, dataDir string, req agent.StreamRequest, d time.Duration, emit func([]byte, *event.Event)) error {
	if os.Geteuid() != 0 {
		return errors.New("no local agent is running and loading a sensor needs root")
	}
	f, _ := agent.NewFilter(req.Kinds, req.Container)
	// The node's id, when the directory is a node's; a mistyped directory
	// is not created for it.
	nodeID := "node-events-" + uuid.NewString()
	if _, err := os.Stat(dataDir); err == nil {
		if nodeID, err = agent.LoadNodeID(dataDir); err != nil {
			return err
		}
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	a, err := agent.New(agent.Options{NodeID: nodeID, Logger: log})
	if err != nil {
		return err
	}
	defer a.Close()
	a.Subscribe(func(ev *event.Event) {
		if !f.Match(ev) {
			return
		}
		b, err := json.Marshal(ev)
		if err == nil {
			emit(b, ev)
		}
	})
	fmt.Fprintln(os.Stderr, "mamori: sensor loaded; streaming events")
	// The duration counts from when the sensor is loaded, not from start.
	ctx, cancel := withDuration(ctx, d)
	defer cancel()
	return a.Run(ctx)
}

func withDuration(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/mamori-dev/mamori/internal/agent"
	"github.com/mamori-dev/mamori/internal/event"
)

func init() { register(agentCmd) }

// agentFlags are shared by `agent` and `run`.
type agentFlags struct {
	dataDir     string
	metricsAddr string
	print       string
	verbose     bool
}

func (f *agentFlags) bind(cmd *cobra.Command, defaultPrint string) {
	cmd.Flags().StringVar(&f.dataDir, "data-dir", agent.DefaultDataDir, "directory for this node's state (node id, event socket)")
	cmd.Flags().StringVar(&f.metricsAddr, "metrics-addr", "127.0.0.1:9464", "address serving Prometheus /metrics (empty: off)")
	cmd.Flags().StringVar(&f.print, "print", defaultPrint, "event kinds to print to the terminal, comma-separated (\"\": none, \"all\": every kind)")
	cmd.Flags().BoolVarP(&f.verbose, "verbose", "v", false, "debug logging")
}

func agentCmd() *cobra.Command {
	var f agentFlags
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the node agent: load the sensor and stream enriched events",
		RunE: func(cmd *cobra.Command, args []string) error {
			return runAgent(cmd.Context(), &f, os.Stdout)
		},
	}
	f.bind(cmd, "")
	return cmd
}

// interesting is what `mamori run` prints by default until findings exist:
// the kinds a person watching a node cares about, not every open.
const interesting = "exec,connect,listen,dns,mount,module_load,ptrace,process_vm,memfd_create,bpf,setid,unshare,setns,container_start,container_stop"

func runAgent(ctx context.Context, f *agentFlags, out *os.File) error {
	level := slog.LevelInfo
	if f.verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if os.Geteuid() != 0 {
		return errors.New("the agent loads BPF programs and must run as root")
	}
	printFilter, err := printFilter(f.print)
	if err != nil {
		return err
	}
	nodeID, err := agent.LoadNodeID(f.dataDir)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	start := time.Now()
	a, err := agent.New(agent.Options{NodeID: nodeID, Logger: log})
	if err != nil {
		return err
	}
	defer a.Close()
	attached, failed := 0, 0
	for _, h := range a.Hooks() {
		switch {
		case h.Attached:
			attached++
		case !h.Optional:
			failed++
			log.Warn("hook not attached", "hook", h.Hook, "err", h.Error)
		}
	}
	log.Info("sensor loaded", "node", nodeID, "hooks", attached, "failed", failed, "took", time.Since(start).Round(time.Millisecond))

	sock := filepath.Join(f.dataDir, "events.sock")
	if err := a.ServeStream(ctx, sock); err != nil {
		return err
	}
	log.Info("event stream", "socket", sock, "read with", "mamori events --json")
	if f.metricsAddr != "" {
		l, err := net.Listen("tcp", f.metricsAddr)
		if err != nil {
			return fmt.Errorf("metrics listener: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", a.MetricsHandler())
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(l)
		defer srv.Close()
		log.Info("metrics", "url", "http://"+l.Addr().String()+"/metrics")
	}
	if printFilter != nil {
		a.Subscribe(func(ev *event.Event) {
			if printFilter.Match(ev) {
				fmt.Fprintln(out, ev.Summary())
			}
		})
	}
	return a.Run(ctx)
}

func printFilter(kinds string) (*agent.Filter, error) {
	switch kinds {
	case "":
		return nil, nil
	case "all":
		kinds = ""
	}
	f, err := agent.NewFilter(kinds, "")
	if err != nil {
		return nil, fmt.Errorf("--print: %w", err)
	}
	return &f, nil
}

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/mamori-dev/mamori/internal/agent"
	"github.com/mamori-dev/mamori/internal/datadir"
	"github.com/mamori-dev/mamori/internal/server/coverage"
)

func init() { register(runCmd) }

func runCmd() *cobra.Command {
	var (
		f  agentFlags
		sf serverFlags
	)
	cmd := &cobra.Command{
		Use:   "run",
		Short: "All-in-one: monitor this host and its containers, store findings, serve the API and console",
		RunE: func(cmd *cobra.Command, args []string) error {
			if os.Geteuid() != 0 {
				return errors.New("the agent loads BPF programs and must run as root")
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			sf.rulesDir, sf.intelDir = f.rulesDir, f.intelDir
			srv, err := startServer(ctx, &sf, f.dataDir, newLogger(f.verbose), os.Stdout)
			if err != nil {
				return err
			}
			defer srv.Close()
			// The local agent takes the same path as any other: enrolled
			// with a one-time token, publishing over NATS JetStream.
			lock, err := datadir.Acquire(f.dataDir, "agent")
			if err != nil {
				return err
			}
			defer lock.Release()
			f.lock = lock
			nodeID, err := agent.LoadNodeID(f.dataDir)
			if err != nil {
				return err
			}
			tok, err := srv.bus.localToken(ctx)
			if err != nil {
				return err
			}
			log := newLogger(f.verbose)
			link, err := connectAgent(ctx, agentBusConfig{dataDir: f.dataDir, nodeID: nodeID, cluster: sf.cluster,
				serverURL: srv.url, token: tok, caFingerprint: srv.caFingerprint}, prometheus.NewRegistry(), log)
			if err != nil {
				return fmt.Errorf("connect the local agent: %w", err)
			}
			defer link.Close()
			f.findingSinks = append(f.findingSinks, link.Sink)
			f.started = func(ctx context.Context, a *agent.Agent, exit func() *coverage.Exit) {
				link.heartbeats(ctx, a, agent.HeartbeatInfo{Version: version, Cluster: sf.cluster, Platform: "host", Interval: heartbeatEvery, Labels: f.labels}, exit)
			}
			return runAgent(ctx, &f, os.Stdout)
		},
	}
	f.bind(cmd, "")
	sf.bind(cmd)
	return cmd
}

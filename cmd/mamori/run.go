package main

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/mamori-dev/mamori/internal/agent"
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
			f.findingSinks = append(f.findingSinks, srv.AgentSink)
			f.started = func(ctx context.Context, a *agent.Agent) { srv.heartbeats(ctx, a, sf.cluster) }
			return runAgent(ctx, &f, os.Stdout)
		},
	}
	f.bind(cmd, "")
	sf.bind(cmd)
	return cmd
}

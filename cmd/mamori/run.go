package main

import (
	"os"

	"github.com/spf13/cobra"
)

func init() { register(runCmd) }

func runCmd() *cobra.Command {
	var f agentFlags
	cmd := &cobra.Command{
		Use:   "run",
		Short: "All-in-one: monitor this host and its containers and print findings (server and console to come)",
		RunE: func(cmd *cobra.Command, args []string) error {
			return runAgent(cmd.Context(), &f, os.Stdout)
		},
	}
	f.bind(cmd, "")
	return cmd
}

package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/mamori-dev/mamori/internal/finding"
)

func init() { register(samplesCmd) }

func samplesCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "sample-findings",
		Short: "Print one sample finding of every type",
		RunE: func(cmd *cobra.Command, args []string) error {
			host, _ := os.Hostname()
			out := cmd.OutOrStdout()
			for _, f := range finding.Samples(finding.Agent{NodeID: "sample-node", Hostname: host, Version: version}) {
				if asJSON {
					b, err := json.Marshal(f)
					if err != nil {
						return err
					}
					fmt.Fprintln(out, string(b))
					continue
				}
				fmt.Fprintln(out, finding.Line(f, true))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON lines")
	return cmd
}

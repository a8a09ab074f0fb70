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
	var asJSON, schema bool
	cmd := &cobra.Command{
		Use:   "sample-findings",
		Short: "Print one sample finding of every type (title \"[SAMPLE] ...\", additionalInfo.sample true)",
		Long: "Print one sample finding of every finding type, shaped like real ones (resource, process, lineage,\n" +
			"the type's context keys, threat-intel evidence where the type has it), to wire exports and dashboards\n" +
			"before a real attack. --schema prints the finding JSON Schema instead.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			if schema {
				_, err := out.Write(finding.Schema())
				return err
			}
			host, _ := os.Hostname()
			for _, f := range finding.Samples(finding.Agent{NodeID: "sample-node", Hostname: host, Version: version}) {
				line := finding.Line(f, true)
				if asJSON {
					b, err := json.Marshal(f)
					if err != nil {
						return fmt.Errorf("encode sample %s: %w", f.Type, err)
					}
					line = string(b)
				}
				if _, err := fmt.Fprintln(out, line); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON lines")
	cmd.Flags().BoolVar(&schema, "schema", false, "print the finding JSON Schema")
	return cmd
}

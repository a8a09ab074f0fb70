package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/mamori-dev/mamori/internal/sensor"
)

func init() { register(probeCmd) }

func probeCmd() *cobra.Command {
	var asJSON, noHooks bool
	cmd := &cobra.Command{
		Use:   "probe",
		Short: "Show which kernel hooks and helpers are available and which the sensor uses",
		RunE: func(cmd *cobra.Command, args []string) error {
			p := sensor.RunProbe(!noHooks && os.Geteuid() == 0)
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(p)
			}
			fmt.Fprint(cmd.OutOrStdout(), p.Summary())
			if os.Geteuid() != 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "\n(run as root to load the sensor and list its hooks)")
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().BoolVar(&noHooks, "no-hooks", false, "only probe features; do not load the sensor")
	return cmd
}

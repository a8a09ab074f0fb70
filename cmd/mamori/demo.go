package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/mamori-dev/mamori/internal/agent"
	"github.com/mamori-dev/mamori/internal/demo"
)

func init() { register(demoCmd) }

func demoCmd() *cobra.Command {
	var dataDir string
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Perform harmless real attack behaviours in a throwaway container and show the findings",
		Long: `Starts a throwaway busybox container, performs a set of harmless but real attack
behaviours in it (a C&C domain lookup, a dropped binary, a mount attempt, ...), and,
when a local mamori run is writing findings in --data-dir, shows which findings arrived.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			id, err := demo.Run(out)
			if err != nil {
				return err
			}
			file := filepath.Join(dataDir, "findings.jsonl")
			if _, err := os.Stat(file); err != nil {
				fmt.Fprintf(out, "\nno local mamori run found in %s: start `mamori run` first to see the findings\n", dataDir)
				return nil
			}
			want := map[string]bool{}
			for _, s := range demo.Steps {
				want[s.Expect] = true
			}
			got := map[string]bool{}
			deadline := time.Now().Add(wait)
			for time.Now().Before(deadline) && len(got) < len(want) {
				for typ := range findingsFor(file, id) {
					got[typ] = true
				}
				time.Sleep(250 * time.Millisecond)
			}
			fmt.Fprintln(out, "\nfindings raised for the demo container:")
			for _, s := range demo.Steps {
				mark := "missing"
				if got[s.Expect] {
					mark = "ok"
				}
				fmt.Fprintf(out, "  [%-7s] %s\n", mark, s.Expect)
			}
			if len(got) < len(want) {
				return fmt.Errorf("%d of %d expected findings arrived within %s", len(got), len(want), wait)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", agent.DefaultDataDir, "the local mamori run's data directory")
	cmd.Flags().DurationVar(&wait, "wait", 20*time.Second, "how long to wait for the findings")
	return cmd
}

// findingsFor returns the finding types in file about container id.
func findingsFor(file, id string) map[string]bool {
	out := map[string]bool{}
	f, err := os.Open(file)
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var fd struct {
			Type     string `json:"type"`
			Resource struct {
				ContainerDetails *struct {
					ID string `json:"id"`
				} `json:"containerDetails"`
			} `json:"resource"`
		}
		if json.Unmarshal(sc.Bytes(), &fd) == nil && fd.Resource.ContainerDetails != nil && fd.Resource.ContainerDetails.ID == id {
			out[fd.Type] = true
		}
	}
	return out
}

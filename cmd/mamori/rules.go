package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/mamori-dev/mamori/internal/detect"
	"github.com/mamori-dev/mamori/internal/event"
	"github.com/mamori-dev/mamori/internal/finding"
)

func init() { register(rulesCmd) }

func rulesCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "rules", Short: "Work with custom detection rules"}
	var asJSON bool
	test := &cobra.Command{
		Use:   "test RULES.yaml EVENTS.jsonl",
		Short: "Evaluate rules against recorded events (mamori events --json output) and print what would fire",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			rules, err := detect.LoadRulesFile(args[0])
			if err != nil {
				fmt.Fprintln(cmd.ErrOrStderr(), "mamori: some rules were refused:\n"+err.Error())
				if len(rules) == 0 {
					return fmt.Errorf("no rule in %s compiled", args[0])
				}
			}
			f, err := os.Open(args[1])
			if err != nil {
				return fmt.Errorf("open events: %w", err)
			}
			defer f.Close()
			var ds []detect.Detector
			for _, r := range rules {
				ds = append(ds, r)
			}
			engine := detect.NewEngine(finding.Agent{NodeID: "rules-test", Version: version}, nil, ds...)
			out := cmd.OutOrStdout()
			sc := bufio.NewScanner(f)
			sc.Buffer(make([]byte, 1<<20), 16<<20)
			line, fired, bad := 0, 0, 0
			for sc.Scan() {
				line++
				var ev event.Event
				if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
					bad++
					fmt.Fprintf(cmd.ErrOrStderr(), "%s:%d: not an event: %v\n", args[1], line, err)
					continue
				}
				engine.Process(&ev, func(fd *finding.Finding) {
					fired++
					if asJSON {
						b, _ := json.Marshal(fd)
						fmt.Fprintln(out, string(b))
						return
					}
					fmt.Fprintf(out, "%s:%d  %s  %s  %s\n", args[1], line, fd.Service.Detector.Rule, fd.SeverityLabel, fd.Title)
				})
			}
			if err := sc.Err(); err != nil {
				return fmt.Errorf("read events: %w", err)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "%d rules, %d events, %d matches, %d unreadable lines\n", len(rules), line-bad, fired, bad)
			return nil
		},
	}
	test.Flags().BoolVar(&asJSON, "json", false, "print the findings as JSON lines")
	cmd.AddCommand(test)
	return cmd
}

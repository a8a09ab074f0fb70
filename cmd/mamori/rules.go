package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/mamori-dev/mamori/internal/detect"
	"github.com/mamori-dev/mamori/internal/event"
	"github.com/mamori-dev/mamori/internal/finding"
)

func init() { register(rulesCmd) }

func rulesCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "rules", Short: "Work with custom detection rules (YAML with CEL conditions)"}
	cmd.AddCommand(rulesTestCmd(), rulesCheckCmd())
	return cmd
}

// loadRules loads rules files, reporting refused rules on stderr; it fails
// only when nothing compiled. refused says whether any rule was.
func loadRules(stderr io.Writer, files []string) (rules []*detect.Rule, refused bool, err error) {
	var errs []error
	seen := map[string]string{} // the agent refuses an id used twice in its directory
	for _, f := range files {
		rs, err := detect.LoadRulesFile(f)
		if err != nil {
			errs = append(errs, err)
		}
		for _, r := range rs {
			if prev, dup := seen[r.ID()]; dup {
				errs = append(errs, fmt.Errorf("%s: rule %q: id already used at %s", r.Where(), r.ID(), prev))
				continue
			}
			seen[r.ID()] = r.Where()
			rules = append(rules, r)
		}
	}
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintln(stderr, "mamori: some rules were refused:\n"+err.Error())
		refused = true
	}
	if len(rules) == 0 {
		return nil, refused, fmt.Errorf("no rule in %s compiled", strings.Join(files, ", "))
	}
	return rules, refused, nil
}

func rulesTestCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "test RULES.yaml EVENTS.jsonl",
		Short: "Evaluate rules against recorded events (mamori events --json output) and print what would fire",
		Long: "Evaluate rules against recorded events, one event JSON per line as `mamori events --json` prints them,\n" +
			"through the same engine the agent runs (kind and part prefilters included). Each match is printed as\n" +
			"EVENTS:LINE  RULE  SEVERITY  TITLE (or the finding as JSON with --json); a summary per rule follows on stderr.",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			rules, _, err := loadRules(cmd.ErrOrStderr(), args[:1])
			if err != nil {
				return err
			}
			f, err := os.Open(args[1])
			if err != nil {
				return fmt.Errorf("open events: %w", err)
			}
			defer f.Close()
			return runRulesTest(cmd.OutOrStdout(), cmd.ErrOrStderr(), rules, f, args[1], asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the findings as JSON lines")
	return cmd
}

func runRulesTest(out, stderr io.Writer, rules []*detect.Rule, events io.Reader, name string, asJSON bool) error {
	var ds []detect.Detector
	for _, r := range rules {
		ds = append(ds, r)
	}
	engine := detect.NewEngine(finding.Agent{NodeID: "rules-test", Version: version}, nil, ds...)
	sc := bufio.NewScanner(events)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	line, fired, bad := 0, 0, 0
	var werr error
	for sc.Scan() {
		line++
		if len(strings.TrimSpace(sc.Text())) == 0 {
			continue
		}
		var ev event.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			bad++
			fmt.Fprintf(stderr, "%s:%d: not an event: %v\n", name, line, err)
			continue
		}
		engine.Process(&ev, func(fd *finding.Finding) {
			fired++
			if asJSON {
				b, err := json.Marshal(fd)
				if err == nil {
					_, err = fmt.Fprintln(out, string(b))
				}
				werr = errors.Join(werr, err)
				return
			}
			_, err := fmt.Fprintf(out, "%s:%d  %s  %s  %s\n", name, line, fd.Service.Detector.Rule, fd.SeverityLabel, fd.Title)
			werr = errors.Join(werr, err)
		})
		if werr != nil {
			return fmt.Errorf("write: %w", werr)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read events: %w", err)
	}
	fmt.Fprintf(stderr, "%d rules, %d events, %d matches, %d unreadable lines\n", len(rules), line-bad, fired, bad)
	for _, r := range rules {
		st := r.Stats()
		fmt.Fprintf(stderr, "  %-32s evaluated %d, matched %d", r.ID(), st.Evaluations, st.Matches)
		if st.Errors > 0 {
			fmt.Fprintf(stderr, ", %d evaluation errors (last: %s)", st.Errors, st.LastError)
		}
		fmt.Fprintln(stderr)
	}
	return nil
}

func rulesCheckCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "check RULES.yaml...",
		Short: "Compile rules and show, for each, what it is evaluated on: kinds, required parts, indexed values",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) (err error) {
			rules, refused, err := loadRules(cmd.ErrOrStderr(), args)
			if err != nil {
				return err
			}
			defer func() {
				if refused && err == nil {
					err = errors.New("some rules were refused")
				}
			}()
			out := cmd.OutOrStdout()
			for _, r := range rules {
				kinds := "all"
				if ks := r.Kinds(); len(ks) < len(event.KindNames()) {
					names := make([]string, len(ks))
					for i, k := range ks {
						names[i] = k.String()
					}
					kinds = strings.Join(names, ",")
				}
				needs := strings.Join(r.Needs(), ",")
				if needs == "" {
					needs = "-"
				}
				index := "-"
				if f, mode, vals := r.Index(); f != "" {
					index = f + ":" + mode + "=" + strings.Join(vals, ",")
				}
				fmt.Fprintf(out, "%s  %s  %s  kinds=%s  needs=%s  index=%s\n", r.Where(), r.ID(), r.Types()[0], kinds, needs, index)
			}
			return nil
		},
	}
}

package main

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/mamori-dev/mamori/internal/server/api"
	"github.com/mamori-dev/mamori/internal/server/store"
)

func init() { register(suppressCmd) }

func suppressCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "suppress",
		Short: "Manage suppression rules (archive matching findings, never export them) and saved filters",
	}
	cmd.AddCommand(suppressListCmd(), suppressAddCmd(), suppressDeleteCmd())
	return cmd
}

func suppressListCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List suppression rules and saved filters",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			rules, err := c.ListRules(cmd.Context())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if cf.json {
				if rules == nil {
					rules = []store.Rule{}
				}
				return printJSON(out, map[string]any{"rules": rules})
			}
			if len(rules) == 0 {
				fmt.Fprintln(out, "no rules")
				return nil
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tACTION\tRANK\tNAME\tCRITERIA")
			for _, r := range rules {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", r.ID, r.Action, r.Rank, clean(r.Name), criteriaString(r.Criteria))
			}
			tw.Flush()
			return nil
		},
	}
	cf.bind(cmd)
	return cmd
}

func criteriaString(cs []store.Criterion) string {
	parts := make([]string, len(cs))
	for i, c := range cs {
		v := fmt.Sprint(c.Value)
		if s, ok := c.Value.(string); ok {
			v = clean(s)
		}
		parts[i] = fmt.Sprintf("%s:%s:%s", c.Field, c.Op, v)
	}
	return strings.Join(parts, " AND ")
}

func suppressAddCmd() *cobra.Command {
	var (
		cf          clientFlags
		name, desc  string
		criteria    []string
		typ, image  string
		noop, apply bool
		rank        int
	)
	cmd := &cobra.Command{
		Use:   "add",
		Short: "Add a suppression rule: matching findings are stored archived and never exported",
		Example: `  mamori suppress add --name "nightly scanner" --type Discovery:Runtime/SuspiciousCommand --image '*scanner*'
  mamori suppress add --name "ci builds" --criteria cluster:eq:ci --criteria service.count:gt:100 --apply
  mamori suppress add --name "prod high" --noop --criteria severity:gt:7`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			req := api.RuleRequest{Name: name, Description: desc, Action: store.ActionArchive, Rank: rank}
			if noop {
				req.Action = store.ActionNoop
			}
			if typ != "" {
				op := store.OpEq
				if strings.ContainsAny(typ, "*?") {
					op = store.OpMatches
				}
				req.Criteria = append(req.Criteria, store.Criterion{Field: "type", Op: op, Value: typ})
			}
			if image != "" {
				req.Criteria = append(req.Criteria, store.Criterion{Field: "resource.containerDetails.image", Op: store.OpMatches, Value: image})
			}
			for _, s := range criteria {
				c, err := api.ParseFilter(s)
				if err == nil {
					_, err = c.Normalize() // the server checks too; this names the flag
				}
				if err != nil {
					return fmt.Errorf("--criteria %s: %w", s, err)
				}
				req.Criteria = append(req.Criteria, c)
			}
			if name == "" || len(req.Criteria) == 0 {
				return fmt.Errorf("a rule needs --name and at least one criterion (--type, --image, --criteria)")
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			r, err := c.CreateRule(cmd.Context(), req, apply)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if cf.json {
				return printJSON(out, r)
			}
			fmt.Fprintf(out, "rule %s (%s) %s: %s\n", r.ID, r.Action, clean(r.Name), criteriaString(r.Criteria))
			if apply {
				fmt.Fprintf(out, "archived %d existing findings\n", r.Archived)
			}
			return nil
		},
	}
	cf.bind(cmd)
	fl := cmd.Flags()
	fl.StringVar(&name, "name", "", "rule name")
	fl.StringVar(&desc, "description", "", "why the rule exists")
	fl.StringArrayVar(&criteria, "criteria", nil, "criterion field:op:value, op one of eq, neq, gt, lt, matches (repeatable, ANDed)")
	fl.StringVar(&typ, "type", "", "finding type (* and ? are wildcards)")
	fl.StringVar(&image, "image", "", "container image pattern (* and ? are wildcards)")
	fl.BoolVar(&noop, "noop", false, "a saved filter (NOOP): select findings, change nothing")
	fl.BoolVar(&apply, "apply", false, "also archive the stored findings the rule matches now")
	fl.IntVar(&rank, "rank", 0, "order among rules")
	return cmd
}

func suppressDeleteCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "delete ID",
		Short: "Delete a rule (findings it archived stay archived)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			if err := c.DeleteRule(cmd.Context(), args[0]); err != nil {
				return err
			}
			if cf.json {
				return printJSON(cmd.OutOrStdout(), map[string]string{"deleted": args[0]})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deleted rule %s\n", args[0])
			return nil
		},
	}
	cf.bind(cmd)
	return cmd
}

package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/mamori-dev/mamori/internal/server/api"
	"github.com/mamori-dev/mamori/internal/transport"
)

func init() { register(agentsCmd) }

// agentsCmd manages enrolled agents and join tokens through the API.
func agentsCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "agents",
		Short: "List and remove enrolled agents; make, list and revoke join tokens",
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List enrolled agents",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			agents, err := c.ListAgents(cmd.Context())
			if err != nil {
				return err
			}
			if cf.json {
				return printJSON(cmd.OutOrStdout(), map[string]any{"agents": agents})
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NODE\tHOSTNAME\tENROLLED\tJOIN TOKEN")
			for _, a := range agents {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", a.NodeID, a.Hostname, a.EnrolledAt.Format(time.RFC3339), a.TokenID)
			}
			return tw.Flush()
		},
	}
	remove := &cobra.Command{
		Use:   "remove NODE_ID",
		Short: "Forget an agent and revoke its credential at once (it must enroll again with a new token)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			if err := c.RemoveAgent(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed %s; its credential is revoked\n", args[0])
			return nil
		},
	}
	var req api.JoinTokenRequest
	join := &cobra.Command{
		Use:   "join-token",
		Short: "Make a join token for enrolling agents (shown once)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			tok, err := c.CreateJoinToken(cmd.Context(), req)
			if err != nil {
				return err
			}
			if cf.json {
				return printJSON(cmd.OutOrStdout(), tok)
			}
			fmt.Fprintln(cmd.OutOrStdout(), tok.Token)
			return nil
		},
	}
	tokens := &cobra.Command{
		Use:   "join-tokens",
		Short: "List join tokens (without secrets): uses, expiry, revoked",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			toks, err := c.JoinTokens(cmd.Context())
			if err != nil {
				return err
			}
			if cf.json {
				return printJSON(cmd.OutOrStdout(), map[string]any{"joinTokens": toks})
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID	CREATED	EXPIRES	USES	STATE	DESCRIPTION")
			for _, t := range toks {
				expires, uses, state := "never", fmt.Sprintf("%d of %d", t.Uses, t.MaxUses), "usable"
				if !t.ExpiresAt.IsZero() {
					expires = t.ExpiresAt.Format(time.RFC3339)
				}
				if t.MaxUses == transport.UnlimitedUses {
					uses = fmt.Sprintf("%d (unlimited)", t.Uses)
				}
				switch {
				case t.Revoked:
					state = "revoked"
				case !t.ExpiresAt.IsZero() && time.Now().After(t.ExpiresAt):
					state = "expired"
				case t.MaxUses != transport.UnlimitedUses && t.Uses >= t.MaxUses:
					state = "used up"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.CreatedAt.Format(time.RFC3339), expires, uses, state, clean(t.Description))
			}
			return tw.Flush()
		},
	}
	revoke := &cobra.Command{
		Use:   "revoke-join-token ID",
		Short: "Revoke a join token (nodes enrolled with it stay; the server's own is rewritten at its next start)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			if err := c.RevokeJoinToken(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked join token %s\n", args[0])
			return nil
		},
	}
	join.Flags().StringVar(&req.Description, "description", "", "what the token is for")
	join.Flags().StringVar(&req.TTL, "ttl", "24h", "lifetime (Go duration; 0: never expires)")
	join.Flags().IntVar(&req.MaxUses, "uses", 1, "how many agents may enroll with it (-1: unlimited)")
	join.Flags().BoolVar(&req.AllowRebind, "rebind", false, "may re-enroll a node id bound to another key (revoking the old one)")
	for _, sub := range []*cobra.Command{list, remove, join, tokens, revoke} {
		cf.bind(sub)
		cmd.AddCommand(sub)
	}
	return cmd
}

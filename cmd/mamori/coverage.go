package main

import (
	"fmt"
	"net/url"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

func init() { register(coverageCmd) }

func coverageCmd() *cobra.Command {
	var (
		cf                    clientFlags
		status, cluster, kind string
	)
	cmd := &cobra.Command{
		Use:   "coverage",
		Short: "Show which nodes are protected: Healthy, or Unhealthy with the reason",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			q := url.Values{}
			for k, v := range map[string]string{"status": status, "cluster": cluster, "resourceType": kind} {
				if v != "" {
					q.Set(k, v)
				}
			}
			ctx := cmd.Context()
			nodes, err := c.Coverage(ctx, q)
			if err != nil {
				return err
			}
			stats, err := c.CoverageStatistics(ctx)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if cf.json {
				return printJSON(out, map[string]any{"nodes": nodes, "statistics": stats})
			}
			if len(nodes) == 0 {
				fmt.Fprintln(out, "no nodes match (no agent has reported yet?)")
			} else {
				tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NODE\tCLUSTER\tTYPE\tSTATUS\tSINCE\tLAST HEARTBEAT\tISSUE")
				for _, n := range nodes {
					last := "never"
					if !n.LastHeartbeat.IsZero() {
						last = time.Since(n.LastHeartbeat).Round(time.Second).String() + " ago"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", clean(n.NodeID), clean(n.Cluster), n.ResourceType, n.Status,
						n.StatusSince.Local().Format(time.DateTime), last, clean(n.Issue))
				}
				tw.Flush()
			}
			o := stats.Overall
			fmt.Fprintf(out, "\n%d nodes: %d healthy, %d unhealthy", o.Total, o.Healthy, o.Unhealthy)
			if len(o.Issues) > 0 {
				var parts []string
				for k, v := range o.Issues {
					parts = append(parts, fmt.Sprintf("%s %d", k, v))
				}
				sort.Strings(parts)
				fmt.Fprintf(out, " (%s)", strings.Join(parts, ", "))
			}
			fmt.Fprintln(out)
			return nil
		},
	}
	cf.bind(cmd)
	fl := cmd.Flags()
	fl.StringVar(&status, "status", "", "only Healthy or Unhealthy nodes")
	fl.StringVar(&cluster, "cluster", "", "only this cluster")
	fl.StringVar(&kind, "resource-type", "", "only this resource type (Instance, EKSCluster, ECSCluster)")
	return cmd
}

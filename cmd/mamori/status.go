package main

import (
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/mamori-dev/mamori/internal/agent"
)

func init() { register(statusCmd) }

func statusCmd() *cobra.Command {
	var dataDir string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the local agent's hooks and its event and loss counters",
		RunE: func(cmd *cobra.Command, args []string) error {
			sock := filepath.Join(dataDir, "events.sock")
			c, err := net.DialTimeout("unix", sock, 2*time.Second)
			if err != nil {
				return fmt.Errorf("no local agent at %s (start `mamori run`): %w", sock, err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			if err := json.NewEncoder(c).Encode(agent.StreamRequest{Status: true}); err != nil {
				return fmt.Errorf("ask agent: %w", err)
			}
			var st agent.Status
			if err := json.NewDecoder(c).Decode(&st); err != nil {
				return fmt.Errorf("read agent status: %w", err)
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			attached, failed := 0, 0
			for _, h := range st.Hooks {
				if h.Attached {
					attached++
				} else if !h.Optional {
					failed++
				}
			}
			w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
			fmt.Fprintf(w, "node\t%s\n", st.NodeID)
			fmt.Fprintf(w, "running since\t%s\n", st.Started.Format(time.RFC3339))
			if st.BPFObjects != "" {
				fmt.Fprintf(w, "BPF objects\t%s\n", st.BPFObjects)
			}
			fmt.Fprintf(w, "hooks\t%d attached, %d failed\n", attached, failed)
			for _, h := range st.Hooks {
				if !h.Attached {
					state := "FAILED"
					if h.Optional {
						state = "unavailable"
					}
					fmt.Fprintf(w, "  %s\t%s: %s\n", h.Hook, state, h.Error)
				}
			}
			s := st.Sensor
			fmt.Fprintf(w, "records read\t%d\n", s.Read)
			fmt.Fprintf(w, "kernel drops\t%d\n", s.TotalKernelDrops())
			if s.LinksLearned+s.LinksNotLearned > 0 {
				fmt.Fprintf(w, "links to secrets watched\t%d (%d not: the file watch is full)\n", s.LinksLearned, s.LinksNotLearned)
			}
			fmt.Fprintf(w, "secret files known by inode\t%d in %d roots", s.SecretInodes, s.WatchedRoots)
			if s.SecretInodesNotWatched > 0 || s.RootScansLost > 0 {
				fmt.Fprintf(w, " (%d not: the set is full; %d root scans lost: queue full or a filesystem that did not answer)", s.SecretInodesNotWatched, s.RootScansLost)
			}
			if s.SecretFilesShared > 0 {
				fmt.Fprintf(w, " (%d of the host's world-readable files named as a container's secrets: not watched)", s.SecretFilesShared)
			}
			fmt.Fprintln(w)
			kinds := make([]string, 0, len(s.KernelDrops))
			for k := range s.KernelDrops {
				kinds = append(kinds, k)
			}
			sort.Strings(kinds)
			for _, k := range kinds {
				fmt.Fprintf(w, "  %s\t%d\n", k, s.KernelDrops[k])
			}
			fmt.Fprintf(w, "decode errors\t%d\n", s.DecodeErrors)
			fmt.Fprintf(w, "program misses\t%d\n", s.ProgramMisses)
			fmt.Fprintf(w, "retry cache\t%d held, %d dropped, %d released unresolved\n", st.Retry.Held, st.Retry.Dropped, st.Retry.Expired+st.Retry.Gone)
			fmt.Fprintf(w, "containers\t%d known, %d resolve errors\n", st.Containers.Containers, st.Containers.ResolveErrors)
			fmt.Fprintf(w, "processes\t%d tracked, %d evicted\n", st.Processes.Entries, st.Processes.Evicted)
			fmt.Fprintf(w, "hashing\t%d done, %d dropped, %d failed, %d blocked\n", st.Processes.HashDone, st.Processes.HashDropped, st.Processes.HashFailed, st.Processes.HashStuck)
			if !s.LastEvent.IsZero() {
				fmt.Fprintf(w, "last event\t%s ago\n", time.Since(s.LastEvent).Round(time.Millisecond))
			}
			return w.Flush()
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", agent.DefaultDataDir, "the local agent's data directory")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/mamori-dev/mamori/internal/agent"
	"github.com/mamori-dev/mamori/internal/finding"
	"github.com/mamori-dev/mamori/internal/server/api"
	"github.com/mamori-dev/mamori/internal/server/store"
	"github.com/mamori-dev/mamori/internal/transport"
)

func init() { register(findingsCmd) }

// clientFlags say how a CLI client reaches the API: --server and --token
// (or MAMORI_TOKEN), or a local `mamori run` through its data directory.
type clientFlags struct {
	dataDir string
	server  string
	token   string
	caFile  string
	caPin   string
	json    bool
}

func (c *clientFlags) bind(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&c.dataDir, "data-dir", agent.DefaultDataDir, "data directory of a local mamori run or mamori server (its address and admin token are kept there)")
	fl.StringVar(&c.server, "server", "", "API URL, e.g. http://127.0.0.1:9470 (instead of --data-dir)")
	fl.StringVar(&c.token, "token", "", "API token for --server [$MAMORI_TOKEN]")
	fl.StringVar(&c.caFile, "ca-file", "", "with an https --server: trust this CA certificate (PEM; the server's is DATA_DIR/api/tls/ca.pem)")
	fl.StringVar(&c.caPin, "ca-fingerprint", os.Getenv("MAMORI_CA_FINGERPRINT"), "with an https --server: trust only the CA with this SHA-256 (printed by mamori server)")
	fl.BoolVar(&c.json, "json", false, "print JSON")
}

func (c *clientFlags) client() (*api.Client, error) {
	if c.server != "" {
		tok := c.token
		if tok == "" {
			tok = os.Getenv("MAMORI_TOKEN")
		}
		if tok == "" {
			return nil, errors.New("--server needs --token or MAMORI_TOKEN")
		}
		cl, err := api.NewClient(c.server, tok)
		if err != nil {
			return nil, err
		}
		if (c.caFile != "" || c.caPin != "") && !strings.HasPrefix(c.server, "https://") {
			return nil, fmt.Errorf("--ca-file and --ca-fingerprint need an https:// --server (%s would send the token in clear)", c.server)
		}
		switch {
		case c.caFile != "":
			ca, err := os.ReadFile(c.caFile)
			if err != nil {
				return nil, fmt.Errorf("--ca-file: %w", err)
			}
			if err := cl.TrustCA(ca); err != nil {
				return nil, fmt.Errorf("--ca-file %s: %w", c.caFile, err)
			}
		case c.caPin != "":
			fp, err := transport.NormalizeFingerprint(c.caPin)
			if err != nil {
				return nil, fmt.Errorf("--ca-fingerprint: %w", err)
			}
			cl.UseHTTPClient(transport.PinnedHTTPClient(fp, 60*time.Second))
		}
		return cl, nil
	}
	u, tok, err := api.LocalFor(c.dataDir).Read()
	if err != nil {
		return nil, fmt.Errorf("%w (or give --server and --token)", err)
	}
	if c.token != "" {
		tok = c.token
	}
	cl, err := api.NewClient(u, tok)
	if err != nil || !strings.HasPrefix(u, "https://") {
		return cl, err
	}
	// The local server's own CA, kept beside its address.
	ca, err := os.ReadFile(filepath.Join(api.LocalFor(c.dataDir).TLSDir(), "ca.pem"))
	if err != nil {
		return nil, fmt.Errorf("api CA: %w", err)
	}
	return cl, cl.TrustCA(ca)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// clean makes a runtime string safe for a terminal: control characters and
// quotes are escaped, so a hostile process or container name cannot drive
// the terminal or fake columns.
func clean(s string) string {
	if strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) || r == '"' || r == '\t' }) >= 0 {
		return strconv.Quote(s)
	}
	return s
}

// procLine names a process of a finding by its executable, adding the name
// it runs as when that differs (busybox applets, runc's init stages) and
// saying why the path is missing when it is; more goes after the pid.
func procLine(name, exe string, pid uint32, more string) string {
	ids := fmt.Sprintf("pid %d%s", pid, more)
	switch exe {
	case "":
		return fmt.Sprintf("%s (%s; executable path unreadable)", clean(name), ids)
	case "/":
		// d_path of a file that is itself the root of a detached mount, as
		// runc executes a sealed copy of itself.
		return fmt.Sprintf("%s (%s; executable on a detached mount, path unknown)", clean(name), ids)
	}
	if name != "" && !strings.HasPrefix(path.Base(exe), name) { // the kernel cuts names at 15 bytes
		return fmt.Sprintf("%s [%s] (%s)", clean(exe), clean(name), ids)
	}
	return fmt.Sprintf("%s (%s)", clean(exe), ids)
}

func findingsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "findings",
		Short: "List, show, archive and unarchive findings on a mamori server",
	}
	cmd.AddCommand(findingsListCmd(), findingsGetCmd(), findingsArchiveCmd(true), findingsArchiveCmd(false), findingsSamplesCmd())
	return cmd
}

func findingsListCmd() *cobra.Command {
	var (
		cf                            clientFlags
		limit                         int
		all, archived, asc, withTotal bool
		severity, typ, cluster, node  string
		image, namespace, sortBy      string
		cursor                        string
		filters                       []string
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List findings (newest first), filtered and sorted on the server",
		Example: `  mamori findings list
  mamori findings list --severity High --type 'Execution:*'
  mamori findings list --filter service.count:gt:10 --sort count --json
  mamori findings list --archived --all`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			q := url.Values{"limit": {strconv.Itoa(limit)}, "archived": {strconv.FormatBool(archived)}, "sort": {sortBy}}
			if asc {
				q.Set("order", "asc")
			}
			for k, v := range map[string]string{"severity": severity, "type": typ, "cluster": cluster, "node": node,
				"image": image, "namespace": namespace, "cursor": cursor} {
				if v != "" {
					q.Set(k, v)
				}
			}
			q["filter"] = filters
			ctx := cmd.Context()
			page, err := c.ListFindings(ctx, q)
			if err != nil {
				return err
			}
			for all && page.Next != "" {
				q.Set("cursor", page.Next)
				q.Set("total", "false")
				more, err := c.ListFindings(ctx, q)
				if err != nil {
					return err
				}
				page.Findings, page.Next = append(page.Findings, more.Findings...), more.Next
			}
			out := cmd.OutOrStdout()
			if cf.json {
				return printJSON(out, page)
			}
			printFindingTable(out, page.Findings)
			if withTotal || page.Next != "" {
				fmt.Fprintf(out, "%d of %d", len(page.Findings), page.Total)
				if page.Next != "" {
					fmt.Fprintf(out, "; next page: --cursor %s (or --all)", page.Next)
				}
				fmt.Fprintln(out)
			}
			return nil
		},
	}
	cf.bind(cmd)
	fl := cmd.Flags()
	fl.IntVar(&limit, "limit", 50, "findings per page (1-1000)")
	fl.BoolVar(&all, "all", false, "follow every page")
	fl.BoolVar(&archived, "archived", false, "list archived findings instead of active ones")
	fl.StringVar(&severity, "severity", "", "Low, Medium, High or Critical")
	fl.StringVar(&typ, "type", "", "finding type (* and ? are wildcards)")
	fl.StringVar(&cluster, "cluster", "", "cluster")
	fl.StringVar(&node, "node", "", "node id")
	fl.StringVar(&image, "image", "", "part of the container image reference, or a */? pattern of the whole reference ('*/nginx:*')")
	fl.StringVar(&namespace, "namespace", "", "Kubernetes namespace")
	fl.StringVar(&sortBy, "sort", "eventLastSeen", "sort by (the table shows LAST SEEN): "+strings.Join(store.SortFields, ", "))
	fl.BoolVar(&asc, "asc", false, "ascending order")
	fl.StringVar(&cursor, "cursor", "", "continue after a previous page")
	fl.StringArrayVar(&filters, "filter", nil, "criterion field:op:value over any finding field, op one of eq, neq, gt, lt, matches (repeatable)")
	fl.BoolVar(&withTotal, "total", false, "print the number of matching findings")
	return cmd
}

// resourceOf names a finding's resource in a few words.
func resourceOf(f *finding.Finding) string {
	r := f.Resource
	switch {
	case r.KubernetesDetails != nil:
		w := r.KubernetesDetails.KubernetesWorkloadDetails
		return "pod " + clean(w.Namespace+"/"+w.Name)
	case r.ContainerDetails != nil:
		c := r.ContainerDetails
		if c.Name != "" {
			return "container " + clean(c.Name)
		}
		return "container " + clean(c.ID[:min(12, len(c.ID))])
	case r.InstanceDetails != nil:
		h := r.InstanceDetails.Hostname
		if h == "" {
			h = r.InstanceDetails.NodeID
		}
		return "host " + clean(h)
	}
	return r.ResourceType
}

func printFindingTable(w io.Writer, recs []*store.Record) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEVERITY\tTYPE\tRESOURCE\tCOUNT\tLAST SEEN\tID")
	for _, r := range recs {
		sev := r.SeverityLabel
		if r.Service.Archived {
			sev += " (archived)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", sev, clean(r.Type), resourceOf(r.Finding), r.Service.Count,
			r.Service.EventLastSeen.Local().Format("2006-01-02 15:04:05 MST"), r.ID)
	}
	tw.Flush()
}

func findingsGetCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "get ID",
		Short: "Show one finding",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			r, err := c.GetFinding(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if cf.json {
				return printJSON(cmd.OutOrStdout(), r)
			}
			printFinding(cmd.OutOrStdout(), r)
			return nil
		},
	}
	cf.bind(cmd)
	return cmd
}

func printFinding(w io.Writer, r *store.Record) {
	f := r.Finding
	s := f.Service
	line := func(k, v string) {
		if v != "" {
			fmt.Fprintf(w, "%-16s %s\n", k+":", v)
		}
	}
	line("Id", f.ID)
	line("Type", clean(f.Type))
	line("Severity", fmt.Sprintf("%s (%.1f)", f.SeverityLabel, f.Severity))
	line("Title", clean(f.Title))
	line("Description", clean(f.Description))
	line("Resource", resourceOf(f))
	if c := f.Resource.ContainerDetails; c != nil {
		line("Container", clean(c.ID))
		line("Image", clean(c.Image))
		line("Runtime", clean(c.ContainerRuntime))
	}
	if d := f.Resource.InstanceDetails; d != nil {
		line("Node", clean(d.NodeID))
	}
	line("Cluster", clean(r.Cluster))
	line("Count", strconv.FormatInt(s.Count, 10))
	line("First seen", s.EventFirstSeen.Local().Format(time.RFC3339))
	line("Last seen", s.EventLastSeen.Local().Format(time.RFC3339))
	status := "active"
	if s.Archived {
		status = "archived"
	}
	if r.SuppressedBy != "" {
		status += ", suppressed by rule " + r.SuppressedBy
	}
	line("Status", status)
	if d := s.Detector; d != nil {
		line("Detector", clean(strings.TrimSpace(d.Name+" "+d.Rule)))
		line("MITRE ATT&CK", strings.TrimSpace(d.Tactic+" "+d.Technique))
	}
	if p := s.RuntimeDetails.Process; p != nil {
		line("Process", procLine(p.Name, p.ExecutablePath, p.Pid, fmt.Sprintf(", uid %d", p.UserID)))
		if len(p.Args) > 0 {
			args := make([]string, len(p.Args))
			for i, a := range p.Args {
				args[i] = clean(a)
			}
			line("Command line", strings.Join(args, " "))
		}
		for i, a := range p.Lineage {
			line(fmt.Sprintf("Parent %d", i+1), procLine(a.Name, a.Exe, a.PID, ""))
		}
	}
	if ev := s.Evidence; ev != nil {
		for _, t := range ev.ThreatIntelligenceDetails {
			line("Threat intel", clean(t.ThreatListName+": "+t.Indicator))
		}
	}
	if len(s.RuntimeDetails.Context) > 0 {
		b, _ := json.Marshal(s.RuntimeDetails.Context)
		line("Context", string(b))
	}
}

func findingsArchiveCmd(archive bool) *cobra.Command {
	var cf clientFlags
	use, short := "unarchive ID...", "Unarchive findings (clears their suppression)"
	if archive {
		use, short = "archive ID...", "Archive findings"
	}
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			n, err := c.SetArchived(cmd.Context(), args, archive)
			if err != nil {
				return err
			}
			// Unchanged ids were already in that state — or do not exist,
			// which a typo'd id must not pass for.
			var missing []string
			if n < len(args) {
				for _, id := range args {
					var se *api.StatusError
					if _, err := c.GetFinding(cmd.Context(), id); errors.As(err, &se) && se.Status == http.StatusNotFound {
						missing = append(missing, id)
					}
				}
			}
			if cf.json {
				if err := printJSON(cmd.OutOrStdout(), api.ArchiveResponse{Changed: n}); err != nil {
					return err
				}
			} else {
				verb := "unarchived"
				if archive {
					verb = "archived"
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s %d of %d findings\n", verb, n, len(args))
			}
			if len(missing) > 0 {
				return fmt.Errorf("no such finding: %s", strings.Join(missing, ", "))
			}
			return nil
		},
	}
	cf.bind(cmd)
	return cmd
}

func findingsSamplesCmd() *cobra.Command {
	var (
		cf    clientFlags
		types []string
	)
	cmd := &cobra.Command{
		Use:   "samples",
		Short: "Store one sample finding of every type on the server (exports and dashboards see them like real ones)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			res, err := c.Samples(cmd.Context(), types)
			if err != nil {
				return err
			}
			if cf.json {
				return printJSON(cmd.OutOrStdout(), res)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "stored %d sample findings\n", res.Created)
			return nil
		},
	}
	cf.bind(cmd)
	cmd.Flags().StringArrayVar(&types, "type", nil, "only this finding type (repeatable)")
	return cmd
}

package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/mamori-dev/mamori/internal/agent"
	"github.com/mamori-dev/mamori/internal/transport"
)

// natsConfigCmd prepares an external NATS cluster for `mamori server
// --nats-url`: it creates (or reuses) the installation's NATS auth and a CA
// with a server certificate under DATA_DIR/nats, and prints the nats-server
// configuration fragment that trusts them.
func natsConfigCmd() *cobra.Command {
	var (
		dataDir, resolverDir, out string
		hosts                     []string
	)
	cmd := &cobra.Command{
		Use:   "nats-config",
		Short: "Create the auth and TLS material for an external NATS cluster and print its nats-server config fragment",
		Long: `Creates, on first use, DATA_DIR/nats/auth.json (operator and account keys) and
DATA_DIR/nats/tls (a CA and a server certificate for --tls-host), and prints a
nats-server configuration fragment: trusted operator, system account, a full
account resolver (so replicas can push revocations), and the TLS block.
Include it in every NATS server's config, next to listen, jetstream and
cluster blocks. Give every mamori server replica the same auth.json
(--nats-auth) and ca.pem (--nats-ca).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			authPath, tlsDir, _ := transport.EmbeddedPaths(dataDir)
			if err := os.MkdirAll(filepath.Dir(authPath), 0o700); err != nil {
				return fmt.Errorf("data dir: %w", err)
			}
			auth, err := transport.LoadOrCreateAuth(authPath)
			if err != nil {
				return err
			}
			if _, err := transport.LoadOrCreateTLS(tlsDir, append(transport.DefaultTLSHosts(), hosts...)); err != nil {
				return err
			}
			abs, err := filepath.Abs(tlsDir)
			if err != nil {
				return err
			}
			frag := auth.NATSConfig(resolverDir) + fmt.Sprintf("tls: {\n  cert_file: %q\n  key_file: %q\n  timeout: 5\n}\n",
				filepath.Join(abs, "server.pem"), filepath.Join(abs, "server-key.pem"))
			if out == "" {
				_, err = fmt.Fprint(cmd.OutOrStdout(), frag)
				return err
			}
			if err := os.WriteFile(out, []byte(frag), 0o600); err != nil {
				return fmt.Errorf("--out: %w", err)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s; replicas take --nats-auth %s --nats-ca %s\n", out, authPath, filepath.Join(abs, "ca.pem"))
			return nil
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", agent.DefaultDataDir, "directory keeping the installation's NATS auth and TLS material")
	cmd.Flags().StringVar(&resolverDir, "resolver-dir", "mamori-jwt", "directory where each NATS server keeps account JWTs (relative to its working directory unless absolute)")
	cmd.Flags().StringSliceVar(&hosts, "tls-host", nil, "names and addresses the NATS servers' certificate must cover (repeatable)")
	cmd.Flags().StringVar(&out, "out", "", "write the fragment to this file (0600) instead of standard output")
	return cmd
}

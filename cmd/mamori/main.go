// Command mamori is the one binary of mamori: the node agent, the server,
// the all-in-one `run`, and the clients. This package only wires flags to the
// internal packages; each subcommand lives in its own file and registers
// itself in init so that files can be added without touching this one.
package main

import (
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

// commands holds the constructors of every subcommand; files append to it
// from init.
var commands []func() *cobra.Command

func register(c func() *cobra.Command) { commands = append(commands, c) }

func main() {
	root := &cobra.Command{
		Use:           "mamori",
		Short:         "Runtime threat detection and response for containers",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
	for _, c := range commands {
		root.AddCommand(c())
	}
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "mamori:", err)
		if hint := hintFor(err); hint != "" {
			fmt.Fprintln(os.Stderr, "mamori:", hint)
		}
		os.Exit(1)
	}
}

// hintFor says what to do about errors whose text alone does not.
func hintFor(err error) string {
	var unknownCA x509.UnknownAuthorityError
	if errors.As(err, &unknownCA) {
		return "the server's certificate is signed by its own CA: pass --ca-fingerprint (mamori server prints it) " +
			"or --ca-file DATA_DIR/api/tls/ca.pem of the server"
	}
	return ""
}

package main

import (
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Server flags out of range are refused with the flag's name, before
// anything starts.
func TestServerRefusesBadBounds(t *testing.T) {
	for _, args := range [][]string{
		{"--stream-max-bytes", "10"},
		{"--stream-max-bytes", "-1"},
		{"--export-update-frequency", "2m"},
	} {
		cmd := serverCmd()
		cmd.SetArgs(append([]string{"--data-dir", t.TempDir(), "--nats-port", "-1", "--api-addr", "127.0.0.1:0"}, args...))
		cmd.SilenceUsage, cmd.SilenceErrors = true, true
		err := cmd.Execute()
		if err == nil || !strings.Contains(err.Error(), args[0]) {
			t.Errorf("%v: %v, want an error naming %s", args, err, args[0])
		}
	}
}

func TestDNSPortsFlag(t *testing.T) {
	if got, err := dnsPorts([]uint{53, 8600}); err != nil || len(got) != 2 || got[1] != 8600 {
		t.Fatalf("53,8600: %v %v", got, err)
	}
	for _, bad := range [][]uint{{0}, {70000}, {1, 2, 3, 4, 5}} {
		if _, err := dnsPorts(bad); err == nil || !strings.Contains(err.Error(), "--dns-ports") {
			t.Errorf("%v: %v, want an error naming --dns-ports", bad, err)
		}
	}
}

// TestFlagHelpNamesTypes: pflag takes a `quoted` word in a flag's usage as
// its value's name, so help showed "--data-dir mamori run"; usages must
// not quote with backticks.
func TestFlagHelpNamesTypes(t *testing.T) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		c.Flags().VisitAll(func(f *pflag.Flag) {
			if strings.Contains(f.Usage, "`") {
				t.Errorf("%s --%s: backticks in its usage make a wrong value name in --help: %q", c.CommandPath(), f.Name, f.Usage)
			}
		})
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	for _, mk := range commands {
		walk(mk())
	}
}

func TestBPFObjectsFlag(t *testing.T) {
	for v, want := range map[string]bool{"auto": false, "": false, "compat": true} {
		if got, err := bpfObjects(v); err != nil || got != want {
			t.Errorf("%q: %v %v, want %v", v, got, err, want)
		}
	}
	if _, err := bpfObjects("old"); err == nil || !strings.Contains(err.Error(), "--bpf-objects") {
		t.Errorf("old: %v, want an error naming --bpf-objects", err)
	}
}

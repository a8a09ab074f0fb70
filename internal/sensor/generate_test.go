package sensor

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mamori-dev/mamori/internal/testenv"
)

// TestGeneratedFilesAreCurrent regenerates every BPF object and binding
// from bpf/*.bpf.c, following gen.go's go:generate lines, into a temporary
// directory and fails when any differs from the committed file: the
// committed objects are what users run, so they must be what the C says.
func TestGeneratedFilesAreCurrent(t *testing.T) {
	// bpf2go compiles with clang and strips DWARF with llvm-strip.
	for _, tool := range []string{"clang", "llvm-strip"} {
		if _, err := exec.LookPath(tool); err != nil {
			if testenv.InCI() {
				t.Fatalf("%s is required under CI=true to check the generated BPF files (scripts/setup.sh installs it)", tool)
			}
			t.Skipf("skipping: needs %s to regenerate BPF objects (scripts/setup.sh installs it)", tool)
		}
	}
	src, err := os.ReadFile("gen.go")
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	n := 0
	for _, line := range strings.Split(string(src), "\n") {
		args, ok := strings.CutPrefix(line, "//go:generate ")
		if !ok {
			continue
		}
		argv := splitArgs(args)
		// go run <bpf2go> [flags...] ident source -- cflags: put the output
		// directory among the flags.
		at := -1
		for i, a := range argv {
			if strings.HasSuffix(a, "/bpf2go") {
				at = i + 1
			}
		}
		if at < 0 {
			continue
		}
		full := append(append(append([]string{}, argv[1:at]...), "-output-dir", out), argv[at:]...)
		cmd := exec.Command(argv[0], full...)
		cmd.Env = append(os.Environ(), "GOPACKAGE=sensor")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", args, err, b)
		}
		n++
	}
	if n == 0 {
		t.Fatal("no bpf2go lines found in gen.go")
	}
	// Each family: a Go binding and an object per architecture (x86, arm64).
	files, _ := filepath.Glob(filepath.Join(out, "*"))
	if len(files) != 4*n {
		t.Fatalf("%d families generated %d files, want %d", n, len(files), 4*n)
	}
	for _, f := range files {
		want, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Base(f)
		got, err := os.ReadFile(name)
		if err != nil {
			t.Errorf("%s is generated but not committed: %v", name, err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from what bpf/ generates: run `go generate ./internal/sensor` and commit", name)
		}
	}
}

// splitArgs splits a go:generate line, honouring double quotes.
func splitArgs(s string) []string {
	var out []string
	var cur strings.Builder
	quoted, have := false, false
	for _, r := range s {
		switch {
		case r == '"':
			quoted, have = !quoted, true
		case r == ' ' && !quoted:
			if have {
				out = append(out, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteRune(r)
			have = true
		}
	}
	if have {
		out = append(out, cur.String())
	}
	return out
}

package detect

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mamori-dev/mamori/internal/finding"
)

func ruleWithID(id string) string {
	return "  - id: " + id + "\n    type: Custom:Runtime/R\n    kinds: [exec]\n    condition: event.process.name == \"" + id + "\"\n"
}

func ids(rs []*Rule) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.ID())
	}
	return out
}

// A rules file broken as a whole (a YAML typo) keeps the rules it had, and
// says so; the files beside it load as they are; a file fixed or removed
// is taken as it is now; a directory that cannot be listed keeps them all.
func TestBrokenRulesFileKeepsItsRules(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "a.yaml", "rules:\n"+ruleWithID("a"))
	writeFile(t, dir, "b.yaml", "rules:\n"+ruleWithID("b"))
	d := OpenRulesDir(dir)
	load := func(want ...string) error {
		t.Helper()
		rs, err := d.Load()
		if got := ids(rs); !slices.Equal(got, want) {
			t.Fatalf("rules in force %v, want %v (err %v)", got, want, err)
		}
		return err
	}
	if err := load("a", "b"); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "b.yaml", "rules:\n"+ruleWithID("b")+ruleWithID("c")+"  - id: d\n    condition: \"oops\n")
	if err := load("a", "b"); err == nil || !strings.Contains(err.Error(), "b.yaml") || !strings.Contains(err.Error(), "its 1 rules loaded before stay in force") {
		t.Errorf("a broken file: %v", err)
	}
	writeFile(t, dir, "a.yaml", "rules:\n"+ruleWithID("a2"))
	writeFile(t, dir, "b.yaml", "rules:\n"+ruleWithID("b")+ruleWithID("c"))
	if err := load("a2", "b", "c"); err != nil {
		t.Error(err)
	}
	if err := os.Remove(filepath.Join(dir, "b.yaml")); err != nil {
		t.Fatal(err)
	}
	if err := load("a2"); err != nil {
		t.Error(err)
	}
	moved := dir + ".moved"
	if err := os.Rename(dir, moved); err != nil {
		t.Fatal(err)
	}
	defer os.Rename(moved, dir)
	if err := load("a2"); err == nil || !strings.Contains(err.Error(), "the 1 rules loaded before stay in force") {
		t.Errorf("a directory gone: %v", err)
	}
}

// What could make a reload lose rules without a word, or hang the agent,
// is refused with a reason: a second rules: key, a second YAML document, a
// FIFO or a device named like a rules file. Links to regular files (a
// Kubernetes ConfigMap's layout), any case of the extension, load; dot
// files (editors' and syncs' temporaries) are skipped.
func TestRulesFilesThatWouldLoseRulesAreRefused(t *testing.T) {
	for _, c := range []struct{ src, want string }{
		{"rules:\n" + ruleWithID("a") + "rules:\n" + ruleWithID("b"), `t.yaml:6: rules: given twice`},
		{"rules:\n" + ruleWithID("a") + "---\nrules:\n" + ruleWithID("b"), `t.yaml:7: one YAML document per rules file`},
	} {
		if rs, err := ParseRules("t.yaml", []byte(c.src)); rs != nil || err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v %v, want %s", c.src, ids(rs), err, c.want)
		}
	}
	// A document end marker after the rules is fine.
	if rs, err := ParseRules("t.yaml", []byte("rules:\n"+ruleWithID("a")+"---\n")); err != nil || len(rs) != 1 {
		t.Errorf("trailing ---: %v %v", ids(rs), err)
	}

	dir := t.TempDir()
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo.yaml"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/dev/zero", filepath.Join(dir, "zero.yaml")); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "..data")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, data, "linked.yaml", "rules:\n"+ruleWithID("linked"))
	if err := os.Symlink("..data/linked.yaml", filepath.Join(dir, "linked.yaml")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "UPPER.YAML", "rules:\n"+ruleWithID("upper"))
	writeFile(t, dir, ".draft.yaml", "rules:\n"+ruleWithID("draft"))
	done := make(chan struct{})
	var rs []*Rule
	var err error
	go func() { rs, err = OpenRulesDir(dir).Load(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("loading a directory with a FIFO and /dev/zero hangs")
	}
	if got := ids(rs); !slices.Equal(got, []string{"upper", "linked"}) {
		t.Errorf("rules %v", got)
	}
	for _, f := range []string{"fifo.yaml: not a regular file", "zero.yaml: not a regular file"} {
		if err == nil || !strings.Contains(err.Error(), f) {
			t.Errorf("want %q in %v", f, err)
		}
	}
}

// A change made between the first load and the watch is picked up.
func TestRulesWatchSeesAChangeSinceTheLoad(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "r.yaml", "rules:\n"+ruleWithID("a"))
	d := OpenRulesDir(dir)
	rs, err := d.Load()
	if err != nil {
		t.Fatal(err)
	}
	e := NewEngine(finding.Agent{NodeID: "n"}, nil, rs[0])
	time.Sleep(20 * time.Millisecond) // a distinct mtime
	writeFile(t, dir, "r.yaml", "rules:\n"+ruleWithID("a")+ruleWithID("b"))
	stop := make(chan struct{})
	defer close(stop)
	reloaded := make(chan int, 1)
	go d.Watch(stop, 10*time.Millisecond, e, func(n int, err error) { reloaded <- n })
	select {
	case n := <-reloaded:
		if n != 2 {
			t.Errorf("%d rules after the reload", n)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the change made after the load was not picked up")
	}
}

// Past MaxRules, the first rules in file name order stay in force and the
// reload says from where the rest are not.
func TestRulesAreCapped(t *testing.T) {
	dir := t.TempDir()
	var b strings.Builder
	b.WriteString("rules:\n")
	for i := range MaxRules + 5 {
		b.WriteString(ruleWithID(fmt.Sprintf("r%05d", i)))
	}
	writeFile(t, dir, "many.yaml", b.String())
	rs, err := OpenRulesDir(dir).Load()
	if len(rs) != MaxRules || err == nil || !strings.Contains(err.Error(), fmt.Sprintf("only the first %d", MaxRules)) {
		t.Fatalf("%d rules in force, err %v", len(rs), err)
	}
}

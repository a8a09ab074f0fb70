package sensor

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/mamori-dev/mamori/internal/testenv"
)

// compatEnv makes this package's shared sensor load the compat objects.
const compatEnv = "MAMORI_TEST_SENSOR_COMPAT"

// compatSuite are the tests that perform real actions and check the
// events: run again against the compat objects, they prove those objects
// report the same on this kernel. (Older kernels, where they are chosen
// for real, are booted under qemu by test/kernels.)
var compatSuite = []string{
	"TestLoadedVariant", "TestProcessEvents", "TestExecDetails", "TestFileEvents",
	"TestNetworkEvents", "TestPrivilegeEvents", "TestSeccompDeniedAttemptIsSeen",
	"TestSeccompKilledAttemptIsAFailure", "TestQueuedSIGSYSCannotDisguiseASuccess",
	"TestDNSEvents", "TestDNSOnConfiguredPort",
}

func TestCompatObjectsReportTheSame(t *testing.T) {
	if os.Getenv(compatEnv) == "1" {
		t.Skip("running inside the compat suite")
	}
	testenv.RequireBPF(t)
	if testing.Short() {
		t.Skip("runs the event tests again (about half a minute)")
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^("+strings.Join(compatSuite, "|")+")$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), compatEnv+"=1")
	out, err := cmd.CombinedOutput()
	passed := 0
	for _, name := range compatSuite {
		if strings.Contains(string(out), "--- PASS: "+name+" (") {
			passed++
		}
	}
	if err != nil || passed < len(compatSuite) || strings.Contains(string(out), "--- SKIP: ") {
		t.Fatalf("the event tests against the compat objects: %v, %d of %d passed:\n%s", err, passed, len(compatSuite), out)
	}
}

// TestLoadedVariant checks the shared sensor loaded the objects asked for:
// compat in the compat suite, and otherwise those the probe picks here —
// which, on a kernel whose release says 5.17 or later, must be the default
// ones (distributions backport helpers, so older releases may go either way).
func TestLoadedVariant(t *testing.T) {
	s := startSensor(t)
	auto := ChooseVariant(false)
	if major, minor, ok := kernelRelease(); ok && (major > 5 || major == 5 && minor >= 17) && auto.Compat {
		t.Errorf("kernel %d.%d: the probe chose %s", major, minor, auto)
	}
	want := os.Getenv(compatEnv) == "1" || auto.Compat
	if got := s.Variant(); got.Compat != want {
		t.Fatalf("variant %+v, want compat=%v", got, want)
	}
	for _, st := range s.Status() {
		if !st.Attached && !st.Optional {
			t.Errorf("%s (%s) not attached with the %s: %s", st.Program, st.Hook, s.Variant(), st.Error)
		}
	}
}

// kernelRelease is the running kernel's major and minor version.
func kernelRelease() (major, minor int, ok bool) {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return 0, 0, false
	}
	n, _ := fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &major, &minor)
	return major, minor, n == 2
}

// noVMATree reports whether the compat objects are loaded on a kernel
// whose VMAs are not in an rbtree (6.1+), where they cannot find a VMA.
func noVMATree(t *testing.T) bool {
	if !shared.Variant().Compat {
		return false
	}
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		t.Fatalf("kernel BTF: %v", err)
	}
	var mm *btf.Struct
	if err := spec.TypeByName("mm_struct", &mm); err != nil {
		t.Fatalf("kernel BTF: %v", err)
	}
	return !hasMember(mm, "mm_rb")
}

// hasMember looks for a member by name, inside anonymous members too.
func hasMember(s *btf.Struct, name string) bool {
	for _, m := range s.Members {
		if m.Name == name {
			return true
		}
		if inner, ok := btf.UnderlyingType(m.Type).(*btf.Struct); ok && m.Name == "" && hasMember(inner, name) {
			return true
		}
	}
	return false
}

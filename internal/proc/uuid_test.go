package proc

import (
	"strconv"
	"testing"

	"github.com/google/uuid"
)

// Process UUIDs are name-based (version 5) over "PID:TICKS" in the node's
// namespace: the same as uuid.NewSHA1 gives, so they stay stable across
// agent versions and restarts.
func TestProcessUUIDIsNameBased(t *testing.T) {
	tb, err := New(Options{NodeID: "node-1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		pid   uint32
		ticks uint64
	}{{1, 0}, {4242, 123456}, {4294967295, 18446744073709551615}} {
		want := uuid.NewSHA1(tb.ns, []byte(strconv.FormatUint(uint64(c.pid), 10)+":"+strconv.FormatUint(c.ticks, 10))).String()
		if got := tb.uuidTicks(c.pid, c.ticks); got != want {
			t.Errorf("uuid of %d:%d = %s, want %s", c.pid, c.ticks, got, want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { tb.uuidTicks(4242, 123456) }); n > 1 {
		t.Errorf("%v allocations per process UUID, want 1 (the string)", n)
	}
}

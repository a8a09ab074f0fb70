package transport

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mamori-dev/mamori/internal/testenv"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func rec(kind Kind, i int, size int) SpoolRecord {
	data := fmt.Sprintf(`{"i":%d,"pad":"%s"}`, i, strings.Repeat("x", max(size-20, 0)))
	return SpoolRecord{Kind: kind, DedupID: fmt.Sprintf("n1:%032d", i), Data: []byte(data)}
}

// drain checks out and commits every batch, returning the records in order.
func drain(t *testing.T, s *Spool) []SpoolRecord {
	t.Helper()
	var out []SpoolRecord
	for {
		b, err := s.Checkout()
		if err != nil {
			t.Fatal(err)
		}
		if b == nil {
			return out
		}
		for i := range b.Records {
			b.Delivered(i)
		}
		out = append(out, b.Records...)
		if !b.Commit() {
			t.Fatal("fully delivered batch not removed")
		}
	}
}

func TestSpoolPersistsAcrossReopenAndReplaysFindingsFirst(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenSpool(SpoolConfig{Dir: dir, MaxBytes: 1 << 20, SegmentBytes: 4096, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		k := []Kind{KindHeartbeat, KindFinding, KindEvent}[i%3]
		if err := s.Append(rec(k, i, 100)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// A torn record at the end of one segment (crash mid-write) is cut off.
	segs, _ := filepath.Glob(filepath.Join(dir, "*-finding.seg"))
	if len(segs) == 0 {
		t.Fatal("no finding segments on disk")
	}
	last := segs[len(segs)-1]
	f, _ := os.OpenFile(last, os.O_APPEND|os.O_WRONLY, 0)
	f.Write([]byte{200, 0, 0, 0, 1, 2, 3})
	f.Close()

	m := NewMetrics(nil)
	s, err = OpenSpool(SpoolConfig{Dir: dir, MaxBytes: 1 << 20, SegmentBytes: 4096, Metrics: m, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if st := s.Stats(); st.Messages != 100 {
		t.Fatalf("after reopen: %d messages, want 100", st.Messages)
	}
	if got := testutil.ToFloat64(m.SpoolDropped.WithLabelValues("finding", "corrupt")); got != 1 {
		t.Fatalf("torn record not counted: %v", got)
	}
	got := drain(t, s)
	if len(got) != 100 {
		t.Fatalf("replayed %d, want 100", len(got))
	}
	seen := map[string]bool{}
	lastRank := -1
	for _, r := range got {
		if seen[r.DedupID] {
			t.Fatalf("record %s twice", r.DedupID)
		}
		seen[r.DedupID] = true
		// Findings come out first, then events, then heartbeats.
		rank := 2 - dropRank(r.Kind)
		if rank < lastRank {
			t.Fatalf("replay order: %s after a less valuable kind", r.Kind)
		}
		lastRank = rank
	}
	if st := s.Stats(); st.Messages != 0 || st.Bytes != 0 {
		t.Fatalf("spool not empty after replay: %+v", st)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*.seg")); len(left) != 0 {
		t.Fatalf("segment files left: %v", left)
	}
}

func TestSpoolBoundDropsHeartbeatsFirst(t *testing.T) {
	m := NewMetrics(nil)
	const limit = 16 << 10
	s, err := OpenSpool(SpoolConfig{Dir: t.TempDir(), MaxBytes: limit, Metrics: m, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Fill with heartbeats, then push findings: heartbeats make room.
	for i := range 100 {
		if err := s.Append(rec(KindHeartbeat, i, 200)); err != nil {
			t.Fatalf("heartbeat %d: %v", i, err)
		}
		if st := s.Stats(); st.Bytes > limit {
			t.Fatalf("spool at %d bytes, over its %d limit", st.Bytes, limit)
		}
	}
	hbDropped := s.Stats().Dropped[KindHeartbeat]
	if hbDropped == 0 {
		t.Fatal("100 heartbeats of ~230 bytes fit in 16 KiB: nothing dropped?")
	}
	for i := range 60 {
		if err := s.Append(rec(KindFinding, 1000+i, 200)); err != nil {
			t.Fatalf("finding %d: %v", i, err)
		}
	}
	st := s.Stats()
	if st.Bytes > limit || st.Dropped[KindFinding] != 0 {
		t.Fatalf("after findings: %+v", st)
	}
	// A heartbeat may not evict findings: once only findings are left and
	// the spool is at its bound, a heartbeat is refused (and counted).
	size := int64(len(encodeRecord(rec(KindFinding, 0, 200))))
	for i := 0; s.spoolHas(KindHeartbeat) || s.Stats().Bytes+size <= limit; i++ {
		if err := s.Append(rec(KindFinding, 5000+i, 200)); err != nil {
			t.Fatal(err)
		}
	}
	hbDropped = s.Stats().Dropped[KindHeartbeat]
	err = s.Append(rec(KindHeartbeat, 9999, 200))
	if !errors.Is(err, ErrSpoolFull) {
		t.Fatalf("heartbeat into a spool full of findings: %v, want ErrSpoolFull", err)
	}
	if s.Stats().Dropped[KindHeartbeat] != hbDropped+1 {
		t.Fatal("refused heartbeat not counted")
	}
	// Findings evict the oldest findings once nothing else is left.
	before := s.Stats().Dropped[KindFinding]
	for i := range 40 {
		if err := s.Append(rec(KindFinding, 20000+i, 200)); err != nil {
			t.Fatal(err)
		}
	}
	st = s.Stats()
	if st.Dropped[KindFinding] <= before || st.Bytes > limit {
		t.Fatalf("findings did not evict older findings: %+v", st)
	}
	// The metric agrees with the stats.
	var metric float64
	for _, reason := range []string{"full", "disk_full", "write_error", "corrupt"} {
		metric += testutil.ToFloat64(m.SpoolDropped.WithLabelValues("heartbeat", reason))
	}
	if uint64(metric) != st.Dropped[KindHeartbeat] {
		t.Fatalf("heartbeat drop metric %v, stats %d", metric, st.Dropped[KindHeartbeat])
	}
	if got := testutil.ToFloat64(m.SpoolBytes); int64(got) != st.Bytes {
		t.Fatalf("spool_bytes gauge %v, stats %d", got, st.Bytes)
	}
	// The newest findings survived.
	recs := drain(t, s)
	if recs[len(recs)-1].DedupID != fmt.Sprintf("n1:%032d", 20039) {
		t.Fatalf("newest finding lost; last is %s", recs[len(recs)-1].DedupID)
	}
}

func (s *Spool) spoolHas(k Kind) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.segs[k]) > 0
}

func TestSpoolPartialReplayIsRemembered(t *testing.T) {
	s, err := OpenSpool(SpoolConfig{Dir: t.TempDir(), Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range 10 {
		if err := s.Append(rec(KindFinding, i, 50)); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := s.Checkout()
	for i := range 4 {
		b.Delivered(i)
	}
	if b.Commit() {
		t.Fatal("partly delivered batch removed")
	}
	if got := s.Stats().Messages; got != 6 {
		t.Fatalf("%d messages pending after 4 of 10 delivered, want 6", got)
	}
	b, _ = s.Checkout()
	for i := range b.Records {
		if b.IsDelivered(i) != (i < 4) {
			t.Fatalf("record %d delivered=%v", i, b.IsDelivered(i))
		}
	}
}

// A spool on a tiny filesystem (64 KiB tmpfs), far below the spool's own
// bound. With the disk full of something else, every append fails with a
// clear, counted error and nothing panics; once space is back appends work.
// When the spool itself fills the disk, it evicts its oldest segments by the
// usual rules (counted as disk_full) and keeps the newest findings.
func TestSpoolDiskFull(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", dir).Run() })

	m := NewMetrics(nil)
	s, err := OpenSpool(SpoolConfig{Dir: filepath.Join(dir, "spool"), MaxBytes: 1 << 20, SegmentBytes: 8 << 10,
		Metrics: m, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	// Fill the file system with another file.
	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := f.Write(make([]byte, 4096)); err != nil {
			break
		}
	}
	f.Close()
	for i := range 20 {
		err := s.Append(rec(KindFinding, i, 1000))
		if !errors.Is(err, ErrSpoolWrite) || !strings.Contains(err.Error(), "no space left on device") {
			t.Fatalf("append %d on a full disk: %v, want ErrSpoolWrite with ENOSPC", i, err)
		}
	}
	st := s.Stats()
	if st.Messages != 0 || st.Bytes != 0 || st.Dropped[KindFinding] != 20 || st.WriteErrors != 20 ||
		testutil.ToFloat64(m.SpoolWriteErr) != 20 ||
		testutil.ToFloat64(m.SpoolDropped.WithLabelValues("finding", "write_error")) != 20 {
		t.Fatalf("after 20 failed appends: stats %+v, write error metric %v", st, testutil.ToFloat64(m.SpoolWriteErr))
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "spool", "*.seg")); len(left) != 0 {
		t.Fatalf("failed appends left segment files: %v", left)
	}

	// Space back; the spool alone now overflows the file system.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	for i := range 400 {
		if err := s.Append(rec(KindFinding, 100+i, 1000)); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
	st = s.Stats()
	evicted := testutil.ToFloat64(m.SpoolDropped.WithLabelValues("finding", "disk_full"))
	t.Logf("64 KiB tmpfs: spool holds %d messages in %d bytes; %v evicted for disk space", st.Messages, st.Bytes, evicted)
	if evicted == 0 || st.Messages+int64(evicted) != 400 {
		t.Fatalf("400 appended = %d held + %v evicted?", st.Messages, evicted)
	}
	recs := drain(t, s)
	if len(recs) != int(st.Messages) || recs[len(recs)-1].DedupID != fmt.Sprintf("n1:%032d", 499) {
		t.Fatalf("read back %d records (want %d) ending with %s", len(recs), st.Messages, recs[len(recs)-1].DedupID)
	}
}

package export

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestFileSinkJSONLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "findings.ocsf.jsonl")
	enc, _ := NewEncoder(FormatOCSF, testOptions)
	fs, err := OpenFileSink(path, enc, nil)
	if err != nil {
		t.Fatal(err)
	}
	fx := fixtures()
	var settled settlements
	for _, f := range fx {
		if !fs.Offer(f, true, settled.done) {
			t.Fatalf("write of %s refused", f.ID)
		}
	}
	fs.Offer(revision(fx["reverse-shell"], 9), false, settled.done)
	if got := settled.counts(); got[Delivered] != len(fx)+1 {
		t.Fatalf("settlements %v", got)
	}
	if err := fs.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", st.Mode().Perm())
	}
	file, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	sc := bufio.NewScanner(file)
	sc.Buffer(nil, 1<<20)
	var acts []int
	for sc.Scan() {
		var r OCSFFinding
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("line %d: %v", len(acts)+1, err)
		}
		if r.ClassUID != OCSFClassDetectionFinding {
			t.Fatalf("class %d", r.ClassUID)
		}
		acts = append(acts, r.ActivityID)
	}
	if len(acts) != len(fx)+1 || acts[len(acts)-1] != OCSFActivityUpdate {
		t.Fatalf("activities %v", acts)
	}
	if w, f := fs.Counts(); w != uint64(len(fx)+1) || f != 0 {
		t.Fatalf("counts %d %d", w, f)
	}
	reg := prometheus.NewRegistry()
	if err := reg.Register(fs); err != nil {
		t.Fatal(err)
	}
	if got := gather(t, reg); got["mamori_export_file_records_total"] != float64(len(fx)+1) {
		t.Fatalf("metrics %v", got)
	}
	// Writes after close fail, are counted, and hand the record back to
	// the outbox: not lost.
	if fs.Offer(fx["intel-dns"], true, settled.done) {
		t.Fatal("write to a closed file succeeded")
	}
	if _, f := fs.Counts(); f != 1 {
		t.Fatalf("failed %d", f)
	}
}

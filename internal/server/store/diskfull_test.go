package store_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mamori-dev/mamori/internal/server/store"
	"github.com/mamori-dev/mamori/internal/server/store/storetest"
	"github.com/mamori-dev/mamori/internal/testenv"
)

// A full disk under the SQLite store fails a batch with a clear error and
// keeps everything committed before it; once there is room the same batch
// commits (the ingester's messages are redelivered until it does), and the
// store goes on as before.
func TestSQLiteOnAFullDisk(t *testing.T) {
	disk := testenv.SmallDisk(t, 32)
	ctx := context.Background()
	st, err := store.Open(ctx, "sqlite:"+filepath.Join(disk, "mamori.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	base := time.Now().UTC().Add(-time.Hour)
	batch := func(b int) []store.Upsert {
		var us []store.Upsert
		for i := range 50 {
			// Long command lines make each finding a few KB, so the disk fills fast.
			args := []string{"/bin/sh", "-c", strings.Repeat(fmt.Sprintf("echo %d-%d; ", b, i), 200)}
			f := storetest.Finding(storetest.Spec{Node: "node-1", Actor: fmt.Sprintf("/bin/t%d-%d", b, i), Seen: base, Args: args})
			us = append(us, store.Upsert{Finding: f, MsgKey: fmt.Sprintf("m%d-%d", b, i), Reporter: "node-1"})
		}
		return us
	}
	for b := range 4 {
		if _, err := st.UpsertFindings(ctx, batch(b)); err != nil {
			t.Fatalf("batch %d on an empty disk: %v", b, err)
		}
	}
	free := testenv.FillDisk(t, disk, 0)
	stored, failed := 4, -1
	for b := 4; b < 200; b++ {
		if _, err := st.UpsertFindings(ctx, batch(b)); err != nil {
			if !strings.Contains(err.Error(), "full") || !store.IsUnavailable(err) {
				t.Fatalf("batch %d on a full disk: %v (unavailable %v), want an error saying the disk is full, an outage", b, err, store.IsUnavailable(err))
			}
			t.Logf("batch %d on a full disk: %v", b, err)
			failed = b
			break
		}
		stored++
	}
	if failed < 0 {
		t.Fatal("200 batches of a few hundred KB each fit on a full 32 MiB disk")
	}
	s, err := st.Stats(ctx)
	if err != nil {
		t.Fatalf("stats with the disk full: %v", err)
	}
	if s.Findings != stored*50 {
		t.Fatalf("%d findings kept, %d committed", s.Findings, stored*50)
	}

	free()
	res, err := st.UpsertFindings(ctx, batch(failed))
	if err != nil {
		t.Fatalf("the failed batch again, with room: %v", err)
	}
	for i, r := range res {
		if r.Outcome != store.OutcomeCreated {
			t.Fatalf("finding %d of the retried batch: %s, want created (the failed attempt left nothing)", i, r.Outcome)
		}
	}
	if _, err := st.UpsertFindings(ctx, batch(failed+1)); err != nil {
		t.Fatalf("a new batch: %v", err)
	}
	if s, _ := st.Stats(ctx); s.Findings != (stored+2)*50 {
		t.Fatalf("%d findings after recovery, want %d", s.Findings, (stored+2)*50)
	}
}

package transport

import (
	"context"
	"testing"
	"time"
)

// Replicas' views of the database's outages merge into one record every
// replica judges by: the earliest start, the end as soon as any replica
// stores again, a replica still failing after that ignored, a later
// outage replacing an ended one.
func TestOutageBoardMergesReplicas(t *testing.T) {
	ctx := context.Background()
	b := NewOutageBoard(NewMemStore[OutageRecord](), "database")
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	step := func(what string, seen OutageRecord, want OutageRecord) {
		t.Helper()
		if err := b.Report(ctx, seen); err != nil {
			t.Fatal(err)
		}
		got, err := b.Read(ctx)
		if err != nil || !got.Since.Equal(want.Since) || !got.Until.Equal(want.Until) {
			t.Fatalf("%s: board %+v (%v), want %+v", what, got, err, want)
		}
	}
	if got, err := b.Read(ctx); err != nil || !got.Since.IsZero() {
		t.Fatalf("empty board: %+v %v", got, err)
	}
	step("replica A sees an outage", OutageRecord{Since: at(10)}, OutageRecord{Since: at(10)})
	step("replica B saw it earlier", OutageRecord{Since: at(5)}, OutageRecord{Since: at(5)})
	step("replica B stores again", OutageRecord{Since: at(5), Until: at(60)}, OutageRecord{Since: at(5), Until: at(60)})
	step("replica A still failing: stale", OutageRecord{Since: at(10)}, OutageRecord{Since: at(5), Until: at(60)})
	step("replica A stores later", OutageRecord{Since: at(10), Until: at(65)}, OutageRecord{Since: at(5), Until: at(65)})
	step("a new outage", OutageRecord{Since: at(300)}, OutageRecord{Since: at(300)})
	step("the first one, reported late", OutageRecord{Since: at(10), Until: at(65)}, OutageRecord{Since: at(300)})
	step("nothing seen", OutageRecord{}, OutageRecord{Since: at(300)})
	// A replica that stored a message since (it never saw the outage, or
	// the one that did restarted) ends it with the record's own start.
	step("ended by another replica", OutageRecord{Since: at(300), Until: at(320)}, OutageRecord{Since: at(300), Until: at(320)})
}

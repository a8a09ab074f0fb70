package transport

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// OutageBucket holds the server's outages as every replica reported them.
const OutageBucket = "mamori_outages"

// OutageRecord is one outage of the servers' shared database: Until is
// zero while it lasts.
type OutageRecord struct {
	Since time.Time `json:"since"`
	Until time.Time `json:"until,omitzero"`
}

// OutageBoard shares the database outages replicas' consumers see (see
// Consumer.Outage), so every replica judges coverage alike — including one
// that pulled nothing during the outage or started after it. An outage
// ends when any replica stores a message again: the database works.
type OutageBoard struct {
	st  Store[OutageRecord]
	key string
}

// NewOutageBoard keeps the record of one kind of outage ("database") in st.
func NewOutageBoard(st Store[OutageRecord], kind string) *OutageBoard {
	return &OutageBoard{st: st, key: kind}
}

// Read returns the current or last outage (zero: none known).
func (b *OutageBoard) Read(ctx context.Context) (OutageRecord, error) {
	r, _, err := b.st.Get(ctx, b.key)
	if errors.Is(err, ErrNotFound) {
		return OutageRecord{}, nil
	}
	return r, err
}

// Report merges one replica's view of an outage into the board.
func (b *OutageBoard) Report(ctx context.Context, seen OutageRecord) error {
	if seen.Since.IsZero() {
		return nil
	}
	for range 5 { // concurrent replicas: read, merge, write if unchanged
		cur, rev, err := b.st.Get(ctx, b.key)
		if errors.Is(err, ErrNotFound) {
			err = b.st.Create(ctx, b.key, seen)
		} else if err == nil {
			next, changed := mergeOutage(cur, seen)
			if !changed {
				return nil
			}
			err = b.st.Update(ctx, b.key, next, rev)
		}
		if !errors.Is(err, ErrConflict) {
			if err != nil {
				return fmt.Errorf("outage board: %w", err)
			}
			return nil
		}
	}
	return fmt.Errorf("outage board: %w", ErrConflict)
}

// mergeOutage folds a replica's view into the shared record. A view
// starting after the record ended is a new outage; one that still lasts
// although the record ended is a replica that has not stored anything
// since (the database works: another one has), and one that ended before
// the record began is an earlier outage reported late; otherwise the
// outage starts at the earlier start and ends at the later end.
func mergeOutage(cur, seen OutageRecord) (OutageRecord, bool) {
	next := cur
	switch {
	case !cur.Until.IsZero() && seen.Since.After(cur.Until):
		next = seen
	case !cur.Until.IsZero() && seen.Until.IsZero():
		// stale: the outage ended for another replica
	case !seen.Until.IsZero() && seen.Until.Before(cur.Since):
		// stale: an earlier outage, reported late
	default:
		if seen.Since.Before(next.Since) {
			next.Since = seen.Since
		}
		if !seen.Until.IsZero() && (next.Until.IsZero() || seen.Until.After(next.Until)) {
			next.Until = seen.Until
		}
	}
	return next, next != cur
}

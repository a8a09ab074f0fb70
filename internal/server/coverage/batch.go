package coverage

import (
	"context"
	"time"

	"github.com/mamori-dev/mamori/internal/server/store"
)

// Heartbeats are committed in batches: the first one waiting starts a
// transaction and every one that arrived meanwhile joins it, so a fleet of
// agents costs one commit per batch instead of one per heartbeat. The queue
// is bounded; a full queue makes callers wait (the transport redelivers what
// is not acknowledged), it never drops.
const (
	heartbeatQueue    = 4096
	maxHeartbeatBatch = 512
	batchLinger       = 20 * time.Millisecond
)

type hbReq struct {
	h        *Heartbeat
	received time.Time
	madeAt   time.Time // see store.NodeUpdate.MadeAt
	done     chan hbRes
}

type hbRes struct {
	n   *store.Node
	err error
}

// observeBatched queues h and waits until its batch is committed.
func (m *Monitor) observeBatched(ctx context.Context, h *Heartbeat, received, queued time.Time) (*store.Node, error) {
	m.startWriter.Do(func() {
		for range m.cfg.Writers {
			go m.writer()
		}
	})
	madeAt := h.Time
	if !queued.IsZero() && queued.Before(madeAt) {
		madeAt = queued
	}
	req := &hbReq{h: h, received: received, madeAt: madeAt, done: make(chan hbRes, 1)}
	select {
	case m.hbq <- req:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case r := <-req.done:
		return r.n, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// writer commits queued heartbeats for the life of the process.
func (m *Monitor) writer() {
	batch := make([]*hbReq, 0, maxHeartbeatBatch)
	for req := range m.hbq {
		batch = append(batch[:0], req)
		// Under load, linger briefly so batches fill: a commit costs the
		// pages it writes, whatever the number of rows on them. Alone, a
		// heartbeat is committed at once.
	drain:
		for len(batch) < maxHeartbeatBatch {
			select {
			case x := <-m.hbq:
				batch = append(batch, x)
			default:
				break drain
			}
		}
		if len(batch) == 1 || len(batch) >= maxHeartbeatBatch {
			m.commitHeartbeats(batch)
			continue
		}
		linger := time.NewTimer(batchLinger)
	fill:
		for len(batch) < maxHeartbeatBatch {
			select {
			case r := <-m.hbq:
				batch = append(batch, r)
			case <-linger.C:
				break fill
			}
		}
		linger.Stop()
		m.commitHeartbeats(batch)
	}
}

func (m *Monitor) commitHeartbeats(batch []*hbReq) {
	ups := make([]store.NodeUpdate, len(batch))
	for i, r := range batch {
		ups[i] = store.NodeUpdate{NodeID: r.h.NodeID, Fn: m.observeFn(r.h, r.received), MadeAt: r.madeAt}
	}
	m.m.HeartbeatBatch.Observe(float64(len(batch)))
	// Not a caller's context: one giving up must not fail the others.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := m.st.UpdateNodes(ctx, ups)
	for i, r := range batch {
		if err != nil {
			m.m.Heartbeats.WithLabelValues("error").Inc()
			r.done <- hbRes{err: err}
			continue
		}
		if res[i].Err != nil {
			m.m.Heartbeats.WithLabelValues("error").Inc()
			r.done <- hbRes{err: res[i].Err}
			continue
		}
		if res[i].Node == nil {
			m.m.Heartbeats.WithLabelValues("ignored").Inc() // made before its node was removed
		} else {
			m.m.Heartbeats.WithLabelValues("ok").Inc()
		}
		m.logged(res[i].Event)
		r.done <- hbRes{n: res[i].Node}
	}
}

package agent

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/mamori-dev/mamori/internal/detect"
	"github.com/mamori-dev/mamori/internal/event"
	"github.com/mamori-dev/mamori/internal/finding"
)

// FindingSink receives each new finding and each coalesced update.
type FindingSink func(f *finding.Finding, isNew bool)

// Detection runs the detection engine on the agent's events and
// aggregates its findings before handing them to sinks.
type Detection struct {
	engine *detect.Engine
	agg    *finding.Aggregator
	sinks  []FindingSink
	log    *slog.Logger
	// hashes are the latest late hashes by process UUID: an exec_hashed
	// event can pass its exec on the way here (the exec may wait for its
	// container's identity), and a finding raised after it takes it here.
	hashes recentHashes
}

// imageKey names one exec of a process: its UUID and the executed file's
// identity (device, inode, modification and change times).
func imageKey(uuid string, x *event.Exec) string {
	return fmt.Sprintf("%s|%d|%d|%d|%d", uuid, x.Dev, x.Inode, x.MTime.UnixNano(), x.CTime.UnixNano())
}

// recentHashes is a bounded map of exec (imageKey) to executable SHA-256,
// forgetting the oldest entry first. Used on the dispatch goroutine only.
type recentHashes struct {
	byUUID map[string]string
	order  []string // ring of keys, oldest at next
	next   int
}

const recentHashesCap = 4096

func (r *recentHashes) put(uuid, sum string) {
	if r.byUUID == nil {
		r.byUUID, r.order = map[string]string{}, make([]string, recentHashesCap)
	}
	if _, ok := r.byUUID[uuid]; !ok {
		delete(r.byUUID, r.order[r.next])
		r.order[r.next] = uuid
		r.next = (r.next + 1) % len(r.order)
	}
	r.byUUID[uuid] = sum
}

func (r *recentHashes) get(uuid string) string { return r.byUUID[uuid] }

// NewDetection wires an engine and an aggregator to sinks.
func NewDetection(engine *detect.Engine, agg *finding.Aggregator, log *slog.Logger, sinks ...FindingSink) *Detection {
	if log == nil {
		log = slog.Default()
	}
	return &Detection{engine: engine, agg: agg, sinks: sinks, log: log}
}

// Handle is the agent subscriber: it runs on the dispatch goroutine,
// which is the engine's one goroutine.
func (d *Detection) Handle(ev *event.Event) {
	if ev.Kind == event.KindExecHashed && ev.Exec != nil && ev.Process.UUID != "" && ev.Process.ExeSHA256 != "" {
		d.hashes.put(imageKey(ev.Process.UUID, ev.Exec), ev.Process.ExeSHA256)
		d.agg.AddHash(ev.Process.UUID, ev.Exec.Path, ev.Process.ExeImage, ev.Process.ExeSHA256)
	}
	d.engine.Process(ev, func(f *finding.Finding) {
		// A finding about an exec whose hash came first takes it — only a
		// hash of that very file (a process may exec one binary, then another).
		if p := f.Service.RuntimeDetails.Process; p != nil && p.ExecutableSha256 == "" && ev.Kind == event.KindExec && ev.Exec != nil {
			if sum := d.hashes.get(imageKey(p.UUID, ev.Exec)); sum != "" {
				p.ExecutableSha256 = sum
			}
		}
		if n := d.agg.Observe(f); n != nil {
			d.emit(n, true)
		}
	})
}

func (d *Detection) emit(f *finding.Finding, isNew bool) {
	for _, s := range d.sinks {
		s(f, isNew)
	}
}

// Run emits coalesced updates every second until ctx is done, then the
// remaining ones.
func (d *Detection) Run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			for _, f := range d.agg.Flush(time.Now(), true) {
				d.emit(f, false)
			}
			return
		case now := <-t.C:
			for _, f := range d.agg.Flush(now, false) {
				d.emit(f, false)
			}
		}
	}
}

// Engine returns the engine, for its stats.
func (d *Detection) Engine() *detect.Engine { return d.engine }

// Aggregator returns the aggregator, for its stats.
func (d *Detection) Aggregator() *finding.Aggregator { return d.agg }

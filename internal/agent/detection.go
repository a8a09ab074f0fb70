package agent

import (
	"context"
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
}

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
	d.engine.Process(ev, func(f *finding.Finding) {
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

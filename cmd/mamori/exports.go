package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mamori-dev/mamori/internal/server/export"
	"github.com/mamori-dev/mamori/internal/server/store"
)

// exportSink is one configured export target: its outbox key, its name in
// logs and metrics, and the sink.
type exportSink struct {
	key, name string
	sink      export.Sink
}

// exportBehindAfter is how long due export records may wait before the
// server's health names their sink.
const exportBehindAfter = 5 * time.Minute

// problems is what /health reports: the bus's, and sinks behind.
func (s *server) problems() []string {
	p := s.bus.problems()
	if s.exportBacklog != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		p = append(p, s.exportBacklog.Problems(ctx, exportBehindAfter)...)
	}
	return p
}

// startRelays has the store queue every finding change for sinks and
// starts one relay per sink to deliver them.
func (s *server) startRelays(ctx context.Context, sinks []exportSink, updateEvery time.Duration, reg *prometheus.Registry) error {
	keys := make([]string, 0, len(sinks))
	names := map[string]string{}
	for _, x := range sinks {
		keys = append(keys, x.key)
		names[x.key] = x.name
	}
	s.store.SetExports(keys, updateEvery)
	if s.store.Engine() == store.EngineSQLite {
		// This server owns the file alone: records queued for a sink it no
		// longer has will never go anywhere, and leases of an earlier run
		// (a crash) are void, so its records go out now rather than when
		// the leases lapse. Replicas sharing PostgreSQL cannot know either
		// (another replica may have that sink, or hold the lease): there,
		// a removed sink's records leave with the retention purge.
		dropped, err := s.store.DropExports(ctx, keys)
		if err != nil {
			return fmt.Errorf("export outbox: %w", err)
		}
		for key, n := range dropped {
			s.log.Warn("export: discarded queued records of a sink no longer configured", "sink", key, "records", n)
		}
		if err := s.store.ReleaseAllExports(ctx); err != nil {
			return fmt.Errorf("export outbox: %w", err)
		}
	} else if bs, err := s.store.ExportBacklogs(ctx); err == nil {
		for _, b := range bs {
			if !slices.Contains(keys, b.Sink) {
				s.log.Warn("export: records queued for a sink this replica does not have; another replica may, else the retention purge takes them",
					"sink", b.Sink, "records", b.Pending)
			}
		}
	}
	if len(sinks) == 0 {
		return nil
	}
	s.exportBacklog = export.NewBacklog(s.store, names)
	if err := reg.Register(s.exportBacklog); err != nil {
		return err
	}
	host, _ := os.Hostname()
	owner := fmt.Sprintf("%s/%d/%s", host, os.Getpid(), rand.Text()[:8])
	// Relays stop first at Close, so the sinks drain what they hold
	// without new records arriving.
	relayCtx, stop := context.WithCancel(ctx)
	s.stopRelays = func() { stop(); s.relayWG.Wait() }
	for _, x := range sinks {
		r := export.NewRelay(export.RelayConfig{Key: x.key, Name: x.name, Sink: x.sink, Store: s.store, Owner: owner,
			UpdateDelay: updateEvery, Logger: s.log})
		if err := reg.Register(r); err != nil {
			return err
		}
		s.relays = append(s.relays, r)
		s.relayWG.Add(1)
		go func() { defer s.relayWG.Done(); r.Run(relayCtx) }()
	}
	return nil
}

package store

import "time"

// Test hooks: a fake clock and a migration target.

func WithClock(o Options, now func() time.Time) Options { o.now = now; return o }

func WithTargetVersion(o Options, v int) Options { o.targetVersion = v; return o }

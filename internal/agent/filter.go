package agent

import (
	"strings"

	"github.com/mamori-dev/mamori/internal/event"
)

// Filter selects events for a stream. The zero Filter passes everything.
type Filter struct {
	kinds map[event.Kind]bool
	// Container matches a container's id (full or a prefix of at least 4
	// characters, as podman and docker print them) or its name; "host"
	// selects events from outside any container.
	Container string
}

// NewFilter builds a filter from a comma-separated kind list and a
// container selector.
func NewFilter(kinds, container string) (Filter, error) {
	f := Filter{Container: container}
	ks, err := event.ParseKinds(kinds)
	if err != nil {
		return f, err
	}
	if len(ks) > 0 {
		f.kinds = map[event.Kind]bool{}
		for _, k := range ks {
			f.kinds[k] = true
		}
	}
	return f, nil
}

// Match reports whether ev passes the filter.
func (f Filter) Match(ev *event.Event) bool {
	if f.kinds != nil && !f.kinds[ev.Kind] {
		return false
	}
	switch f.Container {
	case "":
		return true
	case "host":
		return ev.Container == nil
	}
	c := ev.Container
	if c == nil {
		return false
	}
	return c.ID == f.Container || c.Name == f.Container ||
		(len(f.Container) >= 4 && strings.HasPrefix(c.ID, f.Container))
}

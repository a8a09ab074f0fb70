package sensor

import (
	"errors"

	"github.com/mamori-dev/mamori/internal/event"
)

func decodeDNS(ev *event.Event, r *record) error {
	return errors.New("dns decoding not wired yet")
}

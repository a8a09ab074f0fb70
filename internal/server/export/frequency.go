package export

import (
	"fmt"
	"time"
)

// UpdateFrequencies are the update export frequencies users can choose, as
// in the reference product.
var UpdateFrequencies = []time.Duration{15 * time.Minute, time.Hour, 6 * time.Hour}

// DefaultUpdateFrequency is the reference product's default.
const DefaultUpdateFrequency = 6 * time.Hour

// ParseUpdateFrequency reads "15m", "1h" or "6h".
func ParseUpdateFrequency(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err == nil {
		for _, f := range UpdateFrequencies {
			if d == f {
				return d, nil
			}
		}
	}
	return 0, fmt.Errorf("update frequency %q: want 15m, 1h or 6h", s)
}

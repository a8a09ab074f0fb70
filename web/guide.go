package web

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/mamori-dev/mamori/internal/finding"
)

// Guide is the console's plain-words text for one finding type: what it
// means for the workload and what to do about it.
type Guide struct {
	Means string   `json:"means"`
	Do    []string `json:"do"`
}

//go:embed guide.json
var guideJSON []byte

// Guides returns the guide of every type, by type.
func Guides() (map[string]Guide, error) {
	var m map[string]Guide
	if err := json.Unmarshal(guideJSON, &m); err != nil {
		return nil, fmt.Errorf("web: guide.json: %w", err)
	}
	return m, nil
}

// typeInfo is a catalogue entry with its guide, as the console reads it.
type typeInfo struct {
	finding.Kind
	Guide
}

// typesJSON builds the /console/types document from the finding catalogue.
func typesJSON() ([]byte, error) {
	g, err := Guides()
	if err != nil {
		return nil, err
	}
	out := make([]typeInfo, 0, len(finding.Catalogue))
	for _, k := range finding.Catalogue {
		out = append(out, typeInfo{Kind: k, Guide: g[k.Type]})
	}
	return json.Marshal(out)
}

// serveTypes answers with the catalogue: public product data, like the
// page's scripts, so it needs no session.
func (h *Handler) serveTypes(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(h.types)
}

package export

import (
	"time"

	"github.com/mamori-dev/mamori/internal/finding"
)

// Envelope is the event-bus record: the shape the reference product puts on
// its event bus, with the finding unchanged in detail. "account" carries the
// cluster and "region" the node, the nearest analogues of a self-hosted
// installation, so routing rules written against those slots keep working.
type Envelope struct {
	Version    string           `json:"version"`
	ID         string           `json:"id"`
	DetailType string           `json:"detail-type"`
	Source     string           `json:"source"`
	Account    string           `json:"account"`
	Time       string           `json:"time"`
	Region     string           `json:"region"`
	Resources  []string         `json:"resources"`
	Detail     *finding.Finding `json:"detail"`
}

// EventBus wraps f in the event-bus envelope. time is the finding's
// updatedAt, at second precision as event buses write it.
func EventBus(f *finding.Finding, o Options) *Envelope {
	o = o.withDefaults()
	node, _ := nodeOf(f)
	res := []string{}
	if c := f.Resource.ContainerDetails; c != nil && c.ID != "" {
		res = append(res, "container/"+c.ID)
	}
	return &Envelope{
		Version: "0", ID: RecordID(f), DetailType: o.DetailType, Source: o.Source,
		Account: clusterOf(f, o), Time: f.UpdatedAt.UTC().Truncate(time.Second).Format(time.RFC3339),
		Region: node, Resources: res, Detail: f,
	}
}

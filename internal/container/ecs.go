package container

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/mamori-dev/mamori/internal/event"
)

// On ECS the agent runs in a task (a daemon task on EC2, a sidecar on
// Fargate) and the ECS agent gives it ECS_CONTAINER_METADATA_URI_V4. The
// task document names the cluster, the task and its definition, and maps
// each container's runtime id (DockerId) to its ECS container name.

const (
	ecsTimeout = 2 * time.Second
	maxECSBody = 1 << 20
)

// ecsTask is the part of the v4 task metadata document we use.
type ecsTask struct {
	Cluster    string `json:"Cluster"`
	TaskARN    string `json:"TaskARN"`
	Family     string `json:"Family"`
	Revision   string `json:"Revision"`
	Containers []struct {
		DockerID string `json:"DockerId"`
		Name     string `json:"Name"`
		Image    string `json:"Image"`
		ImageID  string `json:"ImageID"`
	} `json:"Containers"`
}

type ecsReader struct {
	uri    string
	client *http.Client
}

func newECSReader(uri string) *ecsReader {
	return &ecsReader{uri: strings.TrimRight(uri, "/"), client: &http.Client{Timeout: ecsTimeout}}
}

func (e *ecsReader) fetch(ctx context.Context) (*ecsTask, error) {
	ctx, cancel := context.WithTimeout(ctx, ecsTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.uri+"/task", nil)
	if err != nil {
		return nil, fmt.Errorf("ecs metadata: %w", err)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("ecs metadata: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("ecs metadata: GET %s/task: %s", e.uri, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxECSBody+1))
	if err != nil {
		return nil, fmt.Errorf("ecs metadata: read: %w", err)
	}
	if len(body) > maxECSBody {
		return nil, fmt.Errorf("ecs metadata: task document over %d bytes", maxECSBody)
	}
	var t ecsTask
	if err := json.Unmarshal(body, &t); err != nil {
		return nil, fmt.Errorf("ecs metadata: decode: %w", err)
	}
	if t.TaskARN == "" {
		return nil, fmt.Errorf("ecs metadata: task document has no TaskARN")
	}
	return &t, nil
}

// applyECS attaches the task identity to the containers the task lists.
// Containers it does not list belong to other tasks (on EC2 one agent sees
// the whole instance but its metadata endpoint describes only its own
// task), and claiming them for this task would be wrong.
func applyECS(c *event.Container, t *ecsTask) {
	if t == nil {
		return
	}
	for _, tc := range t.Containers {
		if tc.DockerID == "" || tc.DockerID != c.ID {
			continue
		}
		e := &event.ECSTask{Cluster: t.Cluster, TaskARN: t.TaskARN, TaskDefinition: t.Family, ContainerName: tc.Name}
		if t.Revision != "" {
			e.TaskDefinition = t.Family + ":" + t.Revision
		}
		c.ECS = e
		if c.Name == "" {
			c.Name = tc.Name
		}
		if c.Image == "" {
			c.Image = tc.Image
		}
		if c.ImageID == "" {
			c.ImageID = tc.ImageID
		}
		return
	}
}

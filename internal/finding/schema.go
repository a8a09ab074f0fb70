package finding

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// schemaJSON is the JSON Schema (draft 2020-12) of the finding document:
// the structural contract for anyone consuming mamori's findings. Tests
// check that every sample and every finding the built-in detectors raise
// passes it, and that it names every field the Go types emit.
//
//go:embed schema.json
var schemaJSON []byte

// Schema returns the finding JSON Schema.
func Schema() []byte { return bytes.Clone(schemaJSON) }

var compiled = sync.OnceValues(func() (*jsonschema.Schema, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(schemaJSON))
	if err != nil {
		return nil, fmt.Errorf("finding schema: %w", err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource("finding.schema.json", doc); err != nil {
		return nil, fmt.Errorf("finding schema: %w", err)
	}
	s, err := c.Compile("finding.schema.json")
	if err != nil {
		return nil, fmt.Errorf("finding schema: %w", err)
	}
	return s, nil
})

// ValidateJSON checks a finding document (as received from an agent or an
// export) against the schema, then decodes it and applies Validate.
func ValidateJSON(doc []byte) error {
	s, err := compiled()
	if err != nil {
		return err
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		return fmt.Errorf("finding: not JSON: %w", err)
	}
	if err := s.Validate(inst); err != nil {
		return fmt.Errorf("finding does not match the schema: %w", err)
	}
	var f Finding
	if err := json.Unmarshal(doc, &f); err != nil {
		return fmt.Errorf("finding: %w", err)
	}
	return Validate(&f)
}

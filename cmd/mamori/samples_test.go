package main

import (
	"bufio"
	"bytes"
	"strings"
	"testing"

	"github.com/mamori-dev/mamori/internal/finding"
)

func TestSampleFindingsJSON(t *testing.T) {
	var out bytes.Buffer
	cmd := samplesCmd()
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"--json"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	n := 0
	sc := bufio.NewScanner(&out)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		n++
		if err := finding.ValidateJSON(sc.Bytes()); err != nil {
			t.Errorf("line %d: %v", n, err)
		}
		if !strings.Contains(sc.Text(), `"title":"[SAMPLE] `) || !strings.Contains(sc.Text(), `"sample":true`) {
			t.Errorf("line %d not marked as a sample", n)
		}
	}
	if n != len(finding.Catalogue) {
		t.Errorf("%d samples for %d types", n, len(finding.Catalogue))
	}
}

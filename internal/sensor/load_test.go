package sensor

import (
	"testing"

	"github.com/mamori-dev/mamori/internal/testenv"
)

func TestLoadAttachesEveryHook(t *testing.T) {
	testenv.RequireBPF(t)
	s, err := Load(Options{})
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	defer s.Close()
	for _, st := range s.Status() {
		if !st.Attached && !st.Optional {
			t.Errorf("%s (%s) not attached: %s", st.Program, st.Hook, st.Error)
		}
	}
}

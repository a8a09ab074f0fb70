package sensor

import (
	"fmt"
	"sort"
)

// families lists the compiled hook families in load order. The first one
// creates the shared maps.
func families() []family {
	return []family{
		{name: "process", load: loadProcess},
		{name: "file", load: loadFile},
		{name: "net", load: loadNet},
		{name: "priv", load: loadPriv},
		{name: "dns", load: loadDns},
	}
}

// Programs lists every program the sensor would load, as HookStatus
// values with nothing attached, without touching the kernel: what a
// heartbeat's hook list looks like (the control-plane benchmark sends it).
func Programs() ([]HookStatus, error) {
	var out []HookStatus
	for _, fam := range families() {
		spec, err := fam.load()
		if err != nil {
			return nil, fmt.Errorf("read %s programs: %w", fam.name, err)
		}
		names := make([]string, 0, len(spec.Programs))
		for name := range spec.Programs {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			ps := spec.Programs[name]
			out = append(out, HookStatus{Program: name, Family: fam.name, Hook: ps.SectionName, Optional: isOptional(ps.SectionName)})
		}
	}
	return out, nil
}

package sensor

import (
	"fmt"
	"maps"
	"slices"

	"github.com/cilium/ebpf"
)

// families lists the compiled hook families in load order. The first one
// creates the shared maps.
func families() []family {
	return []family{
		{name: "process", load: loadProcess, compat: loadProcessCompat},
		{name: "file", load: loadFile, compat: loadFileCompat},
		{name: "net", load: loadNet, compat: loadNetCompat},
		{name: "priv", load: loadPriv, compat: loadPrivCompat},
		{name: "dns", load: loadDns, compat: loadDnsCompat},
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
		for _, name := range slices.Sorted(maps.Keys(spec.Programs)) {
			out = append(out, hookStatus(fam, name, spec.Programs[name]))
		}
	}
	return out, nil
}

// hookStatus is a program's status before it is attached.
func hookStatus(fam family, name string, ps *ebpf.ProgramSpec) HookStatus {
	return HookStatus{Program: name, Family: fam.name, Hook: ps.SectionName, Optional: isOptional(ps.SectionName)}
}

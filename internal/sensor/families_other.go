//go:build !386 && !amd64 && !arm64

package sensor

import (
	"fmt"
	"runtime"

	"github.com/cilium/ebpf"
)

// The BPF objects are built for x86 and arm64 only (gen.go): on any other
// architecture mamori builds — the server and console run — but the sensor
// refuses to load, saying why.
func unsupportedArch() (*ebpf.CollectionSpec, error) {
	return nil, fmt.Errorf("the sensor's BPF programs are built for amd64 and arm64, not %s", runtime.GOARCH)
}

var (
	loadProcess = unsupportedArch
	loadFile    = unsupportedArch
	loadNet     = unsupportedArch
	loadPriv    = unsupportedArch
	loadDns     = unsupportedArch

	loadProcessCompat = unsupportedArch
	loadFileCompat    = unsupportedArch
	loadNetCompat     = unsupportedArch
	loadPrivCompat    = unsupportedArch
	loadDnsCompat     = unsupportedArch
)

package detect

import "github.com/mamori-dev/mamori/internal/intel"

// Builtin returns every built-in detector, reading threat intel from store.
func Builtin(store *intel.Store) []Detector {
	return []Detector{
		connectIntel(store), torRelay(store), dnsIntel(store), newHashIntel(store),
		newBinary(), fileless(), cryptoMiner(), suspiciousTool(), elevation(), commands(),
		newReverseShell(), newShellFromService(),
		injection(), procMemWrite(), usermodeHelper(), moduleLoad(), hostMount(), engineSocket(), userfaultfd(), newLibrary(), rawSocket(),
		sensitiveFiles(), runcEscape(), releaseAgent(), secretRead(),
	}
}

// Package sensor loads mamori's BPF programs, attaches each to its hook,
// reads the shared ring buffer and decodes records into typed events. A
// hook that fails to load or attach is recorded with its reason and the rest
// keep working: what is attached is reported by Status, `mamori probe` and
// coverage.
package sensor

// The BPF objects are compiled from bpf/*.bpf.c (one per hook family) and
// committed, so building mamori needs no clang. Regenerate with
// `go generate ./internal/sensor` (needs clang, llvm and libbpf-dev). One
// object per architecture: the syscall hooks read the saved user registers,
// whose layout is the architecture's (bpf/include/syscall.h, exit_take).
// Each family is built twice: the *Compat objects are for kernels that
// lack the newer helpers (bpf/include/mamori.h says which; the loader
// probes for them).
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang -cflags "-O2 -g -Wall -Werror" -target amd64,arm64 -type event_hdr process ../../bpf/process.bpf.c -- -I../../bpf/include
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang -cflags "-O2 -g -Wall -Werror" -target amd64,arm64 file ../../bpf/file.bpf.c -- -I../../bpf/include
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang -cflags "-O2 -g -Wall -Werror" -target amd64,arm64 net ../../bpf/net.bpf.c -- -I../../bpf/include
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang -cflags "-O2 -g -Wall -Werror" -target amd64,arm64 priv ../../bpf/priv.bpf.c -- -I../../bpf/include
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang -cflags "-O2 -g -Wall -Werror" -target amd64,arm64 dns ../../bpf/dns.bpf.c -- -I../../bpf/include
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -DMAMORI_COMPAT" -target amd64,arm64 processCompat ../../bpf/process.bpf.c -- -I../../bpf/include
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -DMAMORI_COMPAT" -target amd64,arm64 fileCompat ../../bpf/file.bpf.c -- -I../../bpf/include
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -DMAMORI_COMPAT" -target amd64,arm64 netCompat ../../bpf/net.bpf.c -- -I../../bpf/include
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -DMAMORI_COMPAT" -target amd64,arm64 privCompat ../../bpf/priv.bpf.c -- -I../../bpf/include
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -DMAMORI_COMPAT" -target amd64,arm64 dnsCompat ../../bpf/dns.bpf.c -- -I../../bpf/include

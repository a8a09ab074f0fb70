#!/bin/sh
# bench.sh runs mamori's benchmarks and prints their tables:
#   - sensor/agent overhead, throughput and memory (bench/sensor), with the
#     workload pinned to CPU 0 and the agent to CPU 1;
#   - the detection engine's Go benchmarks (events/s on one core).
# Results are also written to bench/results/*.md for the README.
set -eu
cd "$(dirname "$0")/.."
PATH=/usr/local/go/bin:$PATH
if [ "$(id -u)" -ne 0 ]; then
	echo "bench: run as root (the agent loads BPF programs)" >&2
	exit 1
fi
scripts/setup.sh run
mkdir -p bin bench/results
go build -o bin/mamori ./cmd/mamori
go build -o bin/bench-sensor ./bench/sensor
echo "== sensor and agent: $(uname -r), $(nproc) CPUs, $(date -u +%Y-%m-%d)"
taskset -c 0 bin/bench-sensor -mamori bin/mamori -agent-cpu 1 -markdown bench/results/sensor.md "$@"
echo
echo "== detection engine (one goroutine)"
go test ./internal/detect/ -run '^$' -bench . -benchtime 2s | tee bench/results/engine.txt
go test ./internal/sensor/ ./internal/proc/ -run '^$' -bench . -benchtime 1s 2>/dev/null | grep -E '^Benchmark' | tee bench/results/micro.txt || true
echo
echo "== syscall → finding latency under background load"
go build -o bin/bench-latency ./bench/latency
taskset -c 0 bin/bench-latency -mamori bin/mamori -agent-cpu 1 -markdown bench/results/latency.md

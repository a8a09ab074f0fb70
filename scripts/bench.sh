#!/bin/sh
# bench.sh runs mamori's benchmarks and prints their tables:
#   - agent overhead on four loops, per-program BPF cost, throughput on one
#     core and memory with 1,000 processes (bench/sensor; the workload is
#     pinned to CPU 0 and the agent to CPU 1);
#   - Go micro-benchmarks: detection engine, decoder, process table;
#   - syscall → finding latency (bench/latency);
#   - the control plane with 1,000 simulated agents (bench/ingest; SQLite
#     and a throwaway PostgreSQL).
# Tables go to bench/results/. With --readme, the README's benchmark blocks
# (between the bench:begin/bench:end and bench-ingest:begin/end markers) are
# replaced by them.
#
#   sudo scripts/bench.sh [--quick] [--readme] [bench/sensor flags...]
set -eu
cd "$(dirname "$0")/.."
PATH=/usr/local/go/bin:$PATH
: "${HOME:=$(getent passwd "$(id -u)" | cut -d: -f6)}"
export HOME
if [ "$(id -u)" -ne 0 ]; then
	echo "bench: run as root (the agent loads BPF programs)" >&2
	exit 1
fi
quick="" readme=""
while [ $# -gt 0 ]; do
	case "$1" in
	--quick) quick=1 ;;
	--readme) readme=1 ;;
	*) break ;;
	esac
	shift
done
scripts/setup.sh run
mkdir -p bin bench/results
go build -o bin/mamori ./cmd/mamori
go build -o bin/bench-sensor ./bench/sensor
go build -o bin/bench-latency ./bench/latency
go build -o bin/bench-ingest ./bench/ingest
benchtime=2s
ingestquick=""
if [ -n "$quick" ]; then
	ingestquick="-quick"
	set -- -scale 0.2 -rounds 2 -step-seconds 2 "$@"
	benchtime=0.3s
fi

echo "== agent overhead, throughput, memory"
bin/bench-sensor -mamori bin/mamori -cpu 0 -agent-cpu 1 -markdown bench/results/sensor.md "$@"

echo
echo "== Go micro-benchmarks (one goroutine)"
go test ./internal/detect/ ./internal/sensor/ ./internal/proc/ -run '^$' -bench . -benchtime "$benchtime" |
	grep -E '^(Benchmark|pkg:)' | tee bench/results/micro.txt

echo
echo "== syscall → finding latency under background load"
taskset -c 0 bin/bench-latency -mamori bin/mamori -agent-cpu 1 -markdown bench/results/latency.md

echo
echo "== control plane: 1,000 simulated agents"
bin/bench-ingest -mamori bin/mamori $ingestquick -markdown bench/results/ingest.md

if [ -n "$readme" ]; then
	block=$(mktemp)
	trap 'rm -f "$block"' EXIT
	{
		echo "Measured with \`sudo scripts/bench.sh\`."
		echo
		cat bench/results/sensor.md
		echo
		echo "Go micro-benchmarks (\`go test -bench . ./internal/detect ./internal/sensor ./internal/proc\`, one goroutine, same run):"
		echo
		echo '```'
		grep '^Benchmark' bench/results/micro.txt
		echo '```'
		echo
		echo "Syscall → finding latency (\`bench/latency\`):"
		echo
		cat bench/results/latency.md
	} >"$block"
	awk -v block="$block" '
		/<!-- bench:begin -->/ { print; while ((getline l < block) > 0) print l; skip = 1; next }
		/<!-- bench:end -->/ { skip = 0 }
		!skip { print }' README.md >README.md.bench && mv README.md.bench README.md
	iblock=$(mktemp)
	{
		echo "Measured with \`sudo scripts/bench.sh\` (\`bench/ingest\`)."
		echo
		cat bench/results/ingest.md
	} >"$iblock"
	awk -v block="$iblock" '
		/<!-- bench-ingest:begin -->/ { print; while ((getline l < block) > 0) print l; skip = 1; next }
		/<!-- bench-ingest:end -->/ { skip = 0 }
		!skip { print }' README.md >README.md.bench && mv README.md.bench README.md
	rm -f "$iblock"
	echo "bench: README.md benchmark blocks updated"
fi

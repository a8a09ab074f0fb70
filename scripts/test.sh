#!/bin/sh
# test.sh runs every check and test of mamori: formatting, vet, staticcheck
# and the whole Go test suite, as root (the sensor tests load BPF programs
# and start real containers). Under CI=true no test may skip. Every step
# runs even after one fails, so one run shows every problem; the exit code
# is non-zero when any step failed. Extra arguments go to `go test`.
set -eu
cd "$(dirname "$0")/.."
PATH=/usr/local/go/bin:$PATH
: "${HOME:=$(getent passwd "$(id -u)" | cut -d: -f6)}"
export HOME

if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null 2>&1; then
		exec sudo -E env "PATH=$PATH" "$0" "$@"
	fi
	echo "test: run as root (BPF and container tests need it): su -c scripts/test.sh" >&2
	exit 1
fi

start=$(date +%s)
summary=""
failed=0
tests=""
failures=""

# step NAME CMD...: run one check, time it and record its result.
step() {
	name=$1
	shift
	printf '\n== %s\n' "$name"
	t0=$(date +%s)
	if "$@"; then r=ok; else r=FAIL; failed=1; fi
	summary="$summary$(printf '  %-12s %-4s %5ss' "$name" "$r" $(($(date +%s) - t0)))
"
}

gofmt_check() {
	# bpf2go's output is generated; everything else must be gofmt'ed.
	out=$(git ls-files '*.go' | grep -v '_bpfe[lb]\.go$' | xargs gofmt -l)
	[ -z "$out" ] && return 0
	echo "not gofmt'ed (run gofmt -w):"
	echo "$out"
	return 1
}

go_test() {
	# -p 1: packages share the kernel's BPF hooks, podman and two cores;
	# one at a time keeps their event streams and timings apart. The whole
	# suite takes a few minutes; -timeout is per package and only stops a
	# hang, with its goroutine dump.
	log=$(mktemp)
	{
		go test -p 1 -count=1 -timeout 10m "$@" ./... 2>&1
		echo $? >"$log.rc"
	} | tee "$log"
	rc=$(cat "$log.rc")
	tests="$(grep -c '^ok ' "$log") packages ok, $(grep -c '^FAIL[[:space:]]' "$log") failed"
	failures=$(grep -E '^(--- FAIL|FAIL[[:space:]])' "$log" || true)
	rm -f "$log" "$log.rc"
	return "$rc"
}

step setup scripts/setup.sh
if [ "$failed" -eq 0 ]; then
	step gofmt gofmt_check
	step "go vet" go vet ./...
	# Graviton and other arm64 nodes run the arm64 build (its own BPF objects).
	step "vet arm64" env GOARCH=arm64 go vet ./...
	step staticcheck go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...
	step "go test" go_test "$@"
fi

printf '\n== summary (%ss in all)\n%s' $(($(date +%s) - start)) "$summary"
if [ -n "${tests:-}" ]; then
	echo "  go test: $tests"
	[ -z "$failures" ] || echo "$failures" | sed 's/^/    /'
fi
if [ "$failed" -ne 0 ]; then
	echo "test: FAILED"
	exit 1
fi
echo "test: all checks passed"

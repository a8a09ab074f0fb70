#!/bin/sh
# test.sh runs every check and test of mamori: formatting, vet, staticcheck
# and the whole Go test suite, as root (the sensor tests load BPF programs
# and start real containers). Under CI=true no test may skip.
set -eu
cd "$(dirname "$0")/.."
PATH=/usr/local/go/bin:$PATH

if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null 2>&1; then
		exec sudo -E env "PATH=$PATH" "$0" "$@"
	fi
	echo "test: run as root (BPF and container tests need it)" >&2
	exit 1
fi

scripts/setup.sh
start=$(date +%s)

step() { printf '\n== %s\n' "$*"; }

step gofmt
unformatted=$(gofmt -l $(git ls-files '*.go' | grep -v '_bpfel\.go$'))
if [ -n "$unformatted" ]; then
	echo "not gofmt'ed:"; echo "$unformatted"; exit 1
fi

step go vet
go vet ./...

step staticcheck
go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

step go test
# -p 1: packages share the kernel's BPF hooks, podman and one CPU pair;
# running them one at a time keeps timings and event streams clean.
go test -p 1 -count=1 -timeout 25m ./... "$@"

echo
echo "test: all checks passed in $(( $(date +%s) - start ))s"

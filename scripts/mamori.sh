#!/bin/sh
# mamori.sh builds mamori from this checkout and runs it with the given
# arguments, installing what running needs first: `sudo scripts/mamori.sh run`.
# The sensor loads BPF programs, so it runs as root.
set -eu
cd "$(dirname "$0")/.."
PATH=/usr/local/go/bin:$PATH
: "${HOME:=$(getent passwd "$(id -u)" | cut -d: -f6)}"
export HOME

if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null 2>&1; then
		exec sudo -E env "PATH=$PATH" "$0" "$@"
	fi
	echo "mamori: run as root (the sensor loads BPF programs): su -c 'scripts/mamori.sh $*'" >&2
	exit 1
fi

scripts/setup.sh run
mkdir -p bin
go build -o bin/mamori ./cmd/mamori
exec bin/mamori "$@"

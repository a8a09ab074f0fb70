#!/bin/sh
# mamori.sh builds mamori from this checkout and runs it, installing what
# running needs first: `sudo scripts/mamori.sh run`.
set -eu
cd "$(dirname "$0")/.."
PATH=/usr/local/go/bin:$PATH
scripts/setup.sh run
mkdir -p bin
go build -o bin/mamori ./cmd/mamori
exec bin/mamori "$@"

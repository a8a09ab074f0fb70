#!/bin/sh
# setup.sh installs what mamori and its tests need on a fresh Debian machine
# of the kind described in DEVELOPERS.md / shared/machine.md. It is
# idempotent and quiet when everything is already there.
#
#   scripts/setup.sh          everything the tests need
#   scripts/setup.sh run      only what `mamori run` needs
set -eu
cd "$(dirname "$0")/.."

need_root() {
	if [ "$(id -u)" -ne 0 ]; then
		echo "setup: run as root (installs Debian packages)" >&2
		exit 1
	fi
}

# Packages: podman+runc for real containers and container tests;
# busybox-static for the test image; clang/llvm/libbpf-dev/bpftool to
# regenerate BPF objects (go build needs none of them); postgresql and
# nats-server for control-plane tests; chromium for console tests.
RUN_PKGS="ca-certificates"
TEST_PKGS="podman runc busybox-static clang llvm libbpf-dev bpftool postgresql nats-server chromium chromium-driver iproute2 procps"

missing=""
pkgs="$RUN_PKGS"
[ "${1:-test}" = "run" ] || pkgs="$RUN_PKGS $TEST_PKGS"
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
	need_root
	echo "setup: installing$missing"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# This VM cannot raise rlimits; podman must not try (shared/machine.md).
conf=/etc/containers/containers.conf
if command -v podman >/dev/null 2>&1 && ! grep -q '^default_ulimits *= *\[\]' "$conf" 2>/dev/null; then
	need_root
	mkdir -p /etc/containers
	if [ -f "$conf" ] && grep -q '^\[containers\]' "$conf"; then
		sed -i 's/^\[containers\]/[containers]\ndefault_ulimits = []/' "$conf"
	else
		printf '[containers]\ndefault_ulimits = []\n' >>"$conf"
	fi
	echo "setup: podman configured (default_ulimits = [])"
fi

if ! command -v go >/dev/null 2>&1; then
	if [ -x /usr/local/go/bin/go ]; then
		PATH=/usr/local/go/bin:$PATH
	else
		echo "setup: Go is missing: install Go $(sed -n 's/^go //p' go.mod) or newer" >&2
		exit 1
	fi
fi
go mod download

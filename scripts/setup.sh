#!/bin/sh
# setup.sh installs what mamori and its tests need on a fresh Debian machine
# of the kind described in ../shared/machine.md. It is idempotent and quiet
# when everything is already there.
#
#   scripts/setup.sh          everything the tests need
#   scripts/setup.sh run      only what `mamori run` needs
set -eu
cd "$(dirname "$0")/.."
PATH=/usr/local/go/bin:$PATH
# go needs a home for its module and build caches; CI may start without one.
: "${HOME:=$(getent passwd "$(id -u)" | cut -d: -f6)}"
export HOME

need_root() {
	if [ "$(id -u)" -ne 0 ]; then
		echo "setup: run as root (installs Debian packages)" >&2
		exit 1
	fi
}

# Packages, by what needs them:
#   podman runc busybox-static      real containers and the test image
#   containerd docker.io            CRI- and Docker-shaped container metadata tests
#   clang llvm libbpf-dev bpftool   regenerating BPF objects (go build needs none)
#   postgresql nats-server          control-plane tests
#   chromium chromium-driver        console tests in a headless browser
#   qemu-system-arm                 the arm64 sensor on an emulated arm64 kernel (test/arm64)
RUN_PKGS="ca-certificates"
TEST_PKGS="podman runc busybox-static containerd docker.io clang llvm libbpf-dev bpftool
postgresql nats-server chromium chromium-driver iproute2 procps git qemu-system-arm"

pkgs="$RUN_PKGS"
[ "${1:-test}" = "run" ] || pkgs="$RUN_PKGS $TEST_PKGS"
missing=""
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

# This VM cannot raise rlimits, so podman must not try (shared/machine.md).
# Edit the [containers] table in place; never clobber the rest of the file.
conf=/etc/containers/containers.conf
if command -v podman >/dev/null 2>&1 && ! grep -q '^default_ulimits *= *\[ *\]' "$conf" 2>/dev/null; then
	need_root
	mkdir -p /etc/containers
	if grep -q '^default_ulimits' "$conf" 2>/dev/null; then
		# Replace the whole array, which may span several lines.
		awk 'skip { if (/]/) skip = 0; next }
			/^default_ulimits/ { print "default_ulimits = []"; if (!/]/) skip = 1; next }
			{ print }' "$conf" >"$conf.mamori" && mv "$conf.mamori" "$conf"
	elif grep -q '^\[containers\]' "$conf" 2>/dev/null; then
		sed -i 's/^\[containers\]/[containers]\ndefault_ulimits = []/' "$conf"
	else
		printf '\n[containers]\ndefault_ulimits = []\n' >>"$conf"
	fi
	echo "setup: podman configured (default_ulimits = [] in $conf)"
fi

# test/arm64 boots Debian's arm64 cloud kernel under qemu. It is fetched with
# apt — signatures checked — into a private state directory, so the system's
# apt keeps its own architectures and package lists.
arm64_kernel() {
	dir=/var/cache/mamori-test/arm64
	[ -s "$dir/vmlinuz" ] && return 0
	need_root
	mkdir -p "$dir/lists/partial" "$dir/archives/partial" "$dir/deb"
	: >"$dir/status"
	set -- -o "Dir::State::Lists=$dir/lists" -o "Dir::Cache::archives=$dir/archives" \
		-o "Dir::State::status=$dir/status" -o APT::Architecture=arm64 -o "APT::Architectures::=arm64" \
		-o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=
	apt-get "$@" update -qq >/dev/null || return 1
	pkg=$(apt-cache "$@" depends linux-image-cloud-arm64 | sed -n 's/^ *Depends: \(linux-image-[^ ]*\)$/\1/p' | head -n 1)
	[ -n "$pkg" ] || { echo "setup: no arm64 cloud kernel package found" >&2; return 1; }
	(cd "$dir/deb" && apt-get "$@" download "$pkg" >/dev/null 2>&1) || return 1
	dpkg-deb --fsys-tarfile "$dir"/deb/"$pkg"_*.deb | tar -x -O --wildcards './boot/vmlinuz-*' >"$dir/vmlinuz.part" || return 1
	[ -s "$dir/vmlinuz.part" ] || return 1
	mv "$dir/vmlinuz.part" "$dir/vmlinuz"
	rm -rf "$dir/deb" "$dir/archives" "$dir/lists" "$dir/status"
	echo "setup: arm64 kernel for test/arm64: $pkg"
}
# Without it only test/arm64 cannot run (it says so, and fails under CI).
[ "${1:-test}" = "run" ] || arm64_kernel || echo "setup: could not fetch the arm64 kernel for test/arm64" >&2

# Go is not taken from Debian: its golang-go is far older than go.mod needs.
# Machines of this kind ship it at /usr/local/go.
if ! command -v go >/dev/null 2>&1; then
	echo "setup: Go is missing: install Go $(sed -n 's/^go //p' go.mod) or newer at /usr/local/go" >&2
	exit 1
fi
go mod download

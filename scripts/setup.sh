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
#   qemu-system-arm qemu-system-x86 the sensor on emulated arm64 and older x86_64 kernels (test/kernels)
RUN_PKGS="ca-certificates"
TEST_PKGS="podman runc busybox-static containerd docker.io clang llvm libbpf-dev bpftool
postgresql nats-server chromium chromium-driver iproute2 procps git qemu-system-arm qemu-system-x86
curl"

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

# test/kernels boots Debian's arm64 cloud kernel under qemu. It is fetched with
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
	echo "setup: arm64 kernel for test/kernels: $pkg"
}

# test/kernels also boots the older kernels fleets still run, where the
# sensor loads its compat objects: Debian 11's 5.10 (as Amazon Linux 2's
# 5.10) on x86_64 and arm64, and Ubuntu 22.04's 5.15. Released packages are
# fixed files: each is fetched by name and checked against its SHA-256 from
# the distribution's signed index.
old_kernel() { # name url sha256
	dir=/var/cache/mamori-test/kernels
	[ -s "$dir/$1" ] && return 0
	need_root
	mkdir -p "$dir"
	curl -fsSL --retry 3 -o "$dir/$1.deb" "$2" || return 1
	echo "$3  $dir/$1.deb" | sha256sum -c --quiet - || { rm -f "$dir/$1.deb"; return 1; }
	dpkg-deb --fsys-tarfile "$dir/$1.deb" | tar -x -O --wildcards './boot/vmlinuz-*' >"$dir/$1.part" || return 1
	rm -f "$dir/$1.deb"
	[ -s "$dir/$1.part" ] && mv "$dir/$1.part" "$dir/$1"
	echo "setup: kernel for test/kernels: $1"
}
old_kernels() {
	old_kernel debian11-5.10-amd64 \
		http://deb.debian.org/debian/pool/main/l/linux-signed-amd64/linux-image-5.10.0-32-cloud-amd64_5.10.223-1_amd64.deb \
		fb4a1229952d892138532c1d9f40a7fd0bd408e4dcf969c12e4524b6a89fdcb8 &&
		old_kernel debian11-5.10-arm64 \
			http://deb.debian.org/debian/pool/main/l/linux-signed-arm64/linux-image-5.10.0-32-cloud-arm64_5.10.223-1_arm64.deb \
			1b79a526115ffed1262a3bcb127e9596a6849ad4acc31aacbef93db0c9cf7352 &&
		old_kernel ubuntu22.04-5.15-amd64 \
			http://archive.ubuntu.com/ubuntu/pool/main/l/linux/linux-image-unsigned-5.15.0-208-generic_5.15.0-208.218_amd64.deb \
			dfcb46169cf058ac7b83fba89e2a9adbb3841fb63ba91c9d99418638ec6a4a8b
}
# Without them only test/kernels cannot run (it says so, and fails under CI).
if [ "${1:-test}" != "run" ]; then
	arm64_kernel || echo "setup: could not fetch the arm64 kernel for test/kernels" >&2
	old_kernels || echo "setup: could not fetch the older kernels for test/kernels" >&2
fi

# Go is not taken from Debian: its golang-go is far older than go.mod needs.
# Machines of this kind ship it at /usr/local/go.
if ! command -v go >/dev/null 2>&1; then
	echo "setup: Go is missing: install Go $(sed -n 's/^go //p' go.mod) or newer at /usr/local/go" >&2
	exit 1
fi
go mod download

#!/bin/bash
# Builds the project's kernel: Debian's linux-source-6.12 with kernel-patches/series applied,
# configured from tinyconfig plus kernel-patches/config.fragment, everything built in.
#
#   build-kernel.sh               build (or reuse) and print the bzImage's path on the last line
#   build-kernel.sh --print-path  print where the bzImage for this series is (or would be)
#   build-kernel.sh --source-dir  prepare the patched source tree and print its path
#   build-kernel.sh --pristine-dir fetch the unpatched source and print its path
#
# The configuration leaves CONFIG_DMABUF_MOVE_NOTIFY unset, as Debian's 6.12 does; with
# DMABROKER_KERNEL_MOVE_NOTIFY=y in the environment it builds (and caches under its own key)
# the same kernel with it set, for the KUnit run on both settings.
#
# Everything lives in $DMABROKER_CACHE (default /var/cache/dmabroker), never in the repository:
#   kernel-src/   the source package, its pristine unpacked tree, the working tree
#   kernel-build/obj          one object tree, reused so a changed series rebuilds little
#   kernel-build/<key>/       the result for one key = source version + fragment + series + script
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${DMABROKER_CACHE:-/var/cache/dmabroker}
src=$cache/kernel-src
build=$cache/kernel-build
obj=$build/obj
mode=${1:-build}

log() { echo "build-kernel: $*" >&2; }

install_deps() {
	local need=() p
	for p in flex bison bc libelf-dev libssl-dev build-essential cpio xz-utils rsync perl; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
	done
	if [ ${#need[@]} -gt 0 ]; then
		log "installing ${need[*]}"
		apt-get update -qq >&2
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
	fi
}

# The source package's version, from apt (the newest linux-source-6.12).
source_version() {
	local v
	v=$(apt-cache policy linux-source-6.12 2>/dev/null | awk '/Candidate:/ {print $2}')
	if [ -z "$v" ] || [ "$v" = "(none)" ]; then
		apt-get update -qq >&2
		v=$(apt-cache policy linux-source-6.12 | awk '/Candidate:/ {print $2}')
	fi
	[ -n "$v" ] && [ "$v" != "(none)" ] || { log "apt offers no linux-source-6.12"; exit 1; }
	echo "$v"
}

move_notify=${DMABROKER_KERNEL_MOVE_NOTIFY:-n}
case $move_notify in
y | n) ;;
*) log "DMABROKER_KERNEL_MOVE_NOTIFY must be y or n"; exit 2 ;;
esac
# The fragment this build uses: config.fragment, with MOVE_NOTIFY switched on for the variant.
fragment() {
	if [ "$move_notify" = y ]; then
		sed 's/^# CONFIG_DMABUF_MOVE_NOTIFY is not set$/CONFIG_DMABUF_MOVE_NOTIFY=y/' \
			"$here/config.fragment"
	else
		cat "$here/config.fragment"
	fi
}

series_files() {
	grep -vE '^\s*(#|$)' "$here/series" | while read -r p; do echo "$here/$p"; done
}

version=$(source_version)
key=$( (echo "$version"; fragment; series_files | xargs cat; cat "$0") |
	sha256sum | cut -c1-16)
out=$build/$key

if [ "$mode" = --print-path ]; then
	echo "$out/bzImage"
	exit 0
fi
if [ "$mode" = build ] && [ -f "$out/bzImage" ]; then
	log "reusing the kernel built for this series ($key)"
	echo "$out/bzImage"
	exit 0
fi

install_deps

# --- the pristine source, once per source version ---
if [ "$(cat "$src/VERSION" 2>/dev/null)" != "$version" ]; then
	log "fetching linux-source-6.12 $version"
	rm -rf "$src" "$obj"
	mkdir -p "$src"
	(cd "$src" && apt-get download -q -o APT::Sandbox::User=root "linux-source-6.12=$version" >&2)
	dpkg-deb --fsys-tarfile "$src"/linux-source-6.12_*.deb |
		tar -xO ./usr/src/linux-source-6.12.tar.xz >"$src/linux-source-6.12.tar.xz"
	rm -f "$src"/linux-source-6.12_*.deb
	mkdir -p "$src/pristine"
	tar -xJf "$src/linux-source-6.12.tar.xz" -C "$src/pristine"
	rm -f "$src/linux-source-6.12.tar.xz"
	echo "$version" >"$src/VERSION"
fi
pristine=$src/pristine/linux-source-6.12
tree=$src/tree
if [ "$mode" = --pristine-dir ]; then
	echo "$pristine"
	exit 0
fi

# --- the working tree: pristine plus the series ---
# Files the last series touched go back to pristine and are touched, so that make rebuilds
# them even though their restored contents are older than their objects. They are replaced,
# never written in place: mutation-test.py hard-links this tree.
if [ ! -d "$tree" ]; then
	cp -a "$pristine" "$tree"
fi
if [ -f "$tree/.dmabroker-touched" ]; then
	while read -r f; do
		if [ -e "$pristine/$f" ]; then
			rm -f "$tree/$f"
			cp -a "$pristine/$f" "$tree/$f"
			touch "$tree/$f"
		else
			rm -f "$tree/$f"
		fi
	done <"$tree/.dmabroker-touched"
	rm -f "$tree/.dmabroker-touched"
fi
touched=$(mktemp)
for p in $(series_files); do
	[ -f "$p" ] || { log "series names $(basename "$p"), which is missing"; exit 1; }
	if ! (cd "$tree" && patch -p1 --dry-run --batch --forward --quiet <"$p" >/dev/null); then
		log "$(basename "$p") does not apply to linux-source-6.12 $version:"
		(cd "$tree" && patch -p1 --dry-run --batch --forward <"$p" >&2) || true
		exit 1
	fi
	(cd "$tree" && patch -p1 --batch --forward --quiet <"$p")
	lsdiff --strip=1 "$p" 2>/dev/null >>"$touched" ||
		grep -E '^\+\+\+ b/' "$p" | sed 's|^+++ b/||' >>"$touched"
done
sort -u "$touched" >"$tree/.dmabroker-touched"
rm -f "$touched"

if [ "$mode" = --source-dir ]; then
	echo "$tree"
	exit 0
fi

# --- configure and build ---
mkdir -p "$obj"
start=$(date +%s)
make -s -C "$tree" O="$obj" tinyconfig >/dev/null
fragment >"$obj/dmabroker.fragment"
"$tree/scripts/kconfig/merge_config.sh" -m -O "$obj" "$obj/.config" "$obj/dmabroker.fragment" >/dev/null
make -s -C "$tree" O="$obj" olddefconfig >/dev/null
lost=$(grep -E '^CONFIG_' "$obj/dmabroker.fragment" | while read -r o; do
	grep -qx "$o" "$obj/.config" || echo "$o"
done
{ grep -E '^# CONFIG_[A-Z0-9_]+ is not set$' "$obj/dmabroker.fragment" || true; } | while read -r o; do
	o=${o#"# "}
	o=${o%" is not set"}
	if grep -q "^$o=" "$obj/.config"; then echo "$o (must stay unset)"; fi
done)
if [ -n "$lost" ]; then
	log "these fragment options did not survive olddefconfig:"
	echo "$lost" >&2
	exit 1
fi
log "building bzImage in $obj ($(nproc) jobs)"
make -s -C "$tree" O="$obj" -j"$(nproc)" bzImage >&2
mkdir -p "$out"
cp "$obj/arch/x86/boot/bzImage" "$out/bzImage.tmp"
cp "$obj/.config" "$out/config"
series_files | xargs -n1 basename >"$out/series"
mv "$out/bzImage.tmp" "$out/bzImage"
log "built in $(($(date +%s) - start)) s"
echo "$out/bzImage"

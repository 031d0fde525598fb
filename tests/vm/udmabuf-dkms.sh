#!/bin/bash
# kernel-module/udmabuf through DKMS, as a Debian 12 user would install it, in private DKMS
# trees (nothing registered with the system's DKMS): dkms add, build (patched, signed with
# DKMS's MOK) and install for the newest installed linux-headers-6.1.0-N-amd64; its
# BUILD_EXCLUSIVE rules decline a kernel with CONFIG_UDMABUF and a kernel other than 6.1; and
# the module DKMS installed loads in a guest on that same 6.1 kernel and gives /dev/udmabuf.
set -uo pipefail
src=$(cd "$(dirname "$0")/../../kernel-module/udmabuf" && pwd)
vm_run=$(dirname "$0")/vm-run
n=0
failed=0
ok() {
	n=$((n + 1))
	if [ "$1" = 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; failed=$((failed + 1)); fi
}
bail() {
	echo "Bail out! $*"
	exit 1
}

name=$(sed -n 's/^PACKAGE_NAME="\(.*\)"$/\1/p' "$src/dkms.conf")
version=$(sed -n 's/^PACKAGE_VERSION="\(.*\)"$/\1/p' "$src/dkms.conf")
command -v dkms >/dev/null || bail "no dkms: scripts/install-deps installs it"
headers=$(ls -d /usr/src/linux-headers-6.1.0-*-amd64 2>/dev/null | sort -V | tail -1)
[ -n "$headers" ] || bail "no linux-headers-6.1.0-N-amd64: scripts/install-deps installs them"
release=${headers#/usr/src/linux-headers-}
echo "# $name/$version for $release"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/src" "$tmp/dkms" "$tmp/install/$release/kernel"
cp -r "$src" "$tmp/src/$name-$version"
trees=(--sourcetree "$tmp/src" --dkmstree "$tmp/dkms" --installtree "$tmp/install")

dkms add "${trees[@]}" "$name/$version" >"$tmp/log" 2>&1
ok $? "dkms add $name/$version"
start=$(date +%s.%N)
dkms build "${trees[@]}" "$name/$version" -k "$release" >"$tmp/log" 2>&1
status=$?
sed 's/^/#   /' "$tmp/log"
ok $status "dkms build -k $release ($(printf '%.1f' "$(echo "$(date +%s.%N) - $start" | bc)") s)"
grep -q "applying patch 0001-" "$tmp/log"
ok $? "dkms applied the VM_PFNMAP patch (PATCH[0])"
dkms install --no-depmod "${trees[@]}" "$name/$version" -k "$release" >"$tmp/log" 2>&1
ok $? "dkms install -k $release (into a private install tree)"
ko=$tmp/install/$release/updates/dkms/udmabuf.ko
[ -f "$ko" ] && [ "$(modinfo -F vermagic "$ko" | awk '{print $1}')" = "$release" ]
ok $? "the installed udmabuf.ko is built for $release"
signer=$(modinfo -F signer "$ko" 2>/dev/null)
[ -n "$signer" ]
ok $? "DKMS signed it with its MOK for Secure Boot (signer: ${signer:-none})"
dkms status --dkmstree "$tmp/dkms" | grep -q "$name/$version, $release, .*installed"
ok $? "dkms status says installed"

# A kernel that has udmabuf: the same headers with CONFIG_UDMABUF=y.
cp -rs "$headers" "$tmp/with-udmabuf"
rm "$tmp/with-udmabuf/.config"
sed 's/^# CONFIG_UDMABUF is not set$/CONFIG_UDMABUF=y/' "$headers/.config" >"$tmp/with-udmabuf/.config"
dkms build "${trees[@]}" "$name/$version" -k "$release" --kernelsourcedir "$tmp/with-udmabuf" \
	--force >"$tmp/log" 2>&1
status=$?
[ $status = 77 ] && grep -q BUILD_EXCLUSIVE "$tmp/log"
ok $? "a kernel with CONFIG_UDMABUF=y is declined (BUILD_EXCLUSIVE_CONFIG, exit $status)"
cp -rs "$headers" "$tmp/other"
dkms build "${trees[@]}" "$name/$version" -k 6.12.0-1-amd64 --kernelsourcedir "$tmp/other" \
	>"$tmp/log" 2>&1
status=$?
[ $status = 77 ] && grep -q BUILD_EXCLUSIVE "$tmp/log"
ok $? "a kernel other than 6.1 is declined (BUILD_EXCLUSIVE_KERNEL, exit $status)"

# The module DKMS installed, in a guest on that kernel.
out=$(DMABROKER_VM_KERNEL_VERSION=${release%-amd64} "$vm_run" --debian-kernel 6.1 --module "$ko" \
	--timeout 300 -- sh -c 'uname -r; test -c /dev/udmabuf && echo udmabuf-ok' 2>&1 | tr -d '\r')
echo "$out" | sed 's/^/#   /'
echo "$out" | grep -q "^$release\$" && echo "$out" | grep -q '^udmabuf-ok$'
ok $? "the DKMS-built module loads into $release in the guest and /dev/udmabuf appears"

echo "1..$n"
[ $failed = 0 ]

#!/bin/bash
# The kernel's own selftests for udmabuf and dma-heaps, built from the same patched source as
# the kernel, run in the guest on that kernel. TAP, one point per selftest case.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
cache=${DMABROKER_CACHE:-/var/cache/dmabroker}
bzimage=$("$top/kernel-patches/build-kernel.sh" | tail -1)
tree=$("$top/kernel-patches/build-kernel.sh" --source-dir | tail -1)
out=$(dirname "$bzimage")/selftests
mkdir -p "$out"
# The uapi headers of this very source (udmabuf.h, dma-heap.h, drm/drm.h).
if [ ! -d "$out/usr/include/linux" ]; then
	make -s -C "$tree" O="$out/hdr" headers_install INSTALL_HDR_PATH="$out/usr" >&2
fi
st=$tree/tools/testing/selftests
gcc -O2 -Wall -I "$out/usr/include" -I "$st" -o "$out/udmabuf" \
	"$st/drivers/dma-buf/udmabuf.c"
gcc -O2 -Wall -I "$out/usr/include" -I "$st" -o "$out/dmabuf-heap" \
	"$st/dmabuf-heaps/dmabuf-heap.c"
# The udmabuf selftest maps 1,024 huge pages (2 GiB) in its last case.
exec "$top/tests/kernel/on-patched-kernel.sh" --mem 3584 --timeout 900 -- \
	"$top/tests/kernel/run-selftests.sh" "$out"

#!/bin/bash
# The series applies cleanly, in order, to the pristine linux-source-6.12, and
# scripts/checkpatch.pl --strict passes on every patch: exit status 0 and
# "total: 0 errors, 0 warnings, 0 checks". TAP.
#
# checkpatch runs its SPDX check only in a git work tree (it looks for .git) and only if
# scripts/spdxcheck.py can run, which needs python3-ply and python3-git. The source package
# is a tarball, so checkpatch runs from a checkpatch root in the cache: the pristine tree's
# entries as symlinks, and LICENSES/ committed to a git repository (spdxcheck.py reads the
# license list from HEAD). A canary patch with a made-up license proves the check runs.
#
# A stable backport ("commit <40 hex> upstream." as its first body line, the form
# Documentation/process/stable-kernel-rules.rst asks for) is checked with GIT_COMMIT_ID and
# UNKNOWN_COMMIT_ID ignored: that line is not the 'commit <sha> ("title")' style checkpatch
# wants, and the tarball has no history in which checkpatch could look the commit up.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
cache=${DMABROKER_CACHE:-/var/cache/dmabroker}
pristine=$("$top/kernel-patches/build-kernel.sh" --pristine-dir | tail -1)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mapfile -t patches < <(grep -vE '^\s*(#|$)' "$top/kernel-patches/series")
# Debian's python3, which has python3-ply and python3-git, before any other in PATH.
export PATH=/usr/bin:/bin:$PATH

n=0
failed=0
ok() {
	n=$((n + 1))
	echo "ok $n - $*"
}
not_ok() {
	n=$((n + 1))
	echo "not ok $n - $*"
	failed=$((failed + 1))
}

# --- the checkpatch root ---
root=$cache/kernel-src/checkpatch-root
if [ "$(cat "$root/.source" 2>/dev/null)" != "$pristine" ] || [ ! -d "$root/.git" ]; then
	rm -rf "$root"
	mkdir -p "$root"
	for e in "$pristine"/*; do
		[ "$(basename "$e")" = LICENSES ] || ln -s "$e" "$root/$(basename "$e")"
	done
	cp -a "$pristine/LICENSES" "$root/LICENSES"
	git -C "$root" init -q
	git -C "$root" add LICENSES
	git -C "$root" -c user.name=dmabroker -c user.email=dmabroker@lists.invalid \
		commit -q -m "LICENSES of linux-source-6.12, for scripts/spdxcheck.py"
	echo "$pristine" >"$root/.source"
fi

checkpatch() {
	(cd "$root" && perl scripts/checkpatch.pl --strict "$@" 2>&1)
}

# --- the SPDX check runs: spdxcheck.py works, and checkpatch reports a made-up license ---
if spdx=$(cd "$root" && echo "GPL-2.0-only" | scripts/spdxcheck.py - 2>&1) && [ -z "$spdx" ]; then
	ok "scripts/spdxcheck.py runs (python3-ply, python3-git, LICENSES in git)"
else
	not_ok "scripts/spdxcheck.py runs"
	echo "$spdx" | sed 's/^/# /'
fi
canary=$work/canary.patch
cat >"$canary" <<'EOF'
From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001
From: dmabroker developers <dmabroker@lists.invalid>
Date: Wed, 25 Nov 2026 00:00:00 +0000
Subject: [PATCH] dma-buf: canary with a license that does not exist

The checkpatch harness checks that checkpatch's SPDX check runs.

Signed-off-by: dmabroker developers <dmabroker@lists.invalid>
---
 drivers/dma-buf/canary.c | 2 ++
 1 file changed, 2 insertions(+)
 create mode 100644 drivers/dma-buf/canary.c

diff --git a/drivers/dma-buf/canary.c b/drivers/dma-buf/canary.c
new file mode 100644
index 000000000000..111111111111
--- /dev/null
+++ b/drivers/dma-buf/canary.c
@@ -0,0 +1,2 @@
+// SPDX-License-Identifier: GPL-2.0-dmabroker-canary
+int dma_buf_canary;
EOF
out=$(checkpatch "$canary" || true)
if echo "$out" | grep -q "GPL-2.0-dmabroker-canary' is not supported in LICENSES/"; then
	ok "checkpatch's SPDX check runs: it rejects a made-up license"
else
	not_ok "checkpatch's SPDX check runs: it rejects a made-up license"
	echo "$out" | sed 's/^/# /'
fi

# --- a copy of just the files the series touches, to apply it in order ---
for p in "${patches[@]}"; do
	grep -E '^(\+\+\+|---) [ab]/' "$top/kernel-patches/$p" | sed -E 's#^(\+\+\+|---) [ab]/##'
done | sort -u | while read -r f; do
	if [ -e "$pristine/$f" ]; then
		mkdir -p "$work/tree/$(dirname "$f")"
		cp "$pristine/$f" "$work/tree/$f"
	fi
done
mkdir -p "$work/tree"

for p in "${patches[@]}"; do
	if (cd "$work/tree" && patch -p1 --batch --forward --quiet <"$top/kernel-patches/$p" >/dev/null); then
		ok "$p applies"
	else
		not_ok "$p applies"
	fi
	opts=()
	if grep -qE '^commit [0-9a-f]{40} upstream\.$' "$top/kernel-patches/$p"; then
		opts=(--ignore GIT_COMMIT_ID,UNKNOWN_COMMIT_ID)
		echo "# $p is a stable backport: GIT_COMMIT_ID and UNKNOWN_COMMIT_ID ignored"
	fi
	status=0
	out=$(checkpatch "${opts[@]}" "$top/kernel-patches/$p") || status=$?
	total=$(echo "$out" | grep -E '^total:' || echo "total: no result")
	if [ $status = 0 ] && [ "$(echo "$total" | cut -d, -f1-3)" = "total: 0 errors, 0 warnings, 0 checks" ]; then
		ok "checkpatch --strict $p: $total"
	else
		not_ok "checkpatch --strict $p: exit $status, $total"
		echo "$out" | sed 's/^/# /'
	fi
done
echo "1..$n"
echo "# $((n - failed)) passed, $failed failed"
[ "$failed" = 0 ]

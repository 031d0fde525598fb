#!/bin/bash
# The series applies cleanly, in order, to the pristine linux-source-6.12, and
# scripts/checkpatch.pl --strict finds no error, warning or check in any patch. TAP.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
pristine=$("$top/kernel-patches/build-kernel.sh" --pristine-dir | tail -1)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mapfile -t patches < <(grep -vE '^\s*(#|$)' "$top/kernel-patches/series")

# A copy of just the files the series touches, to apply it in order.
for p in "${patches[@]}"; do
	grep -E '^(\+\+\+|---) [ab]/' "$top/kernel-patches/$p" | sed -E 's#^(\+\+\+|---) [ab]/##'
done | sort -u | while read -r f; do
	if [ -e "$pristine/$f" ]; then
		mkdir -p "$work/$(dirname "$f")"
		cp "$pristine/$f" "$work/$f"
	fi
done

n=0
failed=0
for p in "${patches[@]}"; do
	n=$((n + 1))
	if (cd "$work" && patch -p1 --batch --forward --quiet <"$top/kernel-patches/$p" >/dev/null); then
		echo "ok $n - $p applies"
	else
		echo "not ok $n - $p applies"
		failed=$((failed + 1))
	fi
	n=$((n + 1))
	out=$(cd "$pristine" && perl scripts/checkpatch.pl --strict \
		"$top/kernel-patches/$p" 2>&1 || true)
	total=$(echo "$out" | grep -E '^total:' || echo "total: no result")
	if echo "$total" | grep -q '^total: 0 errors, 0 warnings, 0 checks'; then
		echo "ok $n - checkpatch --strict $p: $total"
	else
		echo "not ok $n - checkpatch --strict $p: $total"
		echo "$out" | sed 's/^/# /'
		failed=$((failed + 1))
	fi
done
echo "1..$n"
echo "# $((n - failed)) passed, $failed failed"
[ "$failed" = 0 ]

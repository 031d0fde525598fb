#!/bin/bash
# In the guest: the KUnit suites ran at boot; turn their KTAP results (debugfs) into flat TAP,
# one point per test case and per parameter of a parameterised case:
#   ok N - suite: case            (indented 4: a case)
#   ok N - suite: case: param     (indented 8: a parameter, under "# Subtest: case")
# A skipped case or parameter is a failure: the kernel tests boot with hugepages=4 so that
# every case runs, and a KUnit "# SKIP" means it did not (KUNIT_ALLOW_SKIP=1 to allow it).
set -uo pipefail
allow_skip=${KUNIT_ALLOW_SKIP:-0}
dir=/sys/kernel/debug/kunit
if [ ! -d "$dir" ]; then
	echo "Bail out! no $dir: the kernel has no KUnit debugfs"
	exit 1
fi
n=0
failed=0
skipped=0
for suite in "$dir"/*/; do
	name=$(basename "$suite")
	current=""
	while IFS= read -r line; do
		stripped=${line#"${line%%[! ]*}"}
		indent=$((${#line} - ${#stripped}))
		case $stripped in
		"# Subtest: "*)
			[ $indent = 8 ] && current=${stripped#"# Subtest: "}
			continue
			;;
		"ok "* | "not ok "*) ;;
		"# "*)
			echo "# $name: ${stripped#"# "}"
			continue
			;;
		*) continue ;;
		esac
		[ $indent = 0 ] && continue # the suite's own line
		verdict=${stripped%% *}
		[ "$verdict" = not ] && verdict="not ok"
		desc=$(echo "$stripped" | sed -E 's/^(not ok|ok) [0-9]+ //')
		n=$((n + 1))
		if [ $indent -ge 8 ]; then
			desc="$current: $desc"
		fi
		case $desc in
		*" # SKIP"*)
			skipped=$((skipped + 1))
			if [ "$allow_skip" = 1 ]; then
				echo "ok $n - $name: ${desc%% # SKIP*} # SKIP${desc#* # SKIP}"
			else
				echo "not ok $n - $name: ${desc%% # SKIP*} (skipped:${desc#* # SKIP}; skips fail here)"
				failed=$((failed + 1))
			fi
			continue
			;;
		esac
		if [ "$verdict" = ok ]; then
			echo "ok $n - $name: $desc"
		else
			echo "not ok $n - $name: $desc"
			failed=$((failed + 1))
		fi
	done <"$suite/results"
done
echo "1..$n"
echo "# $((n - failed - (allow_skip == 1 ? skipped : 0))) passed, $failed failed, $skipped skipped"
[ $n -gt 0 ] && [ $failed = 0 ]

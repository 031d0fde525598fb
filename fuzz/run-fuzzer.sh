#!/bin/bash
# A short, bounded fuzzing run: replay the committed seed corpus, then fuzz for SECONDS,
# keeping new inputs in the build directory (never in the repository).
#   run-fuzzer.sh TARGET SEED_DIR WORK_DIR SECONDS
set -euo pipefail
target=$1 seeds=$2 work=$3 seconds=$4
mkdir -p "$work/corpus" "$work/artifacts"
# A pointer into a frame that returned (a decoder's struct copied out with its sets still
# pointing into it) reads the right bytes until something reuses the stack: make it an error.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_stack_use_after_return=1"
"$target" -runs=0 "$seeds"
exec "$target" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
	-artifact_prefix="$work/artifacts/" "$work/corpus" "$seeds"

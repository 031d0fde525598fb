#!/bin/bash
# Runs vm-run on the project's patched kernel (built or reused by build-kernel.sh).
#   on-patched-kernel.sh [VM-RUN OPTION...] -- COMMAND [ARG...]
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
bzimage=$("$top/kernel-patches/build-kernel.sh" | tail -1)
exec "$top/tests/vm/vm-run" --kernel "$bzimage" --modules none "$@"

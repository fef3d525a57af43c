#!/usr/bin/env bash
# The test command: the whole suite, slow and browser tests included (all sized for 2 CPU cores).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d .venv ] && . .venv/bin/activate
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
# the allocator the programs use (rlhp_core/allocator.py), so tests and benchmarks run as users do
lib=$(python -c 'from rlhp_core.allocator import find_tcmalloc; print(find_tcmalloc() or "")')
if [ -n "$lib" ] && [ "${RLHP_MALLOC:-tcmalloc}" = tcmalloc ]; then
  export LD_PRELOAD="$lib${LD_PRELOAD:+:$LD_PRELOAD}"
fi
python -m pytest -q "$@"

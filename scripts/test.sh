#!/usr/bin/env bash
# The test command. Set up first with `bash scripts/setup.sh --test`.
#
#   bash scripts/test.sh          the whole suite, slow and browser tests included (what CI runs)
#   bash scripts/test.sh --fast   the everyday subset, -m "not slow and not browser" (a few minutes)
#   bash scripts/test.sh ARGS     any pytest arguments, e.g. tests/unit/test_oracles.py or -m browser
#   bash scripts/test.sh tests/unit   one layer: tests/unit, tests/integration, tests/e2e, tests/benchmarks
#
# Markers (pyproject.toml): slow, browser, postgres; tests/README.md says which tests carry them.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d .venv ] && . .venv/bin/activate
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
# the allocator the programs use (rlhp_core/allocator.py), so tests and benchmarks run as users do
lib=$(python -c 'from rlhp_core.allocator import find_tcmalloc; print(find_tcmalloc() or "")')
if [ -n "$lib" ] && [ "${RLHP_MALLOC:-tcmalloc}" = tcmalloc ]; then
  export LD_PRELOAD="$lib${LD_PRELOAD:+:$LD_PRELOAD}"
fi
selected=0
if [ "${1-}" = --fast ]; then
  shift
  set -- -m "not slow and not browser" "$@"
fi
for arg in "$@"; do
  case "$arg" in -m | -m* | -k | -k* | --deselect*) selected=1 ;; esac
done
# Two pytest workers (pytest-xdist), a test file each at a time: the tests run one torch thread
# each, so on CI's 2 cores the suite takes about half the time. RLHP_TEST_WORKERS=0: one process
# (pdb, or timing a benchmark alone; benchmarks are off under xdist).
workers=${RLHP_TEST_WORKERS:-2}
parallel=()
[ "$workers" != 0 ] && parallel=(-n "$workers" --dist loadfile)
rc=0
python -m pytest -q --durations=30 "${parallel[@]}" "$@" || rc=$?
if [ "$rc" = 5 ] && [ "$selected" = 1 ]; then
  # pytest's "no tests collected": a marker or keyword selection can match nothing, which is no failure
  echo "scripts/test.sh: no test matches this selection (pytest exit status 5); nothing to run" >&2
  exit 0
fi
exit "$rc"

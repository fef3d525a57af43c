#!/usr/bin/env bash
# The test command: the whole suite, slow and browser tests included (all sized for 2 CPU cores).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d .venv ] && . .venv/bin/activate
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
python -m pytest -q "$@"

#!/usr/bin/env bash
# One-time set-up on a fresh machine: system packages (headless Chromium for the labeling-page
# tests, PostgreSQL for the multi-worker sweep test, tcmalloc for speed), a virtualenv in .venv
# with the pinned CPU build of torch first (a plain `torch` requirement would pull a multi-GB
# CUDA build), then this project with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "warning: could not install Debian's chromium; browser tests will be skipped" >&2
  else
    echo "note: install Debian's chromium (apt-get install chromium) to run the browser tests" >&2
  fi
fi
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
  # the multi-worker sweep test starts a throwaway PostgreSQL server (tests/test_sweep_postgres.py)
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
      || echo "warning: could not install PostgreSQL; the multi-worker sweep test will be skipped" >&2
  else
    echo "note: install PostgreSQL (apt-get install postgresql) to run the multi-worker sweep test" >&2
  fi
fi
if ! ls /usr/lib/*/libtcmalloc_minimal.so.4 /usr/lib*/libtcmalloc_minimal.so.4 >/dev/null 2>&1; then
  # tcmalloc: glibc's malloc page-faults through every big activation buffer; with tcmalloc the
  # Enduro loop runs 1.7x faster (rlhp_core/allocator.py). The programs use it when it is there.
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libtcmalloc-minimal4 >/dev/null) \
      || echo "warning: could not install tcmalloc; training runs on glibc's malloc (slower)" >&2
  else
    echo "note: install tcmalloc (apt-get install libtcmalloc-minimal4): training on a CPU is ~1.7x faster with it" >&2
  fi
fi
[ -d .venv ] || python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[test]"

#!/usr/bin/env bash
# One-time set-up on a fresh machine (rerunning it is harmless).
#
#   bash scripts/setup.sh          the main job: a virtualenv in .venv with the pinned CPU build of
#                                  torch first (a plain `torch` requirement would pull a multi-GB CUDA
#                                  build), then this project. Optional: tcmalloc, installed from apt
#                                  only when run as root (training on a CPU is ~1.7x faster with it,
#                                  rlhp_core/allocator.py); without root, a note says how to add it.
#                                  Needs neither root nor apt.
#   bash scripts/setup.sh --test   the above, plus what the tests add: the project's [test] extras
#                                  (pytest, pytest-benchmark, Playwright), Debian's chromium (the
#                                  labeling-page tests) and PostgreSQL (the multi-worker sweep test),
#                                  from apt when root. Tests whose program is missing are skipped.
#
# RLHP_SETUP_STRICT=1 (CI) makes a system package that cannot be installed an error, not a note.
set -euo pipefail
cd "$(dirname "$0")/.."

tests=0
case "$#:${1-}" in
  0:) ;;
  1:--test) tests=1 ;;
  1:-h | 1:--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "usage: bash scripts/setup.sh [--test]" >&2; exit 2 ;;
esac

is_root=0
[ "$(id -u)" = 0 ] && is_root=1
apt_updated=0

strict=${RLHP_SETUP_STRICT:-0}

# optional_package PACKAGE WHY: a Debian package from apt when we are root; otherwise only a note on
# how to add it. apt is never run without root, and a package that is missing fails the set-up only
# under RLHP_SETUP_STRICT=1: every system package here is optional.
optional_package() {
  local package=$1 why=$2
  if [ "$is_root" != 1 ]; then
    echo "note: not root, so $package is not installed; as root: apt-get install $package ($why)" >&2
    [ "$strict" != 1 ] || { echo "error: RLHP_SETUP_STRICT=1 and $package is missing" >&2; exit 1; }
    return 0
  fi
  if [ "$apt_updated" = 0 ]; then
    apt-get update -qq || true
    apt_updated=1
  fi
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null; then
    echo "warning: could not install $package from apt ($why)" >&2
    [ "$strict" != 1 ] || { echo "error: RLHP_SETUP_STRICT=1 and $package is missing" >&2; exit 1; }
  fi
}

# -- the main job --------------------------------------------------------------------------------
if [ ! -x .venv/bin/python ] && ! python3 -m venv .venv; then
  rm -rf .venv
  # a bare Debian image lacks Python's venv module (ensurepip): as root, add it; otherwise say how
  if [ "$is_root" = 1 ]; then
    optional_package python3-venv "needed to make .venv"
  fi
  python3 -m venv .venv || {
    rm -rf .venv
    echo "error: python3 -m venv failed; install Python's venv module (Debian: apt-get install python3-venv)" >&2
    exit 1
  }
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.13.0
python -m pip install -q -e .

# tcmalloc: glibc's malloc page-faults through every big activation buffer; with tcmalloc the Enduro
# loop runs 1.7x faster and no number changes. The programs use it whenever it is there.
if [ -z "$(python -c 'from rlhp_core.allocator import find_tcmalloc; print(find_tcmalloc() or "")')" ]; then
  optional_package libtcmalloc-minimal4 "training on a CPU is ~1.7x faster with tcmalloc; it runs without it"
fi

# -- what the tests add --------------------------------------------------------------------------
if [ "$tests" = 1 ]; then
  python -m pip install -q -e ".[test]"
  if [ ! -x /usr/bin/chromium ]; then  # tests/*/test_human*.py drive Debian's chromium (never `playwright install`)
    optional_package chromium "without it the labeling-page browser tests are skipped"
  fi
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
    optional_package postgresql "without it the multi-worker sweep test (tests/e2e/test_sweep_postgres.py) is skipped"
  fi
fi

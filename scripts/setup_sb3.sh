#!/usr/bin/env bash
# The positive control's peer, in a virtualenv of its own (.venv-sb3): Stable-Baselines3 is a
# yardstick for our PPO, not a dependency of rlhp. Same torch (the CPU build on this disk), same
# gymnasium and ale-py versions as .venv, so the emulator and the env ids are the same.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d .venv-sb3 ] || python3 -m venv .venv-sb3
. .venv-sb3/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.13.0
versions=$(.venv/bin/python -c 'import importlib.metadata as m; print(" ".join(f"{p}=={m.version(p)}" for p in ("gymnasium", "ale-py", "numpy")))')
# shellcheck disable=SC2086
python -m pip install -q "stable-baselines3==2.9.2" opencv-python-headless $versions
python -c 'import stable_baselines3, ale_py, gymnasium; print("sb3", stable_baselines3.__version__, "ale-py", ale_py.__version__, "gymnasium", gymnasium.__version__)'

"""Where and with what a result was made: the machine and the package versions."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

from rlhp_core.allocator import active_allocator

PACKAGES = ("rlhp", "torch", "gymnasium", "ale-py", "numpy", "optuna", "mlflow", "pandas", "seaborn", "scipy")


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 2**20:.0f} GiB"
    except (OSError, ValueError):
        pass
    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    out = {"host": platform.node(), "nproc": nproc, "cpu": cpu, "memory": mem,
           "os": platform.platform(), "python": platform.python_version(),
           "malloc": active_allocator()}  # tcmalloc vs glibc: 1.7x on the Enduro loop (rlhp_core/allocator.py)
    torch = sys.modules.get("torch")  # only when the learner has loaded it already
    if torch is not None:
        try:
            out["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""
        except Exception:
            pass
    return out


def versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    try:  # read-only git calls (GIT_OPTIONAL_LOCKS=0: status must not refresh the index)
        root = Path(__file__).resolve().parents[1]
        env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10, env=env).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, env=env).stdout.strip()
        if commit:
            out["rlhp git commit"] = commit + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return out

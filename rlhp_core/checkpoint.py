"""Checkpoints that are either whole or absent.

Each checkpoint is a directory ``checkpoints/step-<N>/`` holding ``state.pt`` and, written
last, ``COMPLETE``. It is assembled under a temporary name and renamed into place, so a
crash at any moment leaves either the previous checkpoints or a finished new one; a
directory without ``COMPLETE`` (or with a foreign or corrupt ``state.pt``) is never loaded.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import torch

FORMAT = "rlhp-checkpoint"
VERSION = 1
KEEP = 2


class CheckpointError(ValueError):
    pass


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def save_checkpoint(run_dir: Path, step: int, state: dict, keep: int = KEEP) -> Path:
    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:012d}"
    tmp = root / f".tmp-step-{step:012d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, "step": step, "state": state}, buf)
    _fsync_write(tmp / "state.pt", buf.getvalue())
    _fsync_write(tmp / "COMPLETE", str(step).encode())
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in complete_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def complete_checkpoints(run_dir: Path) -> list[Path]:
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step-*") if (p / "COMPLETE").is_file() and (p / "state.pt").is_file())


def read_checkpoint(path: Path) -> dict:
    """Load one checkpoint directory or state file, refusing anything that is not ours."""
    path = Path(path)
    file = path / "state.pt" if path.is_dir() else path
    try:
        blob = torch.load(file, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a truncated or alien file
        raise CheckpointError(f"checkpoint {file} is corrupt or not a torch file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise CheckpointError(f"{file} is not an rlhp checkpoint (expected format {FORMAT!r})")
    if blob.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {file} has version {blob.get('version')}; this code reads version {VERSION}")
    return blob


def load_latest(run_dir: Path) -> dict | None:
    """The newest complete checkpoint's payload, or None if there is none.

    A checkpoint marked complete that still fails to load is an error, not something to skip
    silently: the user should know their run directory is damaged.
    """
    found = complete_checkpoints(run_dir)
    if not found:
        return None
    return read_checkpoint(found[-1])

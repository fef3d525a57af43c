"""Checkpoints that are either whole and verified, or refused.

Each checkpoint is a directory ``checkpoints/step-<N>/`` holding ``state.pt`` and, written
last, ``COMPLETE``: a JSON record of the step and of the size and SHA-256 of ``state.pt``. The
directory is assembled under a temporary name, fsynced and renamed into place, so a crash at
any moment leaves either the previous checkpoints or a finished new one.

The checksum is there because a completion marker only says that a write finished: flipped or
overwritten bytes later on still unpickle without complaint and wreck the policy. Nothing is
loaded before its bytes match the record.

``load_latest`` uses the newest checkpoint that verifies and names every newer one it skipped
(damaged, unfinished or unreadable) in a ``CheckpointWarning``. If checkpoint directories exist but none verifies it raises
``CheckpointError`` instead of returning None, because None means "fresh start": the learner
would begin again at step 0 and truncate metrics.csv over the run's history.

Checkpoints written before the checksum existed (``COMPLETE`` holding only the step number)
are loaded with a ``CheckpointWarning``: the rename protocol marked them complete, refusing them
would strand every run started before this change, and they must still unpickle as an rlhp
checkpoint. Their bytes cannot be verified; rotation drops them once ``KEEP`` verified ones exist.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import warnings
from pathlib import Path

import torch

FORMAT = "rlhp-checkpoint"
VERSION = 1
KEEP = 2
_STEP_DIR = re.compile(r"step-(\d+)")


class CheckpointError(ValueError):
    """A checkpoint, or a run directory's whole set of them, cannot be trusted.

    A ValueError so that the command line reports it and exits 2."""


class CheckpointWarning(UserWarning):
    """A checkpoint was skipped as damaged, or loaded without a checksum to verify it."""


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    """Make a directory's entries (a new file, a rename) durable, not only the files' bytes."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _step_dirs(run_dir: Path) -> list[Path]:
    """Every ``step-<N>`` directory, complete or not, oldest first (temporary ones are not checkpoints)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _STEP_DIR.fullmatch(p.name)]
    return sorted(found, key=_step)


def _step(path: Path) -> int:
    return int(_STEP_DIR.fullmatch(path.name).group(1))


def save_checkpoint(run_dir: Path, step: int, state: dict, keep: int = KEEP) -> Path:
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:012d}"
    tmp = root / f".tmp-step-{step:012d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, "step": step, "state": state}, buf)
    data = buf.getvalue()
    _fsync_write(tmp / "state.pt", data)
    record = {"step": step, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    _fsync_write(tmp / "COMPLETE", json.dumps(record).encode())
    _fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    # Only checkpoints up to this step count towards `keep`: newer ones are those a resume
    # skipped as damaged, and they must not push the good ones out.
    for old in [p for p in _step_dirs(run_dir) if _step(p) <= step][:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint directories that have a completion marker and a state file, oldest first (unverified)."""
    return [p for p in _step_dirs(run_dir) if (p / "COMPLETE").is_file() and (p / "state.pt").is_file()]


def _recorded(marker: Path) -> dict | None:
    """The size and SHA-256 that ``COMPLETE`` records, or None for a marker from before checksums."""
    try:
        text = marker.read_bytes().decode(errors="replace")  # garbage is reported as unreadable below
    except FileNotFoundError:
        raise CheckpointError(f"{marker.parent} has no COMPLETE marker (its write never finished, "
                              f"or the marker was removed)") from None
    except OSError as exc:
        raise CheckpointError(f"{marker} cannot be read: {exc.strerror}") from exc
    if text.strip().isdigit():
        return None
    try:
        record = json.loads(text)
        return {"size": int(record["size"]), "sha256": str(record["sha256"])}
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{marker} is unreadable ({text[:80]!r}), so {marker.parent} cannot be verified") from exc


def read_checkpoint(path: Path) -> dict:
    """Load one checkpoint directory, refusing it unless ``state.pt`` matches its ``COMPLETE`` record.

    The bytes are read once, checked, and unpickled from memory, so what is loaded is exactly
    what was checked."""
    path = Path(path)
    file = path / "state.pt"
    record = _recorded(path / "COMPLETE")
    try:
        data = file.read_bytes()
    except OSError as exc:  # missing, or a disk error: either way this one cannot be used
        raise CheckpointError(f"{file} cannot be read: {exc.strerror}") from exc
    if record is not None:  # None: from before checksums, only the checks below apply
        if len(data) != record["size"]:
            raise CheckpointError(f"{file} is truncated or overwritten: {len(data)} bytes, "
                                  f"COMPLETE records {record['size']}")
        digest = hashlib.sha256(data).hexdigest()
        if digest != record["sha256"]:
            raise CheckpointError(f"{file} is damaged: its SHA-256 is {digest}, COMPLETE records {record['sha256']}")
    try:
        blob = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a truncated or alien file
        raise CheckpointError(f"checkpoint {file} is corrupt or not a torch file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise CheckpointError(f"{file} is not an rlhp checkpoint (expected format {FORMAT!r})")
    if blob.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {file} has version {blob.get('version')}; this code reads version {VERSION}")
    if record is None:
        warnings.warn(f"{path} was written before checkpoints carried a checksum; loaded it unverified",
                      CheckpointWarning, stacklevel=2)
    return blob


def load_latest(run_dir: Path) -> dict | None:
    """The payload of the newest checkpoint that verifies; None only when there are no checkpoints.

    Damaged newer checkpoints are skipped with a ``CheckpointWarning`` naming them and the one
    used. If none verifies this raises ``CheckpointError`` listing each and why, rather than let
    the caller start over from step 0 on top of the run's history.
    """
    found = _step_dirs(run_dir)
    if not found:
        return None
    refused = []
    for path in reversed(found):
        try:
            blob = read_checkpoint(path)
        except CheckpointError as exc:
            refused.append(f"{path.name}: {exc}")
            continue
        if refused:
            warnings.warn(f"resuming from {path}, skipping {len(refused)} newer unusable checkpoint(s):\n  "
                          + "\n  ".join(refused), CheckpointWarning, stacklevel=2)
        return blob
    raise CheckpointError(
        f"none of the {len(found)} checkpoint(s) in {Path(run_dir) / 'checkpoints'} can be loaded, so the run "
        f"cannot resume; refusing to start over from step 0 on top of its history:\n  " + "\n  ".join(refused)
        + "\nTo start over anyway, move that checkpoints directory aside (metrics.csv is then rewritten from step 0)."
    )

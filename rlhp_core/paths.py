"""File-system checks the commands make before they write anything.

The commands (``rlhp_core.train``, ``bench.sweep``, ``bench.report``) check their output folders
and look into the SQLite files they are given first, so a bad path is a one-line error naming
it, not a traceback halfway through a run, and a refused command leaves nothing behind.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from pathlib import Path


def connect_readonly(path: str | Path) -> sqlite3.Connection:
    """A read-only connection to an existing SQLite file that creates nothing beside it.

    A plain read-only open of a database in WAL mode (label stores are) creates its -wal and
    -shm files. Without a -wal file there is no live writer and nothing left to checkpoint, so
    the file is opened as immutable; with one, read-only as usual (its -shm is there already).
    """
    path = Path(path)
    wal = Path(f"{path}-wal").exists()
    return sqlite3.connect(path.resolve().as_uri() + ("?mode=ro" if wal else "?mode=ro&immutable=1"), uri=True)


def check_writable_dir(path: str | Path) -> None:
    """Raise ValueError (naming the culprit) unless ``path`` is, or can be made as, a writable folder.

    Nothing is created: for a folder that does not exist yet, its nearest existing ancestor must
    be a folder this process can create entries in. Writability is tried, not inferred from
    permission bits, which say nothing for root or on read-only and virtual file systems: a
    temporary entry is made there and removed at once.
    """
    if not str(path).strip():
        raise ValueError("empty path; expected a folder")
    path = Path(path)
    probe = path.absolute()
    while not os.path.exists(probe):
        if probe.is_symlink():
            raise ValueError(f"{probe} is a dangling symbolic link")
        probe = probe.parent
    if not probe.is_dir():
        where = "" if probe == path.absolute() else f" (it would hold {path})"
        raise ValueError(f"{probe} is a file, not a folder{where}")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".write-test-", dir=probe))
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        what = "" if probe == path.absolute() else f" (to create {path} in)"
        raise ValueError(f"cannot write in folder {probe}{what}: {reason}") from None


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` so that a reader (or a crash) sees the old file or the new one,
    never half of one: the bytes go to a temporary file beside it, which then replaces it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise

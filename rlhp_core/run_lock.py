"""One learner per run directory.

Two learners on one run directory both append to metrics.csv and both write checkpoints, and
every later resume mixes the two. ``RunLock`` makes the second fail at once, naming the first.

The lock is an ``fcntl.flock`` on ``<run_dir>/.lock``. The kernel drops it when the holder's
file is closed, including when the holder is killed with SIGKILL, so a dead learner never
leaves a stale lock to clear by hand. The file's contents (pid, host, command line, start time)
only say who holds it; the lock is the flock, not the file's existence, so the file is never
deleted (a process could otherwise lock a new file while another still holds the old one).

flock locks belong to an open file description: a second ``RunLock`` on the same directory in
the same process conflicts too; a child forked without exec shares the holder's lock and keeps
it alive while the child lives (a child started through exec does not: the descriptor is not
inherited). On NFS, Linux emulates flock with byte-range locks, which hold across hosts only
where the server supports locking.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import socket
import sys
import time
from pathlib import Path

LOCK_NAME = ".lock"
_RECORD_MAX = 64 * 1024


class RunDirInUseError(ValueError):
    """Another process holds the run directory. A ValueError so that the command line prints the
    message (which names the holder) and exits 2."""


class RunLock:
    """An exclusive, non-blocking lock on a run directory; use as ``with RunLock(run_dir):``."""

    def __init__(self, run_dir: Path | str):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock or raise ``RunDirInUseError`` at once; creates the run directory if needed."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held through this RunLock")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            record = os.pread(fd, _RECORD_MAX, 0)
            os.close(fd)
            raise RunDirInUseError(f"run directory {self.run_dir} is in use by {_describe(record, self.path)}; "
                               f"wait for that run to end or stop it (a killed process releases "
                               f"the lock by itself)") from None
        except OSError:
            os.close(fd)
            raise
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": shlex.join(sys.orig_argv),
                  "since": time.strftime("%Y-%m-%d %H:%M:%S %z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Give the directory up. A no-op when not held, so error paths may call it unconditionally."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # the record describes a holder; there is none now
        finally:
            os.close(fd)  # closing the only descriptor drops the flock

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()


def _describe(record: bytes, path: Path) -> str:
    """The holder as its lock file records it, or why it cannot be said."""
    try:
        h = json.loads(record)
        return f"pid {h['pid']} on host {h['host']} since {h['since']} (command: {h['command']})"
    except (ValueError, KeyError, TypeError):
        # the holder locks first and writes its record a moment later
        return f"another process (it has not yet recorded itself in {path})"

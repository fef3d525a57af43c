"""Optuna storage for sweeps: RDB storages with heartbeats, and a lock shared by all workers.

Why a lock: ``enqueue_trial(..., skip_if_exists=True)`` is not atomic across processes (Optuna's
docs say so), and a worker that finds a waiting grid cell may lose it to another worker before
its own ``ask()`` pops it, in which case Optuna would sample a fresh (random) cell. Holding one
lock across "look at the queue, then pop" and across "enqueue the missing cells" makes every
cell run exactly once with any number of workers. The lock is a PostgreSQL advisory lock (or a
MySQL named lock) on the study's database, so it works across machines; for SQLite it is a
file lock next to the database (one machine, which is all SQLite supports anyway).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import re
import warnings
import zlib
from pathlib import Path
from typing import Iterator

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

SUPPORTED_SCHEMES = ("sqlite", "postgresql", "mysql")


class StorageError(Exception):
    """The storage URL is malformed or the database cannot be reached."""


def mask_url(url: str) -> str:
    """The URL with any password replaced by '***' (for messages, files and MLflow tags)."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def normalize_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 to SQLAlchemy 2.1; use psycopg2 when only it is installed."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
                return "postgresql+psycopg2://" + url[len(prefix):]
            return "postgresql://" + url[len(prefix):]
    return url


def scheme_of(url: str) -> str:
    return url.split(":", 1)[0].split("+", 1)[0].lower()


def sqlite_path(url: str) -> Path | None:
    if scheme_of(url) != "sqlite" or not url.startswith("sqlite:///"):
        return None
    return Path(url[len("sqlite:///"):])


def open_storage(url: str, *, heartbeat_interval: int, grace_period: int, max_retry: int | None = 3) -> RDBStorage:
    """An RDBStorage whose stale RUNNING trials (a killed worker) are failed and re-queued.

    A trial whose heartbeat is older than ``grace_period`` seconds is marked FAIL by the next
    worker that starts a trial, and RetryHeartbeatStaleTrialCallback enqueues a copy (same
    params and user attrs, so the same run directory, which the learner resumes).
    """
    url = normalize_url(url)
    scheme = scheme_of(url)
    if scheme not in SUPPORTED_SCHEMES:
        raise StorageError(
            f"storage URL {mask_url(url)!r} has scheme {scheme!r}; allowed: "
            "sqlite:///PATH, postgresql://USER[:PASSWORD]@HOST[:PORT]/DB, mysql://... "
            "(heartbeats, which retry a killed worker's trial, need an RDB storage)"
        )
    engine_kwargs: dict = {"pool_pre_ping": True}
    if scheme == "postgresql":
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
    elif scheme == "mysql":
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
    elif scheme == "sqlite":
        path = sqlite_path(url)
        if path is not None and not path.parent.is_dir():
            raise StorageError(f"storage URL {url!r}: folder {path.parent} does not exist")
        engine_kwargs = {"connect_args": {"timeout": 60}}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=max_retry),
            )
    except Exception as exc:  # sqlalchemy.exc.OperationalError, ArgumentError, ImportError (no driver)...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StorageError(f"cannot open storage {mask_url(url)!r}: {first}") from exc


class SweepLock:
    """A lock every worker of one study shares (see the module docstring). Reentrant: no."""

    def __init__(self, url: str, study_name: str, fallback_dir: Path):
        self.url = url = normalize_url(url)
        self.key = zlib.crc32(f"rlhp-sweep:{study_name}".encode())
        self.name = f"rlhp-sweep-{self.key}"
        self.scheme = scheme_of(url)
        self._engine = None
        if self.scheme in ("postgresql", "mysql"):
            import sqlalchemy
            from sqlalchemy.pool import NullPool

            self._engine = sqlalchemy.create_engine(url, poolclass=NullPool,
                                                    connect_args={"connect_timeout": 10})
        else:
            path = sqlite_path(url)
            base = path.parent if path is not None else fallback_dir
            self._file = base / f".{study_name}.lock"

    def check(self) -> None:
        """Connect once: an unreachable database is a StorageError (a clear message, exit status 2)."""
        if self._engine is None:
            return
        try:
            with self._engine.connect():
                pass
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StorageError(f"cannot reach storage {mask_url(self.url)!r}: {first}") from exc

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        if self._engine is None:
            with open(self._file, "a+") as f:
                fcntl.flock(f, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(f, fcntl.LOCK_UN)
            return
        from sqlalchemy import text

        with self._engine.connect() as conn:
            if self.scheme == "postgresql":
                conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": self.key})
                conn.commit()
                try:
                    yield
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
                    conn.commit()
            else:
                conn.execute(text("SELECT GET_LOCK(:n, -1)"), {"n": self.name})
                try:
                    yield
                finally:
                    conn.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": self.name})

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()

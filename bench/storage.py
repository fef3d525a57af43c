"""Optuna storage for sweeps: RDB storages with heartbeats, and a lock shared by all workers.

Also the checks of the storage and MLflow tracking URLs that the commands run before they write
anything (light imports only: a refused command does not wait for MLflow to load).

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
import hashlib
import importlib.util
import os
import re
import socket
import sqlite3
import warnings
import zlib
from pathlib import Path
from typing import Iterator

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

from rlhp_core.paths import check_writable_dir, connect_readonly

SUPPORTED_SCHEMES = ("sqlite", "postgresql", "mysql")


class StorageError(Exception):
    """The storage URL is malformed or the database cannot be reached."""


class TrackingError(Exception):
    """The tracking URI is malformed or its server cannot be reached."""


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
    if scheme_of(url) != "sqlite" or not url.startswith("sqlite:///") or not url[len("sqlite:///"):]:
        return None
    return Path(url[len("sqlite:///"):])


def check_storage_url(url: str, *, create: bool) -> None:
    """Refuse a storage URL that cannot work, without connecting to a server or writing a file.

    A sweep's ``--dry-run`` runs this too. ``create``: a SQLite file may be created (a sweep
    starting its study) rather than having to hold one already (a report). An existing SQLite
    file must be empty or an Optuna study's: Optuna would add its tables to any other database.
    Servers are reached later (:meth:`SweepLock.check`, :func:`open_storage`).
    """
    scheme = scheme_of(url)
    if scheme not in SUPPORTED_SCHEMES:
        raise StorageError(
            f"storage URL {mask_url(url)!r} has scheme {scheme!r}; allowed: "
            "sqlite:///PATH, postgresql://USER[:PASSWORD]@HOST[:PORT]/DB, mysql://... "
            "(heartbeats, which retry a killed worker's trial, need an RDB storage)"
        )
    if scheme != "sqlite":
        from sqlalchemy.engine import make_url

        try:
            parsed = make_url(normalize_url(url))
            port = parsed.port  # a non-numeric port fails here
        except Exception as exc:  # sqlalchemy.exc.ArgumentError, ValueError
            raise StorageError(f"storage URL {mask_url(url)!r} is malformed ({exc}); expected "
                               f"{scheme}://USER[:PASSWORD]@HOST[:PORT]/DB") from None
        if not parsed.host or not parsed.database or (port is not None and not 0 < port < 65536):
            raise StorageError(f"storage URL {mask_url(url)!r} needs a host, a port in 1-65535 if any, and a "
                               f"database: {scheme}://USER[:PASSWORD]@HOST[:PORT]/DB")
        return
    path = sqlite_path(url)
    if path is None:
        raise StorageError(f"storage URL {url!r}: expected sqlite:///PATH (a file; an in-memory sqlite:// "
                           f"database would vanish with this process, and other workers could not see it)")
    if path.is_dir():
        raise StorageError(f"storage URL {url!r}: {path} is a folder; expected a database file in it")
    if not path.exists():
        if not create:
            raise StorageError(f"storage URL {url!r}: {path} does not exist")
        if not path.parent.is_dir():
            raise StorageError(f"storage URL {url!r}: folder {path.parent} does not exist")
        try:
            check_writable_dir(path.parent)
        except ValueError as exc:
            raise StorageError(f"storage URL {url!r}: {exc}") from None
        return
    try:
        con = connect_readonly(path)
        try:
            tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise StorageError(f"storage URL {url!r}: {path} is not a SQLite database ({exc})") from None
    if tables and "studies" not in tables:
        raise StorageError(f"storage URL {url!r}: {path} is a SQLite database of something else (tables "
                           f"{', '.join(sorted(tables)[:5])}), not an Optuna study's; choose another file")


def check_tracking_uri(uri: str, *, reach: bool = True, create: bool = True) -> None:
    """Refuse a tracking URI that cannot work, as a TrackingError naming it.

    Its syntax, and for SQLite its folder (and the file itself unless ``create``: a report
    reads runs, it must not start an empty database). With ``reach``, whether an MLflow server
    answers: before any trial starts, so a sweep fails fast (``--dry-run`` checks only the rest).
    """
    scheme = scheme_of(uri)
    if scheme in ("http", "https"):
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(uri)
            port = parts.port  # a non-numeric or out-of-range port fails here
        except ValueError as exc:
            raise TrackingError(f"tracking URI {mask_url(uri)!r} is malformed ({exc}); expected "
                                f"http(s)://HOST[:PORT]") from None
        if not parts.hostname or port == 0:
            raise TrackingError(f"tracking URI {mask_url(uri)!r} names no host (or port 0); expected "
                                f"http(s)://HOST[:PORT]")
        if reach:
            import requests

            try:
                r = requests.get(uri.rstrip("/") + "/health", timeout=10)
            except requests.RequestException as exc:
                raise TrackingError(f"cannot reach MLflow server {mask_url(uri)!r}: {type(exc).__name__}; start "
                                    f"one with `mlflow server --backend-store-uri ... --host 0.0.0.0`") from exc
            if r.status_code != 200:
                raise TrackingError(f"MLflow server {mask_url(uri)!r} answered /health with HTTP {r.status_code}")
    elif scheme == "sqlite":
        path = sqlite_path(uri)
        if path is None or not path.parent.is_dir() or path.is_dir():
            raise TrackingError(f"tracking URI {uri!r}: expected sqlite:///PATH, a file in an existing folder")
        if not create and not path.is_file():
            raise TrackingError(f"tracking URI {uri!r}: {path} does not exist")
    elif scheme not in ("postgresql", "mysql", "mssql", "databricks", "file"):
        raise TrackingError(f"tracking URI {mask_url(uri)!r} has scheme {scheme!r}; allowed: sqlite:///PATH, "
                            f"http(s)://HOST:PORT (an mlflow server), or a database URL")


def open_storage(url: str, *, heartbeat_interval: int, grace_period: int, max_retry: int | None = 3,
                 create: bool = True) -> RDBStorage:
    """An RDBStorage whose stale RUNNING trials (a killed worker) are failed and re-queued.

    create: whether a SQLite database may be created (see :func:`check_storage_url`).

    A trial whose heartbeat is older than ``grace_period`` seconds is marked FAIL by the next
    worker that starts a trial, and RetryHeartbeatStaleTrialCallback enqueues a copy (same
    params and user attrs, so the same run directory, which the learner resumes).
    """
    check_storage_url(url, create=create)
    url = normalize_url(url)
    scheme = scheme_of(url)
    engine_kwargs: dict = {"pool_pre_ping": True}
    if scheme in ("postgresql", "mysql"):
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
    else:
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


def this_worker() -> str:
    """This process as a sweep worker, ``HOST:PID``: recorded on every trial it runs."""
    return f"{socket.gethostname()}:{os.getpid()}"


class SweepLock:
    """The locks of one study's workers (see the module docstring). Reentrant: no.

    Besides the lock every worker takes around queue operations (:meth:`hold`), each worker holds
    a lock of its own while it lives (:meth:`register`), so any worker can tell whether the worker
    recorded on a RUNNING trial is still there (:meth:`alive`). Both are released by the
    operating system or the database server when their holder dies: a killed worker leaves no
    lock to clear by hand, and its trials show up as orphaned at once, although Optuna fails them
    (and :func:`open_storage`'s callback retries them) only once their heartbeat is stale.
    """

    def __init__(self, url: str, study_name: str):
        self.url = url = normalize_url(url)
        self.study = study_name
        self.key = zlib.crc32(f"rlhp-sweep:{study_name}".encode())
        self.name = f"rlhp-sweep-{self.key}"
        self.scheme = scheme_of(url)
        self._engine = None
        self._registered = None  # the connection (servers) or file descriptor (SQLite) of register()
        if self.scheme in ("postgresql", "mysql"):
            import sqlalchemy
            from sqlalchemy.pool import NullPool

            self._engine = sqlalchemy.create_engine(url, poolclass=NullPool,
                                                    connect_args={"connect_timeout": 10})
        else:
            self._dir = sqlite_path(url).parent
            self._file = self._dir / f".{study_name}.lock"

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

    # -- worker liveness ------------------------------------------------------------------------
    def _worker_key(self, worker: str) -> tuple[int, str, Path | None]:
        """(PostgreSQL advisory key, MySQL lock name, SQLite lock file) of a worker of this study."""
        digest = hashlib.blake2b(f"rlhp-worker:{self.study}:{worker}".encode(), digest_size=8).digest()
        key = int.from_bytes(digest, "big", signed=True)
        slug = re.sub(r"[^A-Za-z0-9_.-]", "_", worker)
        path = None if self._engine is not None else self._dir / f".{self.study}.worker.{slug}.lock"
        return key, f"rlhp-worker-{digest.hex()}", path

    def register(self, worker: str) -> None:
        """Hold ``worker``'s liveness lock until :meth:`close` (or until this process dies)."""
        key, name, path = self._worker_key(worker)
        if path is not None:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._registered = (fd, path)
            return
        from sqlalchemy import text

        conn = self._engine.connect()
        if self.scheme == "postgresql":
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
            conn.commit()
        else:
            conn.execute(text("SELECT GET_LOCK(:n, -1)"), {"n": name})
        self._registered = (conn, None)

    def alive(self, worker: str) -> bool:
        """Whether ``worker`` (HOST:PID) holds its liveness lock, i.e. runs and has called register().

        False for a killed worker, and for a worker of a version of this code that took no such
        lock: callers treat False as "maybe gone" and let the trial's heartbeat decide.
        """
        key, name, path = self._worker_key(worker)
        if path is not None:
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                return False
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)  # a dead worker's file: nobody will lock it again
                return False
            finally:
                os.close(fd)
        from sqlalchemy import text

        with self._engine.connect() as conn:
            if self.scheme == "postgresql":
                free = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
                if free:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
                return not free
            return conn.execute(text("SELECT IS_USED_LOCK(:n)"), {"n": name}).scalar() is not None

    def close(self) -> None:
        if self._registered is not None:
            handle, path = self._registered
            self._registered = None
            if path is not None:
                os.unlink(path)  # while still locked: a checker that opened it sees it locked, then gone
                os.close(handle)
            else:
                handle.close()  # ends the session, and with it its advisory or named lock
        if self._engine is not None:
            self._engine.dispose()

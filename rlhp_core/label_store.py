"""The label store: every query and every answer, durable before anyone is told it is saved.

One SQLite file (WAL mode) per run by default. The learner writes queries; labelers (scripted
or people through the web page, possibly in another thread or process) write answers; the
learner reads back the current answer of each query. Answers are never deleted: an undo
marks the answer retracted and the query goes back to the queue.
"""

from __future__ import annotations

import csv
import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from .paths import connect_readonly
from .segments import ANSWERS, Query, Segment, check_answer

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS queries (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    created_at REAL NOT NULL,
    env_step INTEGER NOT NULL DEFAULT 0,
    route TEXT NOT NULL DEFAULT '',
    left_blob BLOB NOT NULL,
    right_blob BLOB NOT NULL,
    has_frames INTEGER NOT NULL,
    lease_owner TEXT,
    lease_expires REAL
);
CREATE INDEX IF NOT EXISTS queries_seq ON queries(seq);
CREATE TABLE IF NOT EXISTS answers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    query_id TEXT NOT NULL REFERENCES queries(id),
    answer TEXT NOT NULL CHECK (answer IN ('left', 'right', 'equal', 'incomparable')),
    labeler TEXT NOT NULL,
    labeler_params TEXT NOT NULL DEFAULT '{}',
    shown_at REAL,
    answered_at REAL NOT NULL,
    stored_at REAL NOT NULL,
    submission_id TEXT UNIQUE,
    retracted_at REAL
);
CREATE INDEX IF NOT EXISTS answers_query ON answers(query_id);
"""


@dataclass(frozen=True)
class AnswerRecord:
    id: int
    query_id: str
    answer: str
    labeler: str
    labeler_params: dict
    shown_at: float | None
    answered_at: float
    retracted_at: float | None


class LabelStoreError(ValueError):
    pass


def read_meta(path: str | Path) -> dict[str, str]:
    """A label store's meta rows (env_id, obs_shape, schema_version...), read without writing.

    For checks before a run starts: opening a :class:`LabelStore` adds its schema to whatever
    SQLite file it is given. Raises LabelStoreError naming the path when it is missing, not a
    file, or not a label store.
    """
    path = Path(path)
    if not path.is_file():
        raise LabelStoreError(f"{path} {'is not a file' if path.exists() else 'does not exist'}; "
                              f"expected a run's labels.sqlite")
    try:
        con = connect_readonly(path)
        try:
            meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise LabelStoreError(f"{path} is not a label store ({exc}); expected a run's labels.sqlite") from None
    if "env_id" not in meta:
        raise LabelStoreError(f"{path} is not a label store (no env_id in its meta table)")
    return meta


class LabelStore:
    """SQLite-backed queries and answers for one environment.

    ``env_id`` and ``obs_shape`` are written on creation and checked on every open, so a store
    from another env is refused with an error instead of silently mixing labels.
    Thread-safe: one connection per thread.
    """

    def __init__(self, path: str | Path, env_id: str | None = None, obs_shape: Sequence[int] | None = None, *,
                 read_only: bool = False):
        """Open (or, given ``env_id``, create) the store at ``path``.

        ``read_only``: an existing store, for reading it (reports, audits) without writing anything to it
        or beside it (:func:`paths.connect_readonly`: no -wal or -shm files next to a finished store).
        A missing file or one that is not a label store is a LabelStoreError (:func:`read_meta`); a
        write through such a store fails with sqlite3.OperationalError.
        """
        self.path = Path(path)
        self.read_only = read_only
        self._local = threading.local()
        self._write_lock = threading.Lock()
        if read_only:
            meta = read_meta(self.path)
        else:
            meta = self._create_or_check(env_id, obs_shape)
        if int(meta.get("schema_version", -1)) != SCHEMA_VERSION:
            raise LabelStoreError(
                f"label store {self.path} has schema version {meta.get('schema_version')}, "
                f"this code reads version {SCHEMA_VERSION}"
            )
        self.env_id = meta["env_id"]
        self.obs_shape = tuple(json.loads(meta["obs_shape"]))
        if env_id is not None and env_id != self.env_id:
            raise LabelStoreError(
                f"label store {self.path} holds labels for env {self.env_id!r}; "
                f"it cannot be used for env {env_id!r}"
            )
        if obs_shape is not None and tuple(obs_shape) != self.obs_shape:
            raise LabelStoreError(
                f"label store {self.path} holds observations of shape {self.obs_shape}; "
                f"this run observes shape {tuple(obs_shape)}"
            )

    # -- connections --------------------------------------------------------------------
    def _con(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            if self.read_only:
                con = connect_readonly(self.path)
            else:
                con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
                con.execute("PRAGMA journal_mode=WAL")
                con.execute("PRAGMA synchronous=FULL")
                con.execute("PRAGMA foreign_keys=ON")
            self._local.con = con
        return con

    def _create_or_check(self, env_id: str | None, obs_shape: Sequence[int] | None) -> dict[str, str]:
        """The store's meta rows, after adding its schema (and, given ``env_id``, its meta) where missing."""
        if env_id is None and not self.path.exists():
            raise FileNotFoundError(f"label store {self.path} does not exist")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._con().executescript(_SCHEMA)  # idempotent; executescript commits on its own
        with self._tx() as con:
            meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
            if not meta:
                if env_id is None:
                    raise LabelStoreError(f"{self.path} is not a label store (no meta table rows)")
                meta = {
                    "schema_version": str(SCHEMA_VERSION),
                    "env_id": env_id,
                    "obs_shape": json.dumps(list(obs_shape or [])),
                    "created_at": repr(time.time()),
                }
                con.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
        return meta

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: committed on exit, rolled back on any exception."""
        con = self._con()
        with self._write_lock:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    def close(self) -> None:
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None

    # -- queries ------------------------------------------------------------------------
    def add_queries(self, queries: Sequence[Query], *, env_step: int = 0, route: str = "",
                    keep_frames: bool = True, answers: Sequence[dict] = ()) -> None:
        """Store queries (all or none). ``route`` names which labeler should answer them.
        ``answers`` (add_answer's arguments, as in :meth:`add_answers`) are committed in the same
        transaction: a labeler that answers at once never leaves a query without its answer, even
        when the process is killed between the two."""
        for a in answers:
            check_answer(a["answer"])
        for q in queries:
            for seg in (q.left, q.right):
                if tuple(seg.obs.shape[1:]) != self.obs_shape:
                    raise LabelStoreError(
                        f"query {q.id}: segment observations have shape {tuple(seg.obs.shape[1:])}, "
                        f"the store holds shape {self.obs_shape}"
                    )
        now = time.time()
        with self._tx() as con:
            seq0 = con.execute("SELECT COALESCE(MAX(seq), -1) + 1 FROM queries").fetchone()[0]
            con.executemany(
                "INSERT INTO queries (id, seq, created_at, env_step, route, left_blob, right_blob, has_frames)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (q.id, seq0 + i, now, env_step, route, q.left.to_bytes(keep_frames),
                     q.right.to_bytes(keep_frames), int(keep_frames and q.left.frames is not None))
                    for i, q in enumerate(queries)
                ],
            )
            for a in answers:
                self._insert_answer(con, **a)

    def query(self, query_id: str, with_frames: bool = False) -> Query:
        row = self._con().execute(
            "SELECT left_blob, right_blob FROM queries WHERE id = ?", (query_id,)
        ).fetchone()
        if row is None:
            raise KeyError(f"no query with id {query_id!r} in {self.path}")
        return Query(query_id, Segment.from_bytes(row[0], with_frames), Segment.from_bytes(row[1], with_frames))

    def has_query(self, query_id: str) -> bool:
        return self._con().execute("SELECT 1 FROM queries WHERE id = ?", (query_id,)).fetchone() is not None

    def num_queries(self) -> int:
        return self._con().execute("SELECT COUNT(*) FROM queries").fetchone()[0]

    def pending_query_ids(self, route: str | None = None) -> list[str]:
        """Queries with no current (unretracted) answer, oldest first."""
        sql = (
            "SELECT q.id FROM queries q WHERE NOT EXISTS (SELECT 1 FROM answers a"
            " WHERE a.query_id = q.id AND a.retracted_at IS NULL)"
        )
        args: tuple = ()
        if route is not None:
            sql += " AND q.route = ?"
            args = (route,)
        return [r[0] for r in self._con().execute(sql + " ORDER BY q.seq", args)]

    def lease_next(self, owner: str, ttl_s: float = 120.0, route: str | None = None,
                   exclude: Sequence[str] = ()) -> str | None:
        """Give the oldest pending query not leased to someone else to ``owner`` for ``ttl_s``.

        A labeler that already holds a live lease gets the same query back (a reload of the
        page must not skip a pair); an expired lease is free for anyone. ``exclude`` names
        queries the caller already has in hand (a page that prefetches the next pair while
        showing one passes the one it shows), so one owner can hold several leases.
        """
        now = time.time()
        with self._tx() as con:
            route_sql, args = ("AND q.route = ?", (route,)) if route is not None else ("", ())
            exclude = [str(x) for x in exclude]
            if exclude:
                route_sql += f" AND q.id NOT IN ({', '.join('?' * len(exclude))})"
                args = (*args, *exclude)
            pending = (
                "NOT EXISTS (SELECT 1 FROM answers a WHERE a.query_id = q.id AND a.retracted_at IS NULL)"
            )
            row = con.execute(
                f"SELECT q.id FROM queries q WHERE {pending} AND q.lease_owner = ? AND q.lease_expires > ?"
                f" {route_sql} ORDER BY q.seq LIMIT 1",
                (owner, now, *args),
            ).fetchone()
            if row is None:
                row = con.execute(
                    f"SELECT q.id FROM queries q WHERE {pending}"
                    f" AND (q.lease_owner IS NULL OR q.lease_expires <= ?) {route_sql} ORDER BY q.seq LIMIT 1",
                    (now, *args),
                ).fetchone()
            if row is None:
                return None
            con.execute(
                "UPDATE queries SET lease_owner = ?, lease_expires = ? WHERE id = ?", (owner, now + ttl_s, row[0])
            )
            return row[0]

    def lease(self, query_id: str, owner: str, ttl_s: float = 120.0) -> bool:
        """Take or renew the lease on one pending query for ``owner``.

        False (and nothing changes) when the query has a current answer or someone else holds
        a live lease on it. Used to keep a shown pair leased while a person watches it, and to
        give an undone pair back to whoever undid it. KeyError for an unknown query.
        """
        now = time.time()
        with self._tx() as con:
            row = con.execute("SELECT lease_owner, lease_expires FROM queries WHERE id = ?", (query_id,)).fetchone()
            if row is None:
                raise KeyError(f"no query with id {query_id!r} in {self.path}")
            if con.execute(
                "SELECT 1 FROM answers WHERE query_id = ? AND retracted_at IS NULL", (query_id,)
            ).fetchone():
                return False
            if row[0] is not None and row[0] != owner and row[1] is not None and row[1] > now:
                return False
            con.execute(
                "UPDATE queries SET lease_owner = ?, lease_expires = ? WHERE id = ?", (owner, now + ttl_s, query_id)
            )
            return True

    # -- answers ------------------------------------------------------------------------
    def add_answer(self, query_id: str, answer: str, *, labeler: str, labeler_params: dict | None = None,
                   shown_at: float | None = None, answered_at: float | None = None,
                   submission_id: str | None = None) -> int:
        """Commit one answer and return its id. Only after this returns may anyone be told it is saved.

        A repeated ``submission_id`` returns the first answer's id and writes nothing (an
        idempotent retry). A query that already has a current answer is refused: undo first.
        """
        return self.add_answers([dict(query_id=query_id, answer=answer, labeler=labeler,
                                      labeler_params=labeler_params, shown_at=shown_at,
                                      answered_at=answered_at, submission_id=submission_id)])[0]

    def add_answers(self, answers: Sequence[dict]) -> list[int]:
        """Commit many answers in one transaction (all or none); each dict holds add_answer's arguments."""
        for a in answers:
            check_answer(a["answer"])
        with self._tx() as con:
            return [self._insert_answer(con, **a) for a in answers]

    def _insert_answer(self, con: sqlite3.Connection, query_id: str, answer: str, labeler: str,
                       labeler_params: dict | None = None, shown_at: float | None = None,
                       answered_at: float | None = None, submission_id: str | None = None) -> int:
        if submission_id is not None:
            row = con.execute("SELECT id FROM answers WHERE submission_id = ?", (submission_id,)).fetchone()
            if row is not None:
                return int(row[0])
        if con.execute("SELECT 1 FROM queries WHERE id = ?", (query_id,)).fetchone() is None:
            raise KeyError(f"no query with id {query_id!r} in {self.path}")
        if con.execute("SELECT 1 FROM answers WHERE query_id = ? AND retracted_at IS NULL", (query_id,)).fetchone():
            raise LabelStoreError(f"query {query_id!r} is already answered; undo that answer first")
        now = time.time()
        cur = con.execute(
            "INSERT INTO answers (query_id, answer, labeler, labeler_params, shown_at, answered_at,"
            " stored_at, submission_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (query_id, answer, labeler, json.dumps(labeler_params or {}, sort_keys=True), shown_at,
             answered_at if answered_at is not None else now, now, submission_id),
        )
        con.execute("UPDATE queries SET lease_owner = NULL, lease_expires = NULL WHERE id = ?", (query_id,))
        return int(cur.lastrowid)

    def retract(self, answer_id: int) -> str:
        """Undo an answer: it stays in the store, marked retracted; its query is pending again."""
        with self._tx() as con:
            row = con.execute("SELECT query_id, retracted_at FROM answers WHERE id = ?", (answer_id,)).fetchone()
            if row is None:
                raise KeyError(f"no answer with id {answer_id}")
            if row[1] is None:
                con.execute("UPDATE answers SET retracted_at = ? WHERE id = ?", (time.time(), answer_id))
            return row[0]

    def get_answer(self, answer_id: int) -> AnswerRecord | None:
        """One answer by id (retracted or not), or None."""
        rows = self._answers("WHERE id = ?", (int(answer_id),))
        return rows[0] if rows else None

    def current_answers(self) -> list[AnswerRecord]:
        """The live answer of every answered query, in answer order."""
        return self._answers("WHERE retracted_at IS NULL")

    def all_answers(self) -> list[AnswerRecord]:
        return self._answers("")

    def _answers(self, where: str, args: tuple = ()) -> list[AnswerRecord]:
        rows = self._con().execute(
            "SELECT id, query_id, answer, labeler, labeler_params, shown_at, answered_at, retracted_at"
            f" FROM answers {where} ORDER BY id", args
        ).fetchall()
        return [AnswerRecord(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6], r[7]) for r in rows]

    def counts(self) -> dict[str, int]:
        """Current answers by kind, plus the number of queries still waiting."""
        out = {a: 0 for a in ANSWERS}
        for answer, n in self._con().execute(
            "SELECT answer, COUNT(*) FROM answers WHERE retracted_at IS NULL GROUP BY answer"
        ):
            out[answer] = n
        out["pending"] = self.num_queries() - sum(out[a] for a in ANSWERS)
        return out

    # -- moving labels between runs -------------------------------------------------------
    def import_from(self, other: "LabelStore") -> int:
        """Copy every query and live answer of ``other`` (same env) that this store lacks."""
        if other.env_id != self.env_id or other.obs_shape != self.obs_shape:
            raise LabelStoreError(
                f"cannot seed labels for env {self.env_id!r} {self.obs_shape} from a store for "
                f"env {other.env_id!r} {other.obs_shape}"
            )
        copied = 0
        src = other._con()
        with self._tx() as con:
            seq = con.execute("SELECT COALESCE(MAX(seq), -1) + 1 FROM queries").fetchone()[0]
            for rec in other.current_answers():
                if con.execute("SELECT 1 FROM queries WHERE id = ?", (rec.query_id,)).fetchone():
                    continue
                row = src.execute(
                    "SELECT created_at, env_step, route, left_blob, right_blob, has_frames FROM queries WHERE id = ?",
                    (rec.query_id,),
                ).fetchone()
                con.execute(
                    "INSERT INTO queries (id, seq, created_at, env_step, route, left_blob, right_blob, has_frames)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (rec.query_id, seq, *row),
                )
                con.execute(
                    "INSERT INTO answers (query_id, answer, labeler, labeler_params, shown_at, answered_at, stored_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (rec.query_id, rec.answer, rec.labeler, json.dumps(rec.labeler_params, sort_keys=True),
                     rec.shown_at, rec.answered_at, time.time()),
                )
                seq += 1
                copied += 1
        return copied

    def export_csv(self, path: str | Path) -> int:
        """Every answer ever given (retracted ones flagged), one row each. Returns the row count."""
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        rows = self.all_answers()
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["answer_id", "query_id", "answer", "labeler", "labeler_params", "shown_at",
                        "answered_at", "retracted_at"])
            for r in rows:
                w.writerow([r.id, r.query_id, r.answer, r.labeler, json.dumps(r.labeler_params, sort_keys=True),
                            r.shown_at, r.answered_at, r.retracted_at])
        tmp.replace(path)
        return len(rows)

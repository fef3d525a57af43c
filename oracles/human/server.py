"""The labeling web server: standard-library HTTP on a background thread, the label store behind it.

Endpoints (JSON unless noted; every POST needs ``Content-Type: application/json``):

  GET  /                          the labeling page (static/index.html; static/app.js, static/style.css)
  GET  /api/state                 env, goal ("task"; "task_source": "run" for a --goal, "env" for the
                                  env's usual line), label counts, budget, the run's status.json,
                                  "frames" (why this run has no pictures, when it has none),
                                  "closing" (the run ended: the server is about to stop)
  POST /api/lease                 {client, have: [ids]} -> the next pair leased to this tab, or null
  POST /api/renew                 {client, ids} keep the pairs a tab holds leased while it shows them
  POST /api/answer                {query_id, answer, submission_id, labeler, client, shown_at,
                                   answered_at, sent_at} -> 200 only after the store committed it;
                                  409 when another tab holds the pair's lease, the pair is answered,
                                  or the submission id was used for another query or answer
  POST /api/undo                  {client, answer_id} retract one of this tab's answers; the pair comes back
  GET  /api/export.csv            every answer ever given (CSV download)
  GET  /clips/<query id>/<left|right>.png   a segment as a PNG sprite sheet

Safe by default: binds 127.0.0.1; bound to any other address it requires a token (``?token=``
once, then a cookie, or the ``X-RLHP-Token`` header). Requests for loopback servers must name a
loopback Host (no DNS rebinding). Bad input gets a 4xx with ``{"error": ...}`` and changes nothing;
so does any other method (405 with ``Allow``) and a malformed request line or header (the standard
library's own refusals, sent as JSON too). A request must arrive within ``REQUEST_READ_S``.
"""

from __future__ import annotations

import hmac
import io
import ipaddress
import json
import logging
import math
import os
import re
import secrets
import socket
import statistics
import tempfile
import threading
import time
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

from rlhp_core.label_store import LabelStore, LabelStoreError
from rlhp_core.segments import ANSWERS

from .clips import SIDES, ClipCache
from .tasks import check_goal, task_for

log = logging.getLogger(__name__)

ROUTE = "human"
"""The label-store route of queries meant for people."""

STATIC_DIR = Path(__file__).with_name("static")
STATIC_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
MAX_BODY = 64 * 1024
MAX_JSON_DEPTH = 4
"""The page's bodies are objects of scalars and lists of strings (depth 2). Checked before parsing:
the parser recurses once per level, and a body nested thousands deep would exhaust it."""
REQUEST_READ_S = 10.0
"""A request (line, headers and body) must arrive within this many seconds. A per-read timeout
alone lets a client that sends a byte every few seconds, or announces more body than it sends,
hold a server thread for as long as it likes; the page's requests take milliseconds."""
MAX_ANSWER_ID = 2**63 - 1
"""SQLite's largest integer: a larger answer id cannot name an answer (and would not fit a query)."""
MAX_EPOCH_MS = 1e13
"""Year 2286: a browser's Date.now() beyond this is not a clock reading."""
TOKEN_ENV = "RLHP_LABEL_TOKEN"
"""The access token may come from this environment variable, so that it is never written into a
command line (shell history, ``ps``) or a run's config.json; see :func:`token_from`."""
LEASE_TTL_S = 90.0
"""A tab renews the leases of the pairs it holds every 20 s; a closed tab's pairs free up after this."""
WATCHED_S = 6.0
"""A page polls /api/state every 2 s: one that polled this recently is open (see ``close(linger_s)``)."""

_CLIENT_RE = re.compile(r"[A-Za-z0-9_-]{4,64}")
_SUBMISSION_RE = re.compile(r"[A-Za-z0-9_-]{8,100}")
_TOKEN_RE = re.compile(r"[A-Za-z0-9._~-]{4,256}")
_TOKEN_IN_URL_RE = re.compile(r"(token=)[^&\s\"]*")
_LENGTH_RE = re.compile(r"[0-9]{1,12}")
_HOST_RE = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^\[\]:]+)(?::[0-9]{1,5})?")
_JSON_STRING_RE = re.compile(r'"(?:[^"\\]|\\.)*"')
_JSON_BRACKET_RE = re.compile(r"[\[\]{}]")
_GET_ONLY = ("GET", "HEAD")
_POST_ONLY = ("POST",)
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class RequestError(Exception):
    """Answered as ``{"error": message}`` with ``status``; nothing was changed."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


def token_from(token: str | None) -> str | None:
    """``token`` when given, else ``$RLHP_LABEL_TOKEN`` (empty or unset: None).

    Why the environment: a token passed as a flag ends up in shell history, in ``ps`` and, through
    the training CLI, in the run's config.json; one in the environment is read here and kept in
    memory only. The value is never echoed in errors (it is a secret).
    """
    if token is not None:
        return token
    value = os.environ.get(TOKEN_ENV)
    return check_token(value, f"${TOKEN_ENV}") if value else None


def check_token(token: object, source: str) -> str:
    """``token`` if it can serve as one; ValueError naming ``source`` (a flag, a variable) otherwise.

    The rule: 4-256 characters of [A-Za-z0-9._~-], since the token travels in URLs and a cookie
    header. The error never repeats the value: a token is a secret, and errors go to logs.
    """
    if not isinstance(token, str) or not _TOKEN_RE.fullmatch(token):
        got = f"{len(token)} characters" if isinstance(token, str) else f"a {type(token).__name__}"
        raise ValueError(f"{source} must be 4-256 characters of [A-Za-z0-9._~-] (it travels in URLs and a "
                         f"cookie); got {got} (not shown: it is a secret)")
    return token


def redact(text: str) -> str:
    """``text`` with any ``token=...`` value hidden: request lines go to the log, and logs go to disk."""
    return _TOKEN_IN_URL_RE.sub(r"\1<redacted>", text)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_query_id(value: object) -> str:
    """A query id as it may appear in a request: 1-200 printable characters, no path separators."""
    if not isinstance(value, str) or not 1 <= len(value) <= 200:
        raise RequestError(400, f"query id must be a string of 1-200 characters, got {_short(value)}")
    if value in (".", "..") or any(c in value for c in "/\\") or not value.isprintable():
        raise RequestError(400, f"malformed query id {_short(value)}: no '/', '\\', control characters, '.' or '..'")
    return value


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def clean_name(value: object) -> str:
    """The name a person typed (kept in their browser's localStorage); 'anonymous' when none."""
    if value is None:
        return "anonymous"
    if not isinstance(value, str):
        raise RequestError(400, f"labeler name must be a string, got {_short(value)}")
    name = " ".join(value.split())[:64]
    if not name.isprintable():
        raise RequestError(400, "labeler name must be printable text")
    return name or "anonymous"


def _client(value: object) -> str:
    if not isinstance(value, str) or not _CLIENT_RE.fullmatch(value):
        raise RequestError(400, f"client must be 4-64 characters of [A-Za-z0-9_-], got {_short(value)}")
    return value


def _epoch_ms(value: object, name: str) -> float | None:
    if value is None:
        return None
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or not 0 < value < MAX_EPOCH_MS):
        raise RequestError(400, f"{name} must be milliseconds since the epoch (a number in (0, {MAX_EPOCH_MS:.0e})), "
                                f"got {_short(value)}")
    return float(value) / 1000.0


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    """json.loads keeps the last of repeated keys; a body that says two things is refused instead."""
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise RequestError(400, f"request body repeats the key {_short(key)}; each key may appear once")
        out[key] = value
    return out


def parse_json_body(data: bytes) -> dict:
    """The request body as a JSON object; RequestError(400) naming what is wrong otherwise.

    Nesting is measured (strings stripped) before parsing, so a body nested thousands of levels
    deep is refused with a message instead of exhausting the parser's recursion.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RequestError(400, f"request body is not UTF-8 (byte {err.start})") from None
    depth = 0
    for bracket in _JSON_BRACKET_RE.finditer(_JSON_STRING_RE.sub('""', text)):
        depth += 1 if bracket.group() in "[{" else -1
        if depth > MAX_JSON_DEPTH:
            raise RequestError(400, f"request body nests deeper than {MAX_JSON_DEPTH} levels; the API takes an "
                                    f"object of strings, numbers and short lists of strings")
    try:
        body = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except ValueError as err:
        raise RequestError(400, f"request body is not valid JSON: {err}") from None
    if not isinstance(body, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(body), "a number")
        raise RequestError(400, f"request body must be a JSON object, got {kind}")
    return body


class LabelServer:
    """The labeling page for one label store, served from a daemon thread until :meth:`close`."""

    def __init__(self, store: LabelStore, *, host: str = "127.0.0.1", port: int = 0, token: str | None = None,
                 env_id: str | None = None, label_budget: int | None = None, status_path: str | Path | None = None,
                 clip_dir: str | Path | None = None, route: str | None = ROUTE, fps: float | None = None,
                 lease_ttl_s: float = LEASE_TTL_S, goal: str | None = None):
        if env_id is not None and env_id != store.env_id:
            raise ValueError(f"env_id {env_id!r} does not match the label store's env {store.env_id!r}")
        if label_budget is not None and label_budget < 0:
            raise ValueError(f"label_budget must be >= 0 or None, got {label_budget}")
        if token is not None:
            check_token(token, "token")
        self.store = store
        self.env_id = store.env_id
        self.task = task_for(self.env_id)
        self.goal = check_goal(goal, "goal") if goal is not None else None
        """The run's own goal (``--goal``), shown instead of the env's usual line."""
        self.fps = float(fps) if fps else self.task.fps
        self.label_budget = label_budget
        self.route = route
        self.lease_ttl_s = lease_ttl_s
        run_dir = Path(store.path).parent
        self.status_path = Path(status_path) if status_path is not None else run_dir / "status.json"
        self.clips = ClipCache(store, Path(clip_dir) if clip_dir is not None else run_dir / "clips")
        self.host = host
        self.loopback = is_loopback(host)
        self.token = token if token is not None else (None if self.loopback else secrets.token_urlsafe(24))

        handler = type("LabelRequestHandler", (_Handler,), {"app": self})
        server_cls = _Server6 if ":" in host else _Server
        self.httpd = server_cls((host.strip("[]"), port), handler)
        self.port = int(self.httpd.server_address[1])
        self.cookie_name = f"rlhp_token_{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name=f"rlhp-label-server:{self.port}", daemon=True)
        # Store-changing requests run one at a time: an answer checks the pair's state and lease,
        # then stores; an undo retracts, then leases the pair back. Neither may interleave.
        self._writes = threading.Lock()
        self._closed = False
        self.closing = False
        self._last_poll = 0.0  # time.monotonic() of the last /api/state
        self._told_closing = 0  # replies that carried "closing": true
        self._thread.start()

    # -- addresses -------------------------------------------------------------------------
    def _url(self, host: str) -> str:
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        url = f"http://{host}:{self.port}/"
        return url + (f"?token={quote(self.token, safe='')}" if self.token else "")

    @property
    def url(self) -> str:
        """Where people open the page (with the token when one is needed)."""
        host = self.host
        if host in ("", "0.0.0.0", "::", "[::]"):
            host = socket.gethostname()
        return self._url(host)

    @property
    def local_url(self) -> str:
        """The page's address from this machine."""
        return self._url("[::1]" if self.host in ("::1", "[::1]") else "127.0.0.1")

    def close(self, linger_s: float = 0.0) -> None:
        """Stop serving and release the port (idempotent). Answers already returned are in the store.

        linger_s: > 0 announces the end: replies say ``"closing": true``, and when a page is open
        (it polled in the last few seconds) serving goes on until it has been told (its next
        poll, every 2 s), at most this long; the page then says the run has ended instead of
        "can't reach the labeling server". 0 stops at once and tells nobody, as a crash would.
        """
        if self._closed:
            return
        self._closed = True
        self.closing = linger_s > 0  # 0: go at once, untold, as a crash would (pages retry)
        try:
            if self.closing and time.monotonic() - self._last_poll < WATCHED_S:
                deadline = time.monotonic() + linger_s
                while not self._told_closing and time.monotonic() < deadline:
                    time.sleep(0.05)
        finally:
            self.httpd.shutdown()
            self.httpd.server_close()
            self._thread.join(timeout=5)

    def serve_until_interrupted(self) -> None:
        try:
            while self._thread.is_alive():
                self._thread.join(timeout=0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self.close()

    def __enter__(self) -> "LabelServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- what the page asks for ------------------------------------------------------------
    def read_status(self) -> dict | None:
        """The learner's status.json (written atomically every few seconds), or None."""
        try:
            data = json.loads(self.status_path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def frames_problem(self) -> str | None:
        """Why this run keeps no pictures of its clips, when it keeps none: the learner records in
        env_info.json (next to status.json) whether its env could render (``"frames"``: e.g.
        ``"unavailable: DependencyNotInstalled: pygame is not installed..."``). None when it can,
        or when there is no env_info.json (a store served on its own)."""
        try:
            note = json.loads((self.status_path.parent / "env_info.json").read_text()).get("frames")
        except (OSError, ValueError, AttributeError):
            return None
        if isinstance(note, str) and note.startswith("unavailable"):
            return note.split(":", 1)[1].strip() or note
        return None

    def state(self) -> dict:
        counts = self.store.counts()
        answers = self.store.current_answers()
        people = [a for a in answers if a.labeler == ROUTE]
        durations = [a.answered_at - a.shown_at for a in people[-50:]
                     if a.shown_at is not None and 0 < a.answered_at - a.shown_at < 600]
        status = self.read_status()
        budget = self.label_budget
        if budget is None and status is not None and isinstance(status.get("label_budget"), int):
            budget = status["label_budget"]
        now = time.time()
        updated = status.get("updated_at") if status else None
        return {
            "env_id": self.env_id,
            "task": self.goal or self.task.text,
            "task_source": "run" if self.goal else "env",
            "fps": self.fps,
            "frames": {"problem": self.frames_problem()},
            "label_budget": budget,
            "labels": {
                "answered": sum(counts[a] for a in ANSWERS),
                "by_people": len(people),
                "counts": {a: counts[a] for a in ANSWERS},
                "pending": counts["pending"],
                "pending_for_people": len(self.store.pending_query_ids(route=self.route)),
                "seconds_per_label": round(statistics.median(durations), 2) if durations else None,
            },
            "status": status,
            "status_age_s": round(now - updated, 1) if isinstance(updated, (int, float)) else None,
            "server_time": now,
            "token_required": self.token is not None,
            "closing": self.closing,
        }

    def query_payload(self, query_id: str) -> dict:
        meta = self.clips.meta(query_id)
        qid = quote(query_id, safe="")
        out: dict = {"id": query_id}
        for side in SIDES:
            info = dict(meta[side])
            info["url"] = f"/clips/{qid}/{side}.png" if info["frames"] else None
            out[side] = info
        return out

    def lease(self, body: dict) -> dict:
        client = _client(body.get("client"))
        have = body.get("have", [])
        if not isinstance(have, list) or len(have) > 16:
            raise RequestError(400, "have must be a list of at most 16 query ids")
        have = [check_query_id(h) for h in have]
        # A closing server hands out nothing: a pair leased now could not be answered in time.
        with self._writes:
            qid = None if self.closing else self.store.lease_next(client, self.lease_ttl_s, route=self.route,
                                                                  exclude=have)
        return {"query": self.query_payload(qid) if qid is not None else None, "state": self.state()}

    def renew(self, body: dict) -> dict:
        client = _client(body.get("client"))
        ids = body.get("ids", [])
        if not isinstance(ids, list) or len(ids) > 16:
            raise RequestError(400, "ids must be a list of at most 16 query ids")
        renewed, lost = [], []
        with self._writes:
            for qid in (check_query_id(i) for i in ids):
                try:
                    (renewed if self.store.lease(qid, client, self.lease_ttl_s) else lost).append(qid)
                except KeyError:
                    lost.append(qid)
        return {"renewed": renewed, "lost": lost}

    def answer(self, body: dict) -> dict:
        """Store one answer from the tab that holds the pair; report what the store holds.

        A pending pair is answered only by the tab holding its lease, or by any tab when nobody
        holds a live one (the tab takes it then; a lease that lapsed while a laptop slept should
        not cost the answer). A retry of a stored submission (same query, answer and tab) gets
        the stored answer back; the same submission id for anything else is a conflict.
        """
        qid = check_query_id(body.get("query_id"))
        answer = body.get("answer")
        if answer not in ANSWERS:
            raise RequestError(400, f"answer {_short(answer)} is not one of {', '.join(ANSWERS)}", "bad_answer")
        sub = body.get("submission_id")
        if not isinstance(sub, str) or not _SUBMISSION_RE.fullmatch(sub):
            raise RequestError(400, f"submission_id must be 8-100 characters of [A-Za-z0-9_-], got {_short(sub)}")
        name = clean_name(body.get("labeler"))
        client = _client(body.get("client"))
        shown, answered, sent = (_epoch_ms(body.get(k), k) for k in ("shown_at", "answered_at", "sent_at"))
        # The browser's clock may be off: keep its durations, anchor them to the server's clock.
        now = time.time()
        offset = now - sent if sent is not None else 0.0
        answered_at = min(now, answered + offset) if answered is not None else now
        shown_at = min(answered_at, shown + offset) if shown is not None else None
        with self._writes:
            # An answered or unknown pair goes straight to the store: it returns a retried
            # submission's answer, and refuses anything else there (404 / 409 below).
            if qid in self.store.pending_query_ids():
                if self.route is not None and qid not in self.store.pending_query_ids(route=self.route):
                    raise RequestError(409, f"pair {_short(qid)} is not offered on this page (it waits for "
                                            f"another labeler); nothing was stored", "not_offered")
                if not self.store.lease(qid, client, self.lease_ttl_s):
                    raise RequestError(409, "Another tab or person has this pair now (this tab's hold on it "
                                            "lapsed), so this answer was not stored; the pair is skipped here.",
                                       "leased_elsewhere")
            try:
                answer_id = self.store.add_answer(
                    qid, answer, labeler=ROUTE, labeler_params={"name": name, "client": client},
                    shown_at=shown_at, answered_at=answered_at, submission_id=sub,
                )
            except KeyError:
                raise RequestError(404, f"no query with id {_short(qid)}", "unknown_query") from None
            except LabelStoreError:
                raise RequestError(409, "this pair was already answered (by another tab or person); it is skipped",
                                   "already_answered") from None
        rec = self.store.get_answer(answer_id)
        stored = (rec.query_id, rec.answer, rec.labeler, rec.labeler_params.get("client"))
        if stored != (qid, answer, ROUTE, client):
            raise RequestError(409, f"submission_id {sub!r} was already used for {rec.answer!r} on pair "
                                    f"{_short(rec.query_id)} (answer {answer_id}); a retry must resend the same "
                                    f"pair, answer and client, and a new answer needs a new submission id",
                               "submission_conflict")
        return {
            "saved": True, "answer_id": answer_id, "query_id": rec.query_id, "answer": rec.answer,
            "retracted": rec.retracted_at is not None, "labeler": rec.labeler, "state": self.state(),
        }

    def undo(self, body: dict) -> dict:
        client = _client(body.get("client"))
        answer_id = body.get("answer_id")
        if isinstance(answer_id, bool) or not isinstance(answer_id, int) or not 1 <= answer_id <= MAX_ANSWER_ID:
            raise RequestError(400, f"answer_id must be an integer in [1, 2**63-1], got {_short(answer_id)}")
        with self._writes:
            rec = self.store.get_answer(answer_id)
            if rec is None:
                raise RequestError(404, f"no answer with id {answer_id}", "unknown_answer")
            if rec.labeler != ROUTE or rec.labeler_params.get("client") != client:
                raise RequestError(403, "only this tab's own answers can be undone here", "not_yours")
            if rec.retracted_at is not None:
                raise RequestError(409, "that answer was already undone", "already_undone")
            self.store.retract(answer_id)
            self.store.lease(rec.query_id, client, self.lease_ttl_s)
        return {"undone": True, "answer_id": answer_id, "answer": rec.answer,
                "query": self.query_payload(rec.query_id), "state": self.state()}

    def export_csv(self) -> bytes:
        with tempfile.TemporaryDirectory(prefix="rlhp-export-") as d:
            path = Path(d) / "labels.csv"
            self.store.export_csv(path)
            return path.read_bytes()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _DeadlineReader(io.RawIOBase):
    """A socket's bytes until a fixed deadline, however slowly they come (see ``REQUEST_READ_S``)."""

    def __init__(self, sock: socket.socket, deadline: float):
        self._sock, self._deadline = sock, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"the request did not arrive within {REQUEST_READ_S:g} s")
        self._sock.settimeout(left)
        return self._sock.recv_into(buf)


class _Handler(BaseHTTPRequestHandler):
    app: LabelServer
    server_version = "rlhp-labeler/1"
    timeout = 30
    """Seconds a reply may wait on a slow reader (reading the request is bounded by REQUEST_READ_S)."""

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # the plain reader setup() made; the request is read against a deadline instead
        self.rfile = io.BufferedReader(_DeadlineReader(self.connection, time.monotonic() + REQUEST_READ_S))

    def log_message(self, fmt: str, *args) -> None:
        log.debug("%s %s", self.address_string(), redact(fmt % args))

    def __getattr__(self, name: str):
        """Every other method (PATCH, OPTIONS, TRACE, ...) is routed too, to get a JSON 405 naming the
        allowed ones instead of the standard library's HTML 501: the stdlib looks up ``do_<METHOD>``."""
        if name.startswith("do_"):
            return lambda: self._dispatch(name[3:])
        raise AttributeError(name)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's own refusals (malformed request line or headers, line too long) as
        JSON with this server's headers, like every other error here. Always with a status line: the
        standard library leaves it out (as for HTTP/0.9) when it could not read the request's version."""
        self.close_connection = True
        if self.request_version == "HTTP/0.9":
            self.request_version = self.protocol_version
        phrase = self.responses.get(code, ("Error",))[0]
        self._error(RequestError(code, f"{phrase}: {message}" if message else phrase))

    # -- plumbing --------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, ctype: str, headers: dict | None = None) -> None:
        self.connection.settimeout(self.timeout)  # reading left the deadline's remainder on the socket
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy", _CSP)
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: dict, headers: dict | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json; charset=utf-8", headers)

    def _error(self, err: RequestError) -> None:
        body = {"error": err.message, "status": err.status}
        if err.code:
            body["code"] = err.code
        self._json(err.status, body, err.headers)

    def _split_path(self) -> tuple[list[str], dict[str, list[str]]]:
        """Decoded path segments; path tricks (.., encoded separators, absolute URIs) are refused."""
        raw = self.path
        if not raw.startswith("/") or raw.startswith("//"):
            raise RequestError(400, f"bad request path {_short(raw)}: must be a path starting with a single '/'")
        parts = urlsplit(raw)
        path = parts.path
        low = path.lower()
        if "\\" in path or any(e in low for e in ("%2e", "%2f", "%5c", "%00")) or "//" in path:
            raise RequestError(400, f"bad request path {_short(path)}: encoded or repeated separators are not allowed")
        try:
            decoded = [unquote(s, errors="strict") for s in path.split("/")[1:]]
        except UnicodeDecodeError:
            raise RequestError(400, f"bad request path {_short(path)}: not UTF-8 once decoded") from None
        if any(s in (".", "..") for s in decoded) or any(not s.isprintable() for s in decoded):
            raise RequestError(400, f"bad request path {_short(path)}: no '.' or '..' segments")
        return decoded, parse_qs(parts.query)

    def _authorise(self, query: dict[str, list[str]]) -> dict:
        """Check Host (loopback servers) and token (when one is set). Returns headers to add."""
        app = self.app
        hosts = self.headers.get_all("Host") or []
        if len(hosts) > 1:
            raise RequestError(400, f"{len(hosts)} Host headers; a request names one host")
        host = hosts[0].strip() if hosts else ""
        if app.loopback and host:  # HTTP/1.0 clients may send none; browsers always send one
            match = _HOST_RE.fullmatch(host)
            if not match or not is_loopback(match.group(1).strip("[]")):
                raise RequestError(403, f"Host {_short(host)} is not allowed: this server only answers to "
                                        f"127.0.0.1 / localhost")
        if app.token is None:
            return {}
        given = query.get("token", [None])[0] or self.headers.get("X-RLHP-Token")
        from_query = bool(query.get("token"))
        if given is None:
            cookie = SimpleCookie()
            try:
                cookie.load(self.headers.get("Cookie") or "")
            except CookieError:
                pass
            if app.cookie_name in cookie:
                given = cookie[app.cookie_name].value
        if given is None or not hmac.compare_digest(given.encode(), app.token.encode()):
            raise RequestError(401, "this labeling server needs its token: open the URL the run printed "
                                    "(it ends with ?token=...)", "token_required")
        if from_query:
            return {"Set-Cookie": f"{app.cookie_name}={app.token}; Path=/; HttpOnly; SameSite=Strict"}
        return {}

    def _body(self) -> dict:
        """The JSON object a POST carries. Its length is checked before a byte is read: a missing,
        repeated, negative or non-numeric Content-Length, or one over MAX_BODY, is refused."""
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise RequestError(415, "POST bodies must be JSON (Content-Type: application/json)")
        if self.headers.get("Transfer-Encoding") is not None:
            raise RequestError(411, "Transfer-Encoding is not accepted here: send the body with a Content-Length")
        lengths = self.headers.get_all("Content-Length") or []
        if not lengths:
            raise RequestError(411, f"a POST needs a Content-Length header (the body's size in bytes, "
                                    f"at most {MAX_BODY})")
        if len(lengths) > 1:
            raise RequestError(400, f"{len(lengths)} Content-Length headers ({_short(lengths)}); send one")
        text = lengths[0].strip()
        if not _LENGTH_RE.fullmatch(text):
            raise RequestError(400, f"Content-Length must be a whole number of bytes (0-{MAX_BODY}), got {_short(text)}")
        length = int(text)
        if length > MAX_BODY:
            raise RequestError(413, f"request body of {length} bytes is over the limit of {MAX_BODY} bytes")
        try:
            data = self.rfile.read(length)
        except TimeoutError:
            raise RequestError(408, f"the request body ({length} bytes announced) did not arrive within "
                                    f"{REQUEST_READ_S:g} s") from None
        if len(data) < length:
            raise RequestError(400, f"request body ended after {len(data)} of the {length} bytes its "
                                    f"Content-Length announced")
        return parse_json_body(data)

    # -- routes ----------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        try:
            segments, query = self._split_path()
            extra = self._authorise(query)
            self._route(method, segments, extra)
        except RequestError as err:
            self._error(err)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as exc:  # keep serving; the page shows the message and retries
            log.exception("labeling server error on %s %s", method, redact(self.path))
            self._error(RequestError(500, f"server error: {type(exc).__name__}: {exc}"))

    @staticmethod
    def _endpoint(seg: list[str]) -> tuple[str, tuple[str, ...]]:
        """Which endpoint a path names, and the methods it takes; 404 for none."""
        if seg in ([""], ["index.html"]):
            return "page", _GET_ONLY
        if len(seg) == 2 and seg[0] == "static":
            return "static", _GET_ONLY
        if seg == ["api", "state"]:
            return "state", _GET_ONLY
        if seg == ["api", "export.csv"]:
            return "export", _GET_ONLY
        if seg[:1] == ["clips"]:
            return "clip", _GET_ONLY
        if seg[:1] == ["api"] and len(seg) == 2 and seg[1] in ("lease", "renew", "answer", "undo"):
            return seg[1], _POST_ONLY
        raise RequestError(404, f"no such page or endpoint: {_short('/' + '/'.join(seg))}")

    def _route(self, method: str, seg: list[str], extra: dict) -> None:
        app = self.app
        name, allowed = self._endpoint(seg)
        if method not in allowed:
            raise RequestError(405, f"method {_short(method)} is not allowed on {_short('/' + '/'.join(seg))}; "
                                    f"use {' or '.join(allowed)}", "method_not_allowed", {"Allow": ", ".join(allowed)})
        if name == "page":
            self._static("index.html", extra)
        elif name == "static":
            self._static(seg[1], extra)
        elif name == "state":
            app._last_poll = time.monotonic()
            self._reply_state(app.state(), extra)
        elif name == "export":
            stamp = time.strftime("%Y%m%d-%H%M%S")
            env = re.sub(r"[^A-Za-z0-9_-]+", "_", app.env_id)
            self._send(200, app.export_csv(), "text/csv; charset=utf-8",
                       {"Content-Disposition": f'attachment; filename="labels-{env}-{stamp}.csv"', **extra})
        elif name == "clip":
            if len(seg) != 3 or seg[2] not in ("left.png", "right.png"):
                raise RequestError(404, "clip URLs are /clips/<query id>/left.png or /clips/<query id>/right.png")
            qid = check_query_id(seg[1])
            if not app.store.has_query(qid):
                raise RequestError(404, f"no query with id {_short(qid)}", "unknown_query")
            png = app.clips.png(qid, seg[2][:-4])
            if png is None:
                raise RequestError(404, "this segment has no frames (the run kept none)", "no_frames")
            self._send(200, png, "image/png", {"Cache-Control": "private, max-age=86400, immutable", **extra})
        else:
            self._reply_state(getattr(app, name)(self._body()), extra)

    def _reply_state(self, res: dict, extra: dict) -> None:
        """Send a reply; count it when it told the page the server is closing (see close())."""
        self._json(200, res, extra)
        state = res.get("state", res)
        if self.command != "HEAD" and isinstance(state, dict) and state.get("closing"):  # HEAD gets no body
            self.app._told_closing += 1

    def _static(self, name: str, extra: dict) -> None:
        ctype = STATIC_TYPES.get(name)
        if ctype is None:
            raise RequestError(404, f"no static file {_short(name)}")
        self._send(200, (STATIC_DIR / name).read_bytes(), ctype, extra)


def serve(store: LabelStore, **kwargs) -> LabelServer:
    """Start the labeling page for ``store`` on a background thread; see :class:`LabelServer`."""
    return LabelServer(store, **kwargs)

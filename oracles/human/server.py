"""The labeling web server: standard-library HTTP on a background thread, the label store behind it.

Endpoints (JSON unless noted; every POST needs ``Content-Type: application/json``):

  GET  /                          the labeling page (static/index.html; static/app.js, static/style.css)
  GET  /api/state                 env, task line, label counts, budget, the run's status.json,
                                  "closing" (the run ended: the server is about to stop)
  POST /api/lease                 {client, have: [ids]} -> the next pair leased to this tab, or null
  POST /api/renew                 {client, ids} keep the pairs a tab holds leased while it shows them
  POST /api/answer                {query_id, answer, submission_id, labeler, client, shown_at,
                                   answered_at, sent_at} -> 200 only after the store committed it
  POST /api/undo                  {client, answer_id} retract one of this tab's answers; the pair comes back
  GET  /api/export.csv            every answer ever given (CSV download)
  GET  /clips/<query id>/<left|right>.png   a segment as a PNG sprite sheet

Safe by default: binds 127.0.0.1; bound to any other address it requires a token (``?token=``
once, then a cookie, or the ``X-RLHP-Token`` header). Requests for loopback servers must name a
loopback Host (no DNS rebinding). Bad input gets a 4xx with ``{"error": ...}`` and changes nothing.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import math
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
from .tasks import task_for

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
LEASE_TTL_S = 90.0
"""A tab renews the leases of the pairs it holds every 20 s; a closed tab's pairs free up after this."""
WATCHED_S = 6.0
"""A page polls /api/state every 2 s: one that polled this recently is open (see ``close(linger_s)``)."""

_CLIENT_RE = re.compile(r"[A-Za-z0-9_-]{4,64}")
_SUBMISSION_RE = re.compile(r"[A-Za-z0-9_-]{8,100}")
_TOKEN_RE = re.compile(r"[A-Za-z0-9._~-]{4,256}")
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class RequestError(Exception):
    """Answered as ``{"error": message}`` with ``status``; nothing was changed."""

    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


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
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise RequestError(400, f"{name} must be a positive number of milliseconds since the epoch, got {_short(value)}")
    return float(value) / 1000.0


class LabelServer:
    """The labeling page for one label store, served from a daemon thread until :meth:`close`."""

    def __init__(self, store: LabelStore, *, host: str = "127.0.0.1", port: int = 0, token: str | None = None,
                 env_id: str | None = None, label_budget: int | None = None, status_path: str | Path | None = None,
                 clip_dir: str | Path | None = None, route: str | None = ROUTE, fps: float | None = None,
                 lease_ttl_s: float = LEASE_TTL_S):
        if env_id is not None and env_id != store.env_id:
            raise ValueError(f"env_id {env_id!r} does not match the label store's env {store.env_id!r}")
        if label_budget is not None and label_budget < 0:
            raise ValueError(f"label_budget must be >= 0 or None, got {label_budget}")
        if token is not None and not _TOKEN_RE.fullmatch(token):
            raise ValueError("token must be 4-256 characters of [A-Za-z0-9._~-] (it travels in URLs and a cookie)")
        self.store = store
        self.env_id = store.env_id
        self.task = task_for(self.env_id)
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
            "task": self.task.text,
            "fps": self.fps,
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
        qid = None if self.closing else self.store.lease_next(client, self.lease_ttl_s, route=self.route,
                                                              exclude=have)
        return {"query": self.query_payload(qid) if qid is not None else None, "state": self.state()}

    def renew(self, body: dict) -> dict:
        client = _client(body.get("client"))
        ids = body.get("ids", [])
        if not isinstance(ids, list) or len(ids) > 16:
            raise RequestError(400, "ids must be a list of at most 16 query ids")
        renewed, lost = [], []
        for qid in (check_query_id(i) for i in ids):
            try:
                (renewed if self.store.lease(qid, client, self.lease_ttl_s) else lost).append(qid)
            except KeyError:
                lost.append(qid)
        return {"renewed": renewed, "lost": lost}

    def answer(self, body: dict) -> dict:
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
        # A repeated submission_id returns the first answer: report what is stored, not what was sent.
        return {
            "saved": True, "answer_id": answer_id, "query_id": rec.query_id, "answer": rec.answer,
            "retracted": rec.retracted_at is not None, "labeler": rec.labeler, "state": self.state(),
        }

    def undo(self, body: dict) -> dict:
        client = _client(body.get("client"))
        answer_id = body.get("answer_id")
        if isinstance(answer_id, bool) or not isinstance(answer_id, int) or answer_id < 1:
            raise RequestError(400, f"answer_id must be a positive integer, got {_short(answer_id)}")
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


class _Handler(BaseHTTPRequestHandler):
    app: LabelServer
    server_version = "rlhp-labeler/1"
    timeout = 30

    def log_message(self, fmt: str, *args) -> None:
        log.debug("%s " + fmt, self.address_string(), *args)

    # -- plumbing --------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, ctype: str, headers: dict | None = None) -> None:
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
        self._json(err.status, body)

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
        if app.loopback:
            host = (self.headers.get("Host") or "").strip()
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if host and not is_loopback(name.strip("[]")):
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
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise RequestError(415, "POST bodies must be JSON (Content-Type: application/json)")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise RequestError(400, "bad Content-Length") from None
        if length > MAX_BODY:
            raise RequestError(413, f"request body over {MAX_BODY} bytes")
        try:
            body = json.loads(self.rfile.read(length) or b"null")
        except ValueError:
            raise RequestError(400, "request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise RequestError(400, "request body must be a JSON object")
        return body

    # -- routes ----------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        try:
            segments, query = self._split_path()
            extra = self._authorise(query)
            self._route(method, segments, query, extra)
        except RequestError as err:
            self._error(err)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as exc:  # keep serving; the page shows the message and retries
            log.exception("labeling server error on %s %s", method, self.path)
            self._error(RequestError(500, f"server error: {type(exc).__name__}: {exc}"))

    def _route(self, method: str, seg: list[str], query: dict, extra: dict) -> None:
        app = self.app
        if seg in ([""], ["index.html"]):
            self._need(method, "GET")
            self._static("index.html", extra)
        elif len(seg) == 2 and seg[0] == "static":
            self._need(method, "GET")
            self._static(seg[1], extra)
        elif seg == ["api", "state"]:
            self._need(method, "GET")
            app._last_poll = time.monotonic()
            self._reply_state(app.state(), extra)
        elif seg == ["api", "export.csv"]:
            self._need(method, "GET")
            stamp = time.strftime("%Y%m%d-%H%M%S")
            env = re.sub(r"[^A-Za-z0-9_-]+", "_", app.env_id)
            self._send(200, app.export_csv(), "text/csv; charset=utf-8",
                       {"Content-Disposition": f'attachment; filename="labels-{env}-{stamp}.csv"', **extra})
        elif seg[:1] == ["clips"]:
            self._need(method, "GET")
            if len(seg) != 3 or seg[2] not in ("left.png", "right.png"):
                raise RequestError(404, "clip URLs are /clips/<query id>/left.png or /clips/<query id>/right.png")
            qid = check_query_id(seg[1])
            if not app.store.has_query(qid):
                raise RequestError(404, f"no query with id {_short(qid)}", "unknown_query")
            png = app.clips.png(qid, seg[2][:-4])
            if png is None:
                raise RequestError(404, "this segment has no frames (the run kept none)", "no_frames")
            self._send(200, png, "image/png", {"Cache-Control": "private, max-age=86400, immutable", **extra})
        elif seg[:1] == ["api"] and len(seg) == 2 and seg[1] in ("lease", "renew", "answer", "undo"):
            self._need(method, "POST")
            handler = getattr(app, seg[1])
            res = handler(self._body())
            self._reply_state(res, extra)
        else:
            raise RequestError(404, f"no such page or endpoint: {_short('/' + '/'.join(seg))}")

    def _reply_state(self, res: dict, extra: dict) -> None:
        """Send a reply; count it when it told the page the server is closing (see close())."""
        self._json(200, res, extra)
        state = res.get("state", res)
        if isinstance(state, dict) and state.get("closing"):
            self.app._told_closing += 1

    def _need(self, method: str, allowed: str) -> None:
        if method != allowed:
            raise RequestError(405, f"use {allowed} here, not {method}")

    def _static(self, name: str, extra: dict) -> None:
        ctype = STATIC_TYPES.get(name)
        if ctype is None:
            raise RequestError(404, f"no static file {_short(name)}")
        self._send(200, (STATIC_DIR / name).read_bytes(), ctype, extra)


def serve(store: LabelStore, **kwargs) -> LabelServer:
    """Start the labeling page for ``store`` on a background thread; see :class:`LabelServer`."""
    return LabelServer(store, **kwargs)

"""The labeling server against a hostile client, and across restarts.

One test (or a few) per finding of a hostile review: request bodies with lying or missing
lengths, bodies nested too deep, submission ids reused for another pair, answers from a tab that
does not hold the pair, methods the server does not serve, the access token reaching the disk,
and a restarted labeler coming back on another port. Everything talks to 127.0.0.1 only, with a
bounded number of requests and a timeout on every socket.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import oracles.human.server as server_mod
from oracles.human import PORT_FILE, TOKEN_ENV, HumanLabeler, LabelPortError, check_token, remembered_port, serve
from rlhp_core.label_store import LabelStore
from tests.helpers.human import (
    ENV, ROOT, answer_body, answers_of, api, base_url, labeling, make_queries, request, shown_id, wait_until,
)


@pytest.fixture
def store(run_dir: Path) -> LabelStore:
    return LabelStore(run_dir / "labels.sqlite", env_id=ENV, obs_shape=(4,))


@pytest.fixture
def server(store):
    """A label server for two pairs routed to people."""
    store.add_queries(make_queries(2), route="human")
    with serve(store, env_id=ENV) as srv:
        yield srv


def raw(port: int, data: bytes, more: bytes = b"", wait: float = 5.0) -> tuple[int | None, dict, bytes, float]:
    """Send ``data`` (then ``more``, tolerating a server that stopped reading) on a socket the client
    keeps open; return the status, headers, body and seconds until the server closed the connection."""
    t = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(data)
        if more:
            try:
                s.sendall(more)
            except OSError:  # the server answered and closed without reading it all
                pass
        reply = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            reply += chunk
    took = time.monotonic() - t
    if not reply:
        return None, {}, b"", took
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body, took


def post_head(length: str | None = "10", *extra: str) -> bytes:
    lines = ["POST /api/answer HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    lines.extend(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def assert_unchanged(store: LabelStore) -> None:
    assert store.all_answers() == [] and store.counts()["pending"] == 2


# -- 1. Content-Length --------------------------------------------------------------------------
def test_bad_content_length_is_refused_before_reading(server, store):
    port = server.port
    # the reported attack: a negative length skipped the 64 KB limit, then the body was read to its end
    status, headers, body, took = raw(port, post_head("-1"), b"x" * 20_000_000)
    assert status == 400 and "Content-Length must be a whole number" in json.loads(body)["error"]
    assert took < 3  # answered at once, not after reading 20 MB or waiting for the end of input
    cases = {
        None: (411, "needs a Content-Length"),
        "abc": (400, "'abc'"),
        "+10": (400, "whole number"),
        "1_0": (400, "whole number"),  # int() would take this
        "0x10": (400, "whole number"),
        "9" * 13: (400, "whole number"),
        str(server_mod.MAX_BODY + 1): (413, f"over the limit of {server_mod.MAX_BODY} bytes"),
        "10000000000": (413, "10000000000 bytes"),
        "0": (400, "not valid JSON"),
    }
    for length, (code, message) in cases.items():
        status, headers, body, took = raw(port, post_head(length))
        assert status == code and message in json.loads(body)["error"], (length, status, body)
        assert headers["content-type"].startswith("application/json") and took < 3
    status, _, body, _ = raw(port, post_head("10", "Content-Length: 12"))
    assert status == 400 and "2 Content-Length headers" in json.loads(body)["error"]
    status, _, body, _ = raw(port, post_head(None, "Transfer-Encoding: chunked"), b"5\r\n{}{}{\r\n0\r\n\r\n")
    assert status == 411 and "Transfer-Encoding" in json.loads(body)["error"]
    assert_unchanged(store)


def test_a_slow_or_short_request_cannot_hold_a_thread(server, store, monkeypatch):
    monkeypatch.setattr(server_mod, "REQUEST_READ_S", 1.0)
    port = server.port
    # announces 100 bytes, sends 1, keeps the connection open: 408 at the deadline
    status, _, body, took = raw(port, post_head("100") + b"{", wait=10)
    assert status == 408 and "did not arrive within 1 s" in json.loads(body)["error"]
    assert 0.9 < took < 3
    # headers dribbled a byte at a time, each well within any per-read timeout: cut off at the deadline
    t = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        closed = False
        for byte in b"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 40:
            try:
                s.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            time.sleep(0.1)
            s.setblocking(False)
            try:
                closed = s.recv(1) == b""
            except BlockingIOError:
                pass
            except ConnectionResetError:
                closed = True
            finally:
                s.setblocking(True)
                s.settimeout(10)
            if closed:
                break
    assert closed and time.monotonic() - t < 3
    # the client says it is done but sent less than it announced
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(post_head("50") + b'{"a": 1}')
        s.shutdown(socket.SHUT_WR)
        reply = b"".join(iter(lambda: s.recv(65536), b""))
    assert b" 400 " in reply.split(b"\r\n")[0] and b"ended after 8 of the 50 bytes" in reply
    assert api(base_url_of(server), "/api/state")[0] == 200  # still serving
    assert_unchanged(store)


def base_url_of(srv) -> str:
    return f"http://127.0.0.1:{srv.port}"


# -- 2. JSON shape --------------------------------------------------------------------------------
def test_deep_or_odd_json_gets_400_with_a_reason(server, store):
    base = base_url_of(server)
    deep = [b"[" * 30_000 + b"]" * 30_000, b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
            b'{"query_id": "q0", "x": ' + b"[" * 5 + b"]" * 5 + b"}"]
    for raw_body in deep:
        assert len(raw_body) <= server_mod.MAX_BODY
        status, _, body = request(base, "POST", "/api/answer", raw_body=raw_body,
                                  headers={"Content-Type": "application/json"})
        assert status == 400 and "nests deeper than 4 levels" in json.loads(body)["error"], body[:200]
    # brackets inside strings (escaped quotes too) are text, not nesting
    status, res = api(base, "/api/answer", answer_body("q0", client="tab-a", labeler='a "[[[[[[[[ name'))
    assert status == 200 and store.current_answers()[0].labeler_params["name"] == 'a "[[[[[[[[ name'
    api(base, "/api/undo", {"client": "tab-a", "answer_id": res["answer_id"]})
    odd = {
        b'{"query_id": "q1", "query_id": "q0"}': "repeats the key 'query_id'",
        b'{"query_id": "\xff"}': "not UTF-8",
        b'{"answer_id": 1' + b"0" * 5000 + b"}": "not valid JSON",
        b"[1, 2]": "must be a JSON object, got an array",
        b"null": "must be a JSON object, got null",
    }
    for raw_body, message in odd.items():
        status, _, body = request(base, "POST", "/api/undo", raw_body=raw_body,
                                  headers={"Content-Type": "application/json"})
        assert status == 400 and message in json.loads(body)["error"], (raw_body[:40], body)
    # numbers beyond what the store can hold or a clock can read are refused, not a 500
    status, res = api(base, "/api/undo", {"client": "tab-a", "answer_id": 2**63})
    assert status == 400 and "2**63-1" in res["error"]
    status, res = api(base, "/api/answer", answer_body("q1", client="tab-a", shown_at=1e300))
    assert status == 400 and "shown_at must be milliseconds since the epoch" in res["error"]
    assert len(store.all_answers()) == 1 and store.current_answers() == []


# -- 3. submission ids ------------------------------------------------------------------------------
def test_a_submission_id_names_one_answer_to_one_pair(server, store):
    base = base_url_of(server)
    first = answer_body("q0", "left", sub="sub-reused01", client="tab-a")
    status, saved = api(base, "/api/answer", first)
    assert status == 200
    conflicts = [
        answer_body("q1", "left", sub="sub-reused01", client="tab-a"),  # the reported bug: another pair
        answer_body("q0", "right", sub="sub-reused01", client="tab-a"),  # another answer
        answer_body("q0", "left", sub="sub-reused01", client="tab-b"),  # another tab
        answer_body("nope", "left", sub="sub-reused01", client="tab-a"),  # a pair that does not exist
    ]
    for body in conflicts:
        status, res = api(base, "/api/answer", body)
        assert status == 409 and res["code"] == "submission_conflict", (body, res)
        assert "'sub-reused01' was already used for 'left' on pair 'q0'" in res["error"]
    assert answers_of(store) == [("q0", "left")] and len(store.all_answers()) == 1
    # the page's retry (same pair, answer and tab; later clock readings) is still "saved"
    status, again = api(base, "/api/answer", {**first, "sent_at": first["sent_at"] + 5000})
    assert status == 200 and again["saved"] and again["answer_id"] == saved["answer_id"]
    assert len(store.all_answers()) == 1


# -- 4. leases -------------------------------------------------------------------------------------
def test_only_the_tab_holding_the_pair_may_answer_it(store):
    store.add_queries(make_queries(3), route="human")
    store.add_queries(make_queries(1, prefix="t"), route="oracle")
    with serve(store, env_id=ENV, lease_ttl_s=1.0) as srv:
        base = base_url_of(srv)
        assert api(base, "/api/lease", {"client": "tab-a", "have": []})[1]["query"]["id"] == "q0"
        status, res = api(base, "/api/answer", answer_body("q0", sub="sub-thief001", client="tab-b"))
        assert status == 409 and res["code"] == "leased_elsewhere"
        assert "Another tab or person has this pair now" in res["error"] and "not stored" in res["error"]
        assert store.all_answers() == []
        assert api(base, "/api/renew", {"client": "tab-a", "ids": ["q0"]})[1]["renewed"] == ["q0"]  # still tab-a's
        assert api(base, "/api/answer", answer_body("q0", sub="sub-owner001", client="tab-a"))[0] == 200
        # a pair nobody holds may be answered by any tab (it takes the lease)
        assert api(base, "/api/answer", answer_body("q1", sub="sub-free0001", client="tab-c"))[0] == 200
        # a lease that lapsed is free: the tab that answers first gets the pair
        assert api(base, "/api/lease", {"client": "tab-a", "have": []})[1]["query"]["id"] == "q2"
        time.sleep(1.1)
        assert api(base, "/api/answer", answer_body("q2", sub="sub-late0001", client="tab-b"))[0] == 200
        # a pair waiting for another labeler is not this page's to answer
        status, res = api(base, "/api/answer", answer_body("t0", sub="sub-route001", client="tab-a"))
        assert status == 409 and res["code"] == "not_offered" and "'t0'" in res["error"]
    assert answers_of(store) == [("q0", "left"), ("q1", "left"), ("q2", "left")]
    assert store.pending_query_ids() == ["t0"]


@pytest.mark.browser
def test_browser_shows_why_an_answer_to_a_lost_pair_was_not_stored(page, store):
    store.add_queries(make_queries(2), route="human")
    with serve(store, env_id=ENV, lease_ttl_s=1.0) as srv:  # the page renews every 20 s: its leases lapse
        page.goto(srv.local_url)
        wait_until(lambda: labeling(page), what="the first pair")
        assert shown_id(page) == "q0"
        wait_until(lambda: "next pair ready" in page.inner_text("#frame"), what="the prefetch")
        time.sleep(1.1)
        base = base_url_of(srv)
        assert api(base, "/api/lease", {"client": "tab-other", "have": []})[1]["query"]["id"] == "q0"
        page.keyboard.press("ArrowLeft")
        wait_until(lambda: "Another tab or person has this pair now" in page.inner_text("#toast"),
                   what="the page to say why")
        wait_until(lambda: shown_id(page) == "q1", what="the page to move on")
        assert store.all_answers() == []
        page.keyboard.press("ArrowRight")
        wait_until(lambda: answers_of(store) == [("q1", "right")], what="the next answer")


# -- 5. methods ------------------------------------------------------------------------------------
def test_other_methods_get_405_with_allow(server, store):
    port = server.port
    for method in ("PATCH", "OPTIONS", "TRACE", "PUT", "DELETE", "PROPFIND", "get"):
        for path, allow in (("/api/answer", "POST"), ("/", "GET, HEAD"), ("/api/state", "GET, HEAD")):
            status, headers, body, _ = raw(port, f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                                 f"Content-Length: 0\r\n\r\n".encode())
            assert status == 405 and headers["allow"] == allow, (method, path, status, body)
            assert headers["content-type"].startswith("application/json")
            res = json.loads(body)
            assert res["code"] == "method_not_allowed" and repr(method) in res["error"] and allow.split(",")[0] in res["error"]
    assert raw(port, b"PATCH /nowhere HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")[0] == 404
    status, headers, body, _ = raw(port, b"POST /api/state HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert status == 405 and headers["allow"] == "GET, HEAD"
    status, headers, body, _ = raw(port, b"HEAD /api/state HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0
    # the standard library's own refusals come as JSON too
    for line, code in ((b"GET /api/state HTTP/1.1\r\nX: " + b"a" * 70_000, 431), (b"GET / HTTP/1.1 extra", 400)):
        status, headers, body, _ = raw(port, line + b"\r\n\r\n")
        assert status == code and headers["content-type"].startswith("application/json") and json.loads(body)["error"]
    # kin: a Host that only starts like a loopback one, or two Host headers
    status, _, body, _ = raw(port, b"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1:80@evil.example\r\n\r\n")
    assert status == 403
    status, _, body, _ = raw(port, b"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n\r\n")
    assert status == 400 and "2 Host headers" in json.loads(body)["error"]
    assert_unchanged(store)


# -- 6. the token never reaches the disk -----------------------------------------------------------
SECRET = "Tok-9f3a_long.enough~secret"


def test_token_from_the_environment_and_never_on_disk(store, run_dir, monkeypatch, caplog):
    store.add_queries(make_queries(1), route="human")
    monkeypatch.setenv(TOKEN_ENV, SECRET)
    caplog.set_level(logging.DEBUG, logger="oracles.human.server")
    with HumanLabeler(store, env_id=ENV, linger_s=0) as lab:
        assert lab.url.endswith(f"?token={SECRET}") and lab.server.token == SECRET
        base = base_url(lab)
        assert request(base, "GET", "/api/state")[0] == 401
        status, headers, _ = request(base, "GET", f"/?token={SECRET}")
        assert status == 200 and headers["set-cookie"].startswith(f"{lab.server.cookie_name}={SECRET}")
        hdr = {"X-RLHP-Token": SECRET}
        assert request(base, "GET", "/clips/q0/left.png", headers=hdr)[0] == 200
        assert api(base, "/api/answer", answer_body("q0"), headers=hdr)[0] == 200
        request(base, "GET", f"/api/nothing?token={SECRET}")  # logged as an error
    assert SECRET not in caplog.text and "token=<redacted>" in caplog.text
    on_disk = [p for p in run_dir.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert on_disk == [] and (run_dir / PORT_FILE).exists()
    # an explicit token wins; a malformed one in the environment is named, not echoed
    with HumanLabeler(store, env_id=ENV, token="explicit-1", linger_s=0) as lab:
        assert lab.server.token == "explicit-1"
    monkeypatch.setenv(TOKEN_ENV, "bad token;")
    with pytest.raises(ValueError, match=f"\\${TOKEN_ENV} must be 4-256 characters") as info:
        HumanLabeler(store, env_id=ENV, linger_s=0)
    assert "bad token" not in str(info.value)
    for bad in ("x" * 300, "tok en", 12345):  # the rule a command line can check before starting a run
        with pytest.raises(ValueError, match="--token must be 4-256 characters") as info:
            check_token(bad, "--token")
        assert "tok en" not in str(info.value) and "xxxx" not in str(info.value)


def test_cli_takes_the_token_from_the_environment(store, run_dir):
    store.add_queries(make_queries(1), route="human")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, TOKEN_ENV: SECRET}
    proc = subprocess.Popen([sys.executable, "-m", "oracles.human", "--run-dir", str(run_dir), "--port", str(port)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 20
        while True:
            try:
                status = request(base, "GET", "/api/state")[0]
                break
            except OSError:
                assert time.time() < deadline, "the CLI server did not start"
                time.sleep(0.05)
        assert status == 401
        assert request(base, "GET", "/api/state", headers={"X-RLHP-Token": SECRET})[0] == 200
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0 and f"?token={SECRET}" in err  # printed for the person, never stored
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


# -- 7. a restarted labeler comes back on the same port --------------------------------------------
def test_restarted_labeler_keeps_its_port_and_the_page_reconnects(store, run_dir):
    store.add_queries(make_queries(2), route="human")
    lab = HumanLabeler(store, env_id=ENV, linger_s=0)
    url, port = lab.url, lab.server.port
    assert json.loads((run_dir / PORT_FILE).read_text()) == {"port": port} and remembered_port(run_dir) == port
    base = base_url(lab)
    body = answer_body("q0", "right", sub="sub-restart1", client="tab-a")
    status, saved = api(base, "/api/answer", body)
    assert status == 200
    lab.close()
    with pytest.raises(OSError):
        request(base, "GET", "/api/state")  # what the page sees while the run is down: it retries
    lab = HumanLabeler(LabelStore(run_dir / "labels.sqlite"), env_id=ENV, linger_s=0)
    try:
        assert lab.url == url
        # what the page does on reconnecting: poll the state, retry an answer whose reply was lost
        assert api(base, "/api/state")[1]["labels"]["answered"] == 1
        status, again = api(base, "/api/answer", {**body, "sent_at": body["sent_at"] + 3000})
        assert status == 200 and again["answer_id"] == saved["answer_id"]
        assert api(base, "/api/lease", {"client": "tab-a", "have": []})[1]["query"]["id"] == "q1"
    finally:
        lab.close()
    # an explicit port is used as given, and remembered for the next start
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        other = s.getsockname()[1]
    with HumanLabeler(store, env_id=ENV, port=other, linger_s=0) as lab:
        assert lab.server.port == other
    with HumanLabeler(store, env_id=ENV, linger_s=0) as lab:
        assert lab.server.port == other


def test_a_remembered_port_that_is_taken_is_a_clear_error(store, run_dir):
    lab = HumanLabeler(store, env_id=ENV, linger_s=0)
    port = lab.server.port
    lab.close()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        with pytest.raises(LabelPortError) as info:
            HumanLabeler(store, env_id=ENV, linger_s=0)
        assert isinstance(info.value, ValueError)  # the training CLI prints it and exits 2
        message = str(info.value)
        assert f"127.0.0.1:{port}" in message and "in use" in message
        assert "--port N" in message and str(run_dir / PORT_FILE) in message
        with pytest.raises(LabelPortError, match=f"127.0.0.1:{port}: .*Pass another port"):
            HumanLabeler(store, env_id=ENV, port=port, linger_s=0)
    (run_dir / PORT_FILE).write_text('{"port": "eighty"}')
    with pytest.raises(LabelPortError, match="should hold .*delete it"):
        HumanLabeler(store, env_id=ENV, linger_s=0)


@pytest.mark.browser
def test_browser_page_reconnects_to_the_restarted_labeler(page, store, run_dir):
    """The README's promise: the page retries through a restart. The run comes back with port=0
    (the default) and must land where the open page keeps knocking."""
    store.add_queries(make_queries(3), route="human")
    lab = HumanLabeler(store, env_id=ENV, linger_s=0)  # stops as a crash would: the page is not told
    page.goto(lab.url)
    wait_until(lambda: labeling(page), what="the first pair")
    page.keyboard.press("ArrowLeft")
    wait_until(lambda: shown_id(page) == "q1", what="the first answer")
    lab.close()
    page.keyboard.press("ArrowRight")
    wait_until(lambda: "Not saved yet" in page.inner_text("#toast"), what="the page to notice")
    lab = HumanLabeler(LabelStore(run_dir / "labels.sqlite"), env_id=ENV, linger_s=0)
    try:
        wait_until(lambda: shown_id(page) == "q2", timeout=15, what="the retry to reach the restarted labeler")
        assert answers_of(LabelStore(run_dir / "labels.sqlite")) == [("q0", "left"), ("q1", "right")]
        assert "Saved" in page.inner_text("#toast")
    finally:
        lab.close()

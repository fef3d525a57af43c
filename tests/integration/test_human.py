"""The human adapter: the labeling server over HTTP, and the page in a real (headless) browser.

Queries are small synthetic segments with random blocky RGB frames (no emulator), plus one
test with real Enduro frames that makes the README's screenshot (written to
docs/labeling-page.png only with RLHP_WRITE_DOCS=1).
Browser tests drive Debian's Chromium through Playwright and are skipped only when
/usr/bin/chromium is absent.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image
import pytest

from oracles.human import HumanLabeler, serve
from oracles.human.clips import ClipCache, encode_png, sprite_sheet
from oracles.human.tasks import GENERIC, task_for
from rlhp_core.label_store import LabelStore
from rlhp_core.labeler import Labeler, RoutedLabeler
from rlhp_core.segments import Query, Segment
from tests.helpers.human import (ENV, OBS, ROOT, SAMPLE_JS, answer_body, answers_of, api, assert_clips_play,
                                  base_url, labeling, make_queries, make_segment, request, shown_id, wait_until,
                                  write_status)


@pytest.fixture
def store(run_dir: Path) -> LabelStore:
    return LabelStore(run_dir / "labels.sqlite", env_id=ENV, obs_shape=OBS)


@pytest.fixture
def labeler(store: LabelStore):
    lab = HumanLabeler(store, env_id=ENV, label_budget=20, announce=False, linger_s=0)
    yield lab
    lab.close()


def test_labeler_protocol_and_routing(store):
    lab = HumanLabeler(store, env_id=ENV, announce=False)
    try:
        assert isinstance(lab, Labeler)
        assert lab.name == "human" and lab.wants_frames
        assert lab.url.startswith("http://127.0.0.1:") and "token" not in lab.url

        class Teacher:
            name, wants_frames = "oracle:test", False

            def post(self, store, queries, env_step):
                store.add_queries(queries, env_step=env_step, route="oracle", keep_frames=False)
                for q in queries:
                    store.add_answer(q.id, "left", labeler=self.name)

            def close(self):
                pass

        routed = RoutedLabeler(Teacher(), lab, initial=2)
        routed.post(store, make_queries(5), env_step=0)
        assert store.pending_query_ids(route="human") == ["q2", "q3", "q4"]
        base = base_url(lab)
        seen = []
        for i in range(3):
            status, res = api(base, "/api/lease", {"client": "tab-a", "have": seen})
            assert status == 200
            seen.append(res["query"]["id"])
        assert seen == ["q2", "q3", "q4"]  # only people's queries, oldest first
        status, res = api(base, "/api/lease", {"client": "tab-a", "have": seen})
        assert res["query"] is None
        assert api(base, "/api/answer", answer_body("q2", "right", client="tab-a"))[0] == 200  # the lease holder
        who = {a.query_id: a.labeler for a in store.current_answers()}
        assert who == {"q0": "oracle:test", "q1": "oracle:test", "q2": "human"}
    finally:
        lab.close()
    with pytest.raises(ValueError, match="does not match"):
        HumanLabeler(store, env_id="CartPole-v1", announce=False)


def test_tasks_per_env():
    assert task_for("ALE/Enduro-v5").text == "Pass as many cars as you can, and don't get passed."
    assert task_for("EnduroNoFrameskip-v4").text == task_for("ALE/Enduro-v5").text
    for env in ("CartPole-v1", "Pendulum-v1", "Hopper-v5"):
        assert task_for(env) is not GENERIC and task_for(env).text
    assert task_for("MyEnv-v0") is GENERIC


def _decode_png(data: bytes) -> np.ndarray:
    """An 8-bit RGB PNG's pixels (Pillow decodes; the test checks the bytes are a PNG of that kind)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    img = Image.open(io.BytesIO(data))
    assert img.mode == "RGB"
    return np.asarray(img)


def test_clips_are_exact_sprite_sheets_cached_on_disk(store, run_dir):
    qs = make_queries(1, length=7, ends=(3,))
    store.add_queries(qs, route="human")
    cache = ClipCache(store, run_dir / "clips")
    meta = cache.meta("q0")
    assert meta["left"]["frames"] == 7 and meta["left"]["episode_ends"] == [3]
    sheet = _decode_png(cache.png("q0", "left"))
    m = meta["left"]
    for i in range(7):
        r, c = divmod(i, m["cols"])
        got = sheet[r * m["height"]:(r + 1) * m["height"], c * m["width"]:(c + 1) * m["width"]]
        assert np.array_equal(got, qs[0].left.frames[i])
    files = sorted(p.name for p in (run_dir / "clips").iterdir())
    assert len(files) == 3 and not any(f.endswith(".tmp") for f in files)
    mtimes = {p: p.stat().st_mtime_ns for p in (run_dir / "clips").iterdir()}
    ClipCache(store, run_dir / "clips").meta("q0")  # a restarted server reuses the cache
    assert mtimes == {p: p.stat().st_mtime_ns for p in (run_dir / "clips").iterdir()}
    # big renders wrap to rows and are downsampled to a size every browser decodes
    big, layout = sprite_sheet(np.zeros((200, 480, 480, 3), np.uint8))
    assert layout["downsample"] >= 2 and big.shape[1] <= 4096 and layout["rows"] > 1
    assert _decode_png(encode_png(np.full((3, 5, 3), 7, np.uint8))).tolist() == np.full((3, 5, 3), 7).tolist()


def test_answer_is_stored_with_who_and_when_and_is_idempotent(labeler, store):
    labeler.post(store, make_queries(3), env_step=100)
    base = base_url(labeler)
    status, res = api(base, "/api/lease", {"client": "tab-a", "have": []})
    assert status == 200 and res["query"]["id"] == "q0"
    assert res["query"]["left"]["url"] == "/clips/q0/left.png"
    # the browser's clock is 1 hour fast: the stored times are the server's, durations kept
    skew = 3_600_000
    now = time.time() * 1000 + skew
    body = answer_body("q0", "left", sub="sub-aaaa1111", client="tab-a", shown_at=now - 4000, answered_at=now - 1000,
                       sent_at=now)
    status, res = api(base, "/api/answer", body)
    assert status == 200 and res["saved"] and res["answer"] == "left"
    [rec] = store.current_answers()
    assert rec.answer == "left" and rec.labeler == "human"  # HumanLabeler.name; the person is in params
    assert rec.labeler_params == {"name": "tester", "client": "tab-a"}
    assert rec.answered_at - rec.shown_at == pytest.approx(3.0, abs=0.01)
    assert abs(rec.answered_at - (time.time() - 1.0)) < 2.0
    # the same submission again (a retry): same answer id, nothing new stored
    status, again = api(base, "/api/answer", body)
    assert status == 200 and again["answer_id"] == res["answer_id"]
    assert len(store.all_answers()) == 1
    # another submission for the answered pair (another tab): refused, nothing changes
    status, err = api(base, "/api/answer", answer_body("q0", "right", sub="sub-bbbb2222"))
    assert status == 409 and err["code"] == "already_answered"
    assert [(a.query_id, a.answer) for a in store.all_answers()] == [("q0", "left")]


def test_leases_prefetch_reload_and_two_tabs(labeler, store):
    labeler.post(store, make_queries(4), env_step=0)
    base = base_url(labeler)
    lease = lambda client, have: api(base, "/api/lease", {"client": client, "have": have})[1]["query"]
    a1 = lease("tab-a", [])["id"]
    a2 = lease("tab-a", [a1])["id"]  # prefetch
    b1 = lease("tab-b", [])["id"]
    b2 = lease("tab-b", [b1])["id"]
    assert len({a1, a2, b1, b2}) == 4
    assert lease("tab-c", []) is None  # every pair is leased
    assert lease("tab-a", [])["id"] == a1  # a reload gets the same pair back
    status, res = api(base, "/api/renew", {"client": "tab-a", "ids": [a1, a2, b1]})
    assert status == 200 and res == {"renewed": [a1, a2], "lost": [b1]}
    _, state = api(base, "/api/state")
    assert state["labels"]["pending_for_people"] == 4


def test_undo_gives_the_pair_back(labeler, store):
    labeler.post(store, make_queries(2), env_step=0)
    base = base_url(labeler)
    api(base, "/api/lease", {"client": "tab-a", "have": []})
    _, res = api(base, "/api/answer", answer_body("q0", "equal", sub="sub-undo0001", client="tab-a"))
    aid = res["answer_id"]
    status, err = api(base, "/api/undo", {"client": "tab-b", "answer_id": aid})
    assert status == 403 and err["code"] == "not_yours"
    assert store.current_answers()[0].retracted_at is None
    status, res = api(base, "/api/undo", {"client": "tab-a", "answer_id": aid})
    assert status == 200 and res["undone"] and res["query"]["id"] == "q0"
    assert store.current_answers() == [] and store.all_answers()[0].retracted_at is not None
    status, err = api(base, "/api/undo", {"client": "tab-a", "answer_id": aid})
    assert status == 409 and err["code"] == "already_undone"
    # the pair is leased back to whoever undid it
    assert api(base, "/api/lease", {"client": "tab-b", "have": []})[1]["query"]["id"] == "q1"
    assert api(base, "/api/lease", {"client": "tab-a", "have": []})[1]["query"]["id"] == "q0"
    status, res = api(base, "/api/answer", answer_body("q0", "right", sub="sub-undo0002", client="tab-a"))
    assert status == 200
    assert [(a.query_id, a.answer) for a in store.current_answers()] == [("q0", "right")]


def test_export_csv_and_state(labeler, store, run_dir):
    labeler.post(store, make_queries(2), env_step=0)
    base = base_url(labeler)
    api(base, "/api/answer", answer_body("q0", "left", sub="sub-exp00001"))
    _, res = api(base, "/api/answer", answer_body("q1", "incomparable", sub="sub-exp00002"))
    api(base, "/api/undo", {"client": "tab-test", "answer_id": res["answer_id"]})
    with urllib.request.urlopen(base + "/api/export.csv", timeout=10) as r:  # what the download link gets
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/csv")
        assert "attachment" in r.headers["Content-Disposition"]
        body = r.read()
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    assert [(r["query_id"], r["answer"], r["labeler"], r["retracted_at"] != "") for r in rows] == [
        ("q0", "left", "human", False), ("q1", "incomparable", "human", True)]
    assert [json.loads(r["labeler_params"])["name"] for r in rows] == ["tester", "tester"]
    assert all(float(r["shown_at"]) < float(r["answered_at"]) for r in rows)
    status, state = api(base, "/api/state")
    assert state["status"] is None and state["label_budget"] == 20 and state["closing"] is False
    assert state["labels"]["answered"] == 1 and state["labels"]["pending_for_people"] == 1
    assert state["task"] == "Pass as many cars as you can, and don't get passed." and state["fps"] == 15
    written = write_status(run_dir / "status.json", phase="pretraining reward model")
    _, state = api(base, "/api/state")
    assert state["status"] == written and state["status_age_s"] < 5


def test_closing_server_tells_the_open_page_and_leases_nothing(store):
    """close(linger_s) serves on until an open page has been told; pairs leased then could not be
    answered, so a closing server hands out none (and answers saved before it are kept)."""
    import threading

    store.add_queries(make_queries(2), route="human")
    server = serve(store, env_id=ENV)
    base = server.local_url.rstrip("/")
    assert api(base, "/api/state")[1]["closing"] is False  # a page polled: it is open
    closer = threading.Thread(target=server.close, kwargs={"linger_s": 10.0})
    t = time.time()
    closer.start()
    wait_until(lambda: server.closing, timeout=5, what="closing")
    _, res = api(base, "/api/lease", {"client": "tab-late", "have": []})
    assert res["query"] is None and res["state"]["closing"] is True
    closer.join(timeout=10)
    assert not closer.is_alive() and time.time() - t < 5  # told by the lease reply: no 10 s wait
    assert store.pending_query_ids() == ["q0", "q1"]


def test_bad_requests_get_4xx_json_and_change_nothing(labeler, store, run_dir):
    labeler.post(store, make_queries(2), env_step=0)
    base = base_url(labeler)
    assert request(base, "GET", "/clips/q0/left.png")[:2][0] == 200
    clips_before = sorted(p.name for p in (run_dir / "clips").iterdir())
    outside = run_dir.parent / "secret.txt"
    outside.write_text("the-file-contents-42")
    port = base.rsplit(":", 1)[1]
    bad_gets = {
        "/clips/../../secret.txt": 400,
        "/clips/q0/../../../secret.txt": 400,
        "/clips/%2e%2e/%2e%2e/secret.txt": 400,
        "/clips/%2E%2E%2Fsecret.txt/left.png": 400,
        "/clips/q0%2f..%2f..%2fsecret.txt/left.png": 400,
        "/clips/..%5c..%5csecret.txt/left.png": 400,
        "/clips/q0\\..\\secret.txt": 400,
        "//etc/passwd": 404,  # http.server itself folds a leading // to /
        f"http://127.0.0.1:{port}/etc/passwd": 400,
        "/clips/%00/left.png": 400,
        "/clips/%ff%fe/left.png": 400,
        "/static/../server.py": 400,
        "/static/%2e%2e%2fserver.py": 400,
        "/static/server.py": 404,
        "/clips/nope/left.png": 404,
        "/clips/q0/middle.png": 404,
        "/clips/q0/left.png/x": 404,
        "/api/nothing": 404,
        "/api/answer": 405,
        str(outside): 404,
    }
    for path, code in bad_gets.items():
        status, headers, body = request(base, "GET", path)
        assert status == code, (path, status, body)
        assert headers["content-type"].startswith("application/json") and json.loads(body)["error"], path
        assert b"the-file-contents-42" not in body
    ok = answer_body("q0")
    bad_posts = [
        ("/api/answer", {**ok, "answer": "best"}, 400, "not one of left, right, equal, incomparable"),
        ("/api/answer", {**ok, "answer": None}, 400, "not one of"),
        ("/api/answer", {**ok, "query_id": "nope"}, 404, "no query"),
        ("/api/answer", {**ok, "query_id": "../q0"}, 400, "malformed query id"),
        ("/api/answer", {**ok, "query_id": 7}, 400, "query id must be a string"),
        ("/api/answer", {**ok, "query_id": "x" * 300}, 400, "query id must be"),
        ("/api/answer", {**ok, "submission_id": "a b"}, 400, "submission_id"),
        ("/api/answer", {**ok, "client": "../../x"}, 400, "client"),
        ("/api/answer", {**ok, "shown_at": "yesterday"}, 400, "shown_at"),
        ("/api/answer", {**ok, "labeler": ["x"]}, 400, "labeler name"),
        ("/api/undo", {"client": "tab-test", "answer_id": "1"}, 400, "answer_id"),
        ("/api/undo", {"client": "tab-test", "answer_id": 999}, 404, "no answer"),
        ("/api/lease", {"client": "tab-test", "have": "q0"}, 400, "have"),
        ("/api/lease", {"client": "tab-test", "have": ["../x"]}, 400, "malformed"),
        ("/api/lease", [1, 2], 400, "JSON object"),
    ]
    for path, body, code, message in bad_posts:
        status, res = api(base, path, body)
        assert status == code and message in res["error"], (path, body, status, res)
    for raw, ctype, code in [(b"{not json", "application/json", 400), (b"query_id=q0", "text/plain", 415),
                             (b"{}" + b" " * 70_000, "application/json", 413)]:
        status, _, body = request(base, "POST", "/api/answer", raw_body=raw, headers={"Content-Type": ctype})
        assert status == code and json.loads(body)["error"]
    status, _, body = request(base, "GET", "/api/state", headers={"Host": "evil.example:80"})
    assert status == 403 and "Host" in json.loads(body)["error"]  # no DNS rebinding
    assert store.all_answers() == []
    assert store.counts()["pending"] == 2
    assert sorted(p.name for p in (run_dir / "clips").iterdir()) == clips_before
    assert outside.read_text() == "the-file-contents-42"


def test_token_required_beyond_loopback(store):
    store.add_queries(make_queries(1), route="human")
    server = serve(store, host="0.0.0.0", port=0, env_id=ENV)
    try:
        assert server.token and f"?token={server.token}" in server.url
        base = f"http://127.0.0.1:{server.port}"
        for path in ("/", "/api/state", "/clips/q0/left.png", "/api/export.csv"):
            status, _, body = request(base, "GET", path)
            assert status == 401 and "token" in json.loads(body)["error"], path
        assert request(base, "GET", "/?token=wrong")[0] == 401
        assert request(base, "GET", "/api/state", headers={"Cookie": f"{server.cookie_name}=wrong"})[0] == 401
        assert api(base, "/api/answer", answer_body("q0"))[0] == 401
        assert store.all_answers() == []
        status, headers, body = request(base, "GET", f"/?token={server.token}")
        assert status == 200 and b"<canvas" in body
        cookie = headers["set-cookie"]
        assert cookie.startswith(f"{server.cookie_name}={server.token}") and "HttpOnly" in cookie
        jar = {"Cookie": cookie.split(";")[0]}
        assert request(base, "GET", "/api/state", headers=jar)[0] == 200
        assert request(base, "GET", "/clips/q0/left.png", headers=jar)[0] == 200
        assert api(base, "/api/answer", answer_body("q0"), headers={"X-RLHP-Token": server.token})[0] == 200
    finally:
        server.close()
    # an explicit token on loopback is required too; a loopback server without one needs none
    with serve(store, token="s3cret", env_id=ENV) as server:
        base = f"http://127.0.0.1:{server.port}"
        assert request(base, "GET", "/api/state")[0] == 401
        assert request(base, "GET", "/api/state", headers={"X-RLHP-Token": "s3cret"})[0] == 200
        assert server.url.endswith("?token=s3cret")
    with pytest.raises(ValueError, match="token must be"):
        serve(store, token="a b;c", env_id=ENV)  # would break the cookie header


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_cli(run_dir: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "oracles.human", "--run-dir", str(run_dir), "--port", str(port)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            if request(f"http://127.0.0.1:{port}", "GET", "/api/state")[0] == 200:
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"server did not start: {proc.communicate()}")


@pytest.mark.slow  # kill -9 the server, restart it: 20 s on a busy 2-core box
def test_cli_killed_and_restarted_loses_nothing(store, run_dir):
    store.add_queries(make_queries(3), route="human")
    (run_dir / "config.json").write_text(json.dumps({"label_budget": 290}))
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    proc = _start_cli(run_dir, port)
    try:
        status, res = api(base, "/api/answer", answer_body("q0", "right", sub="sub-kill0001"))
        assert status == 200
        proc.send_signal(signal.SIGKILL)  # no chance to flush anything after the 200
        proc.wait(timeout=10)
        fresh = LabelStore(run_dir / "labels.sqlite")
        assert [(a.query_id, a.answer, a.labeler_params["name"]) for a in fresh.current_answers()] == [
            ("q0", "right", "tester")]
        proc = _start_cli(run_dir, port)
        _, state = api(base, "/api/state")
        assert state["labels"]["answered"] == 1 and state["label_budget"] == 290
        status, again = api(base, "/api/answer", answer_body("q0", "right", sub="sub-kill0001"))  # the page's retry
        assert status == 200 and again["answer_id"] == res["answer_id"]
        assert api(base, "/api/lease", {"client": "tab-x", "have": []})[1]["query"]["id"] == "q1"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0 and f"http://127.0.0.1:{port}/" in err
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(LabelStore(run_dir / "labels.sqlite").all_answers()) == 1



@pytest.mark.browser
def test_browser_label_with_keys_and_clicks_undo_reload(page, labeler, store):
    labeler.post(store, make_queries(4, ends=(5,)), env_step=0)
    page.goto(labeler.url)
    page.fill("#name", "alice")
    page.press("#name", "Enter")  # typing a name, then Enter, hands the keys back to the page
    wait_until(lambda: labeling(page), what="the first pair")
    assert page.inner_text("#task") == "Pass as many cars as you can, and don't get passed."
    assert page.locator("#clip-left .ends span").count() == 1  # the episode end is marked
    assert_clips_play(page)
    first = shown_id(page)
    assert first == "q0"

    page.keyboard.press("ArrowLeft")
    wait_until(lambda: shown_id(page) == "q1", what="the next pair after a key")
    assert "Saved" in page.inner_text("#toast")
    assert answers_of(store) == [("q0", "left")]

    page.click("button[data-answer=right]")
    wait_until(lambda: shown_id(page) == "q2", what="the next pair after a click")
    assert answers_of(store) == [("q0", "left"), ("q1", "right")]

    page.keyboard.press("z")
    wait_until(lambda: shown_id(page) == "q1", what="the undone pair to come back")
    assert "Undone" in page.inner_text("#toast")
    assert answers_of(store) == [("q0", "left")]

    page.reload()
    wait_until(lambda: labeling(page), what="the pair after reload")
    assert shown_id(page) == "q1"  # the reload keeps this tab's pair
    assert page.input_value("#name") == "alice"
    assert_clips_play(page)
    page.keyboard.press("ArrowUp")
    wait_until(lambda: shown_id(page) == "q2", what="the next pair after reload")
    page.keyboard.press("ArrowDown")
    wait_until(lambda: shown_id(page) == "q3", what="the last pair")

    assert answers_of(store) == [("q0", "left"), ("q1", "equal"), ("q2", "incomparable")]
    everything = store.all_answers()
    assert [(a.query_id, a.answer, a.retracted_at is not None) for a in everything] == [
        ("q0", "left", False), ("q1", "right", True), ("q1", "equal", False), ("q2", "incomparable", False)]
    for a in everything:
        assert a.labeler == "human" and a.labeler_params["name"] == "alice"
        assert a.shown_at is not None and 0 < a.answered_at - a.shown_at < 30
    assert wait_until(lambda: page.inner_text("#answered") == "3", what="progress") and page.inner_text("#budget") == "20"
    assert not page.errors, page.errors


@pytest.mark.browser
def test_browser_saved_only_after_the_200_and_retries_are_idempotent(page, labeler, store):
    labeler.post(store, make_queries(3), env_step=0)
    calls = []

    def flaky(route):
        calls.append(json.loads(route.request.post_data)["submission_id"])
        if len(calls) == 1:
            route.abort()  # the request never reaches the server
        elif len(calls) == 2:
            route.fetch()  # the server commits it, but the reply is lost
            route.fulfill(status=502, body="bad gateway")
        else:
            route.continue_()

    page.route("**/api/answer", flaky)
    page.goto(labeler.url)
    wait_until(lambda: labeling(page), what="the first pair")
    page.keyboard.press("ArrowRight")
    wait_until(lambda: "Not saved yet" in page.inner_text("#toast"), what="the page to say it is not saved")
    assert shown_id(page) == "q0"  # the page does not move on before the server's 200
    wait_until(lambda: shown_id(page) == "q1", what="the retried answer to be saved")
    assert "Saved" in page.inner_text("#toast")
    assert len(calls) == 3 and len(set(calls)) == 1  # one submission id for every retry
    assert answers_of(store) == [("q0", "right")] and len(store.all_answers()) == 1


@pytest.mark.browser
def test_browser_server_restart_loses_nothing(page, store, run_dir):
    store.add_queries(make_queries(3), route="human")
    lab = HumanLabeler(store, env_id=ENV, announce=False, linger_s=0)  # a crash, not the end of the run
    port = lab.server.port
    page.goto(lab.url)
    wait_until(lambda: labeling(page), what="the first pair")
    page.keyboard.press("ArrowLeft")
    wait_until(lambda: shown_id(page) == "q1", what="the first answer")
    lab.close()  # the server goes away with the page open
    page.keyboard.press("ArrowRight")
    wait_until(lambda: "Not saved yet" in page.inner_text("#toast"), what="the page to notice")
    lab = HumanLabeler(LabelStore(run_dir / "labels.sqlite"), env_id=ENV, port=port, announce=False, linger_s=0)
    try:
        wait_until(lambda: shown_id(page) == "q2", timeout=15, what="the retry to reach the new server")
        assert answers_of(LabelStore(run_dir / "labels.sqlite")) == [("q0", "left"), ("q1", "right")]
    finally:
        lab.close()


@pytest.mark.browser
def test_browser_two_tabs_never_share_a_pair(browser, labeler, store):
    # 4 pairs: each tab holds 2 (the one shown and the next), whichever tab asks first; with 3 the
    # second tab to ask could hold only one and have nothing to show after answering it
    labeler.post(store, make_queries(4), env_step=0)
    tabs = [browser.new_context(viewport={"width": 1280, "height": 800}).new_page() for _ in range(2)]
    try:
        for t in tabs:
            t.goto(labeler.url)
        wait_until(lambda: all(labeling(t) for t in tabs), what="both tabs to show a pair")
        a, b = (shown_id(t) for t in tabs)
        assert a != b
        tabs[0].keyboard.press("ArrowLeft")
        wait_until(lambda: shown_id(tabs[0]) not in (a, ""), what="tab 1's next pair")
        assert shown_id(tabs[0]) != shown_id(tabs[1])
    finally:
        for t in tabs:
            t.context.close()


@pytest.mark.browser
def test_browser_empty_state_then_pairs_arrive(page, labeler, store, run_dir):
    write_status(run_dir / "status.json", phase="initial labels", env_steps=0, episode_return=None)
    page.goto(labeler.url)
    wait_until(lambda: "collecting new clips" in page.inner_text("#empty-title"), what="the empty state")
    assert page.inner_text("#phase") == "initial labels"
    labeler.post(store, make_queries(1, frames=False), env_step=10)  # a vector env: no frames
    wait_until(lambda: labeling(page), what="the new pair to appear")
    assert page.locator("#clip-left .noframes").is_visible()
    page.keyboard.press("ArrowLeft")
    wait_until(lambda: answers_of(store) == [("q0", "left")], what="the answer")
    write_status(run_dir / "status.json", phase="finished")
    wait_until(lambda: "finished" in page.inner_text("#empty-title"), what="the finished state")


@pytest.mark.browser
def test_browser_run_end_is_announced(page, store, run_dir):
    """The learner closes its labeler when the run ends: an open page is told before the server
    goes, and says the run finished (or stopped), not "can't reach the labeling server"."""
    store.add_queries(make_queries(3), route="human")
    write_status(run_dir / "status.json", phase="training")
    lab = HumanLabeler(store, env_id=ENV, announce=False)  # lingers up to 5 s for an open page
    page.goto(lab.url)
    wait_until(lambda: labeling(page), what="the first pair")
    page.keyboard.press("ArrowLeft")
    wait_until(lambda: shown_id(page) == "q1", what="the first answer")
    write_status(run_dir / "status.json", phase="finished")
    t = time.time()
    lab.close()
    assert time.time() - t < 5.5
    title = lambda: page.inner_text("#empty-title")  # noqa: E731
    wait_until(lambda: not labeling(page) and "The run has finished" in title(), what="the finished message")
    page.wait_for_timeout(2500)  # the server is gone: the page keeps saying the run finished
    assert "The run has finished" in title() and not labeling(page)
    assert page.is_disabled("#undo") and page.is_disabled("button[data-answer=left]")
    assert answers_of(store) == [("q0", "left")] and store.pending_query_ids() == ["q1", "q2"]
    # stopped early (Ctrl-C, should_stop): the page says so, and how to go on
    write_status(run_dir / "status.json", phase="training")
    lab = HumanLabeler(store, env_id=ENV, announce=False)  # the run's port again: the same tab, same origin
    page.goto(lab.url)
    wait_until(lambda: shown_id(page) == "q1", what="the tab's own pair, still leased to it, on the second server")
    lab.close()
    wait_until(lambda: "The run has stopped" in title(), what="the stopped message")
    assert "rerun the same command" in page.inner_text("#empty-detail")
    # with no page open, close() does not wait
    page.goto("about:blank")  # the page would poll the run's port, which the next labeler takes again
    lab = HumanLabeler(store, env_id=ENV, announce=False)
    t = time.time()
    lab.close()
    assert time.time() - t < 0.5
    assert not page.errors, page.errors


@pytest.mark.browser
def test_browser_with_token_beyond_loopback(page, store):
    store.add_queries(make_queries(2), route="human")
    with serve(store, host="0.0.0.0", port=0, env_id=ENV) as server:
        page.goto(server.local_url)
        wait_until(lambda: labeling(page), what="the first pair")
        assert "token" not in page.url  # dropped from the address bar
        assert_clips_play(page)
        page.keyboard.press("ArrowLeft")
        wait_until(lambda: answers_of(store) == [("q0", "left")], what="the answer")


def _enduro_frames() -> tuple[np.ndarray, np.ndarray]:
    """Two 25-step clips of real Enduro play: speeding and weaving vs. idling."""
    try:
        import ale_py
        import gymnasium as gym

        gym.register_envs(ale_py)
        clips = []
        for policy in ("race", "idle"):
            env = gym.make(ENV, render_mode="rgb_array", repeat_action_probability=0.0)
            env.reset(seed=3)
            frames = []
            for t in range(420):
                action = (7 if (t // 40) % 2 else 8) if policy == "race" else (1 if t % 3 == 0 else 0)
                obs, *_ = env.step(action)
                frames.append(obs)
            env.close()
            clips.append(np.stack(frames[-25:]))
        return clips[0], clips[1]
    except Exception as exc:  # pragma: no cover - depends on the emulator being installed
        pytest.skip(f"ale_py / Enduro unavailable: {exc}")


@pytest.mark.browser
def test_browser_enduro_screenshot(page, store, run_dir):
    """Real Enduro frames on the page, as a screenshot. Tests write nothing into the tracked tree: the
    README's docs/labeling-page.png is refreshed only with RLHP_WRITE_DOCS=1."""
    race, idle = _enduro_frames()
    assert race.shape == (25, 210, 160, 3) and race.dtype == np.uint8

    def seg(frames, start):
        n = len(frames)
        return Segment(obs=np.zeros((n, *OBS), np.uint8), actions=np.zeros(n, np.int64),
                       true_rewards=np.zeros(n, np.float32), episode_ends=np.zeros(n, bool), frames=frames,
                       start_step=start)

    rng = np.random.default_rng(1)
    store.add_queries([Query("warmup", make_segment(rng), make_segment(rng))], route="human")
    store.add_queries([Query("enduro-0", seg(race, 395), seg(idle, 395)),
                       Query("enduro-1", seg(idle, 395), seg(race, 395))], route="human")
    write_status(run_dir / "status.json", updated_at=time.time() - 2)
    lab = HumanLabeler(store, env_id=ENV, label_budget=5500, announce=False)
    try:
        page.goto(lab.url)
        page.fill("#name", "alice")
        page.press("#name", "Enter")  # typing a name, then Enter, hands the keys back to the page
        wait_until(lambda: labeling(page), what="the first pair")
        assert_clips_play(page)
        page.wait_for_timeout(2500)  # watch the clips a moment, as a person would (time per label)
        page.keyboard.press("ArrowUp")  # answer the warm-up pair: the page then shows its confirmation
        wait_until(lambda: shown_id(page) == "enduro-0", what="the Enduro pair")
        assert_clips_play(page)
        wait_until(lambda: "next pair ready" in page.inner_text("#frame"), what="the next pair to be prefetched")
        assert page.evaluate(SAMPLE_JS)[0][2] >= 380  # scaled up about 2.4x at 1280x800
        # everything fits in the window: clips, answer buttons and the controls under them
        assert page.evaluate("() => document.querySelector('.controls').getBoundingClientRect().bottom") <= 800
        out = (ROOT / "docs" if os.environ.get("RLHP_WRITE_DOCS") == "1" else run_dir) / "labeling-page.png"
        page.screenshot(path=str(out))
        assert out.stat().st_size > 50_000
    finally:
        lab.close()
    assert not page.errors, page.errors

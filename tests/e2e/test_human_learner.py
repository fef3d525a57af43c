"""The human adapter with the real learner: Enduro clips in headless Chromium while RL runs.

1. A Learner (the same one every run uses) trains in a background thread with ``labeler="human"``;
   the test is the person: it opens the URL the learner printed, sees two real Enduro clips
   playing, answers with a key and with a click, undoes, reloads, answers the rest (including an
   undo of an answer the learner had already trained on), and checks that the label store holds
   exactly those answers and that the learner's dataset holds exactly the live ones.
2. The one-command path: ``python -m rlhp_core.train ... --labeler human`` prints
   ``Label at: URL``; the page labels the initial batch; the run finishes and the page says so.
3. ``--labeler rational+human``: the teacher answers the initial batch (the learner waits for no
   person), people get the rest.

Chromium is Debian's /usr/bin/chromium (never ``playwright install``); skipped when absent.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from rlhp_core.config import TrainConfig
from rlhp_core.label_store import LabelStore
from rlhp_core.segments import ANSWER_MU
from rlhp_core.cli import labeler_for
from rlhp_core.train import Learner
from tests.helpers.human import FINISHED, TINY, Training, assert_clips_play, empty_title, labeling, shown_id, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
ENV = "ALE/Enduro-v5"


@pytest.fixture(autouse=True)
def _needs_ale():
    pytest.importorskip("ale_py")


def answer_next(pg, key: str, previous: str, what: str, more: bool = True) -> str:
    """Answer the pair on screen with ``key``; wait until it is saved and (``more``) the next pair
    shows. Returns the answered pair's id."""
    qid = shown_id(pg)
    assert qid and qid != previous
    pg.keyboard.press(key)
    wait_until(lambda: "Saved" in pg.inner_text("#toast") and shown_id(pg) not in ((qid, "") if more else (qid,)),
               timeout=30, what=what)
    return qid


def queries_table(run_dir: Path) -> list[tuple[str, str, int]]:
    """(query id, route, env step when posted), in the order the learner posted them."""
    con = sqlite3.connect(run_dir / "labels.sqlite")
    try:
        return con.execute("SELECT id, route, env_step FROM queries ORDER BY seq").fetchall()
    finally:
        con.close()


def dataset_contents(learner: Learner) -> dict[str, tuple[float, float]]:
    """What the reward model trains on: query id -> (mu_left, mu_right)."""
    ds = learner.reward.dataset
    if not len(ds):
        return {}
    _, _, mu = ds.gather(np.arange(len(ds))[None], with_actions=False)
    return {k: tuple(float(x) for x in m) for k, m in zip(ds.keys(), mu[0])}


# -- 1. the learner in a thread, the test as the person ----------------------------------------------
def test_person_labels_while_the_learner_trains(page, tmp_path):
    run_dir = tmp_path / "run"
    total = 1_400
    cfg = TrainConfig(**TINY, total_steps=total, labeler="human", run_dir=str(run_dir), extra={"port": 0})
    gate, abort = threading.Event(), threading.Event()
    holder: dict = {}

    def should_stop() -> bool:
        # Hold the run 400 steps before its end until the person is done: one more reward refit then
        # comes after their last answer, so "the learner saw exactly these answers" is exact.
        if holder["learner"].env_steps >= total - 400:
            gate.wait(timeout=180)
        return abort.is_set()

    learner = Learner(cfg, labeler=labeler_for(cfg), should_stop=should_stop)
    closed = False
    holder["learner"] = learner
    phases: list[tuple[str, int]] = []  # every status.json write: (phase, env_steps)
    write_status = learner.write_status

    def recording_write_status():
        if not phases or phases[-1][0] != learner.phase:
            phases.append((learner.phase, learner.env_steps))
        write_status()

    learner.write_status = recording_write_status
    url = learner.reward.labeler.url
    assert url.startswith("http://127.0.0.1:") and learner.reward.labeler.name == "human"
    result: dict = {}

    def train():
        try:
            result["summary"] = learner.run()
        except BaseException as exc:  # reported by the main thread
            result["error"] = exc

    t0 = time.time()
    thread = threading.Thread(target=train, name="learner", daemon=True)
    thread.start()
    store = LabelStore(run_dir / "labels.sqlite")
    try:
        page.goto(url)
        page.fill("#name", "alice")
        page.press("#name", "Enter")
        # the learner plays with its untrained policy first; the page says so, then pairs arrive
        wait_until(lambda: labeling(page) or "collecting" in empty_title(page), timeout=30, what="the page")
        wait_until(lambda: labeling(page), timeout=120, what="the initial pairs")
        assert learner.phase == "initial labels"
        assert_clips_play(page)  # two real Enduro clips (210x160 RGB), in step, scaled up
        (lw, lh), (rw, rh) = page.evaluate(
            "() => ['left', 'right'].map(s => [document.getElementById('canvas-' + s).width,"
            " document.getElementById('canvas-' + s).height])")
        assert (lw, lh) == (rw, rh) == (160, 210)
        initial = [q for q, _, _ in queries_table(run_dir)]
        assert len(initial) == 4 and shown_id(page) == initial[0]

        q0 = answer_next(page, "ArrowLeft", "", "the next pair after a key")
        q1 = shown_id(page)
        page.click("button[data-answer=right]")
        wait_until(lambda: shown_id(page) not in ("", q1), timeout=30, what="the next pair after a click")
        assert [(a.query_id, a.answer) for a in store.current_answers()] == [(q0, "left"), (q1, "right")]
        page.keyboard.press("z")
        wait_until(lambda: shown_id(page) == q1 and "Undone" in page.inner_text("#toast"), what="the undo")
        page.reload()
        wait_until(lambda: labeling(page), timeout=30, what="the pair after reload")
        assert shown_id(page) == q1 and page.input_value("#name") == "alice"
        assert_clips_play(page)
        answer_next(page, "ArrowUp", "", "the pair after q1")
        q2 = answer_next(page, "ArrowRight", q1, "the pair after q2")
        q3 = shown_id(page)
        assert {q0, q1, q2, q3} == set(initial)
        answer_next(page, "ArrowLeft", q2, "the last initial answer", more=False)

        # the learner pretrains on those four, then trains; it reads answers back from the store
        wait_until(lambda: learner.phase == "training", timeout=120, what="pretraining to end")
        steps_at_training = learner.env_steps
        a3 = next(a for a in store.current_answers() if a.query_id == q3)
        assert a3.id in learner.reward.ingested  # q3 "left" was trained on ...
        page.keyboard.press("z")  # ... and is undone now: the learner must drop it
        wait_until(lambda: shown_id(page) == q3, timeout=30, what="the undone pair to come back")
        answer_next(page, "ArrowRight", "", "q3 answered again", more=False)

        # RL goes on: the schedule posts a new pair mid-run, which the page picks up while RL trains
        wait_until(lambda: len(queries_table(run_dir)) >= 5, timeout=120, what="a pair asked for during RL")
        q4, route4, posted_at = queries_table(run_dir)[4]
        assert route4 == "human" and posted_at > steps_at_training
        wait_until(lambda: shown_id(page) == q4, timeout=30, what="the mid-run pair on the page")
        assert_clips_play(page)
        # RL does not wait for the person: it goes on while the pair is on screen, unanswered
        wait_until(lambda: learner.env_steps > posted_at, timeout=60, what="RL to go on while q4 waits")
        assert q4 in store.pending_query_ids()
        page.keyboard.press("ArrowDown")  # can't tell: stored, never trained on
        wait_until(lambda: any(a.query_id == q4 for a in store.current_answers()), timeout=30, what="q4's answer")
        steps_when_done = learner.env_steps
        gate.set()

        # the run finishes; the learner writes "finished" and closes the page's server
        thread.join(timeout=180)
        assert not thread.is_alive(), "the run did not finish"
        if "error" in result:
            raise result["error"]
        learner.close()  # what run_training does next: the page is told the run has ended
        closed = True
        wait_until(lambda: FINISHED in empty_title(page), timeout=15, what="the page to say the run finished")
        page.wait_for_timeout(2500)  # the server is gone now: the page keeps saying so, not "can't reach"
        assert FINISHED in empty_title(page)
        assert page.inner_text("#phase") == "finished"
        assert not page.errors, page.errors
    finally:
        abort.set()
        gate.set()
        thread.join(timeout=120)
        if not closed:
            learner.close()
    wall = time.time() - t0

    # (a) the store holds exactly what the person gave, with who and when
    everything = store.all_answers()
    assert [(a.query_id, a.answer, a.retracted_at is not None) for a in everything] == [
        (q0, "left", False), (q1, "right", True), (q1, "equal", False), (q2, "right", False),
        (q3, "left", True), (q3, "right", False), (q4, "incomparable", False)]
    for a in everything:
        assert a.labeler == "human" and a.labeler_params["name"] == "alice"
        assert a.labeler_params["client"].startswith("tab-")
        assert a.shown_at is not None and 0 < a.answered_at - a.shown_at < 120
        assert t0 - 5 < a.shown_at < a.answered_at <= time.time()
    live = store.current_answers()
    routes = {q: r for q, r, _ in queries_table(run_dir)}
    assert set(routes.values()) == {"human"} and len(routes) <= 6
    assert store.pending_query_ids() == [q for q in routes if q not in {a.query_id for a in live}]

    # (b) the learner saw exactly those answers: the live ones, the undone ones dropped
    assert sorted(learner.reward.ingested) == sorted(a.id for a in live)
    assert dataset_contents(learner) == {a.query_id: ANSWER_MU[a.answer] for a in live if a.answer in ANSWER_MU}
    assert dataset_contents(learner)[q3] == ANSWER_MU["right"]  # the undone "left" is gone
    assert q4 not in dataset_contents(learner)  # "can't tell" is kept, never trained on
    saved = json.loads((run_dir / "status.json").read_text())
    assert saved["labels_answered"] == len(live) and saved["phase"] == "finished"

    # (c) RL continued while the person labeled; status.json went through every phase
    summary = result["summary"]
    assert summary["env_steps"] >= total and not summary["stopped_early"] and summary["labels"] == len(live)
    assert [p for p, _ in phases] == ["initial labels", "pretraining reward model", "training", "finished"]
    assert steps_when_done > steps_at_training
    print(f"\n[human+learner] {wall:.1f} s, {summary['env_steps']} env steps, phases {phases}")


# -- 2. and 3. the one-command path -------------------------------------------------------------------
def test_one_command_human_run(page, tmp_path):
    run_dir = tmp_path / "cli"
    t0 = time.time()
    run = Training(run_dir, "--env-id", ENV, "--labeler", "human", "--total-steps", "800")
    try:
        url = run.url()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/")
        page.goto(url)
        wait_until(lambda: labeling(page), timeout=120, what="the first pair")
        assert_clips_play(page)
        answered = []
        for key in ("ArrowLeft", "ArrowRight", "ArrowUp"):
            answered.append(answer_next(page, key, "", f"an answer ({key})"))
        last = shown_id(page)
        page.click("button[data-answer=left]")
        answered.append(last)
        summary = run.finish()
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    wait_until(lambda: FINISHED in empty_title(page), timeout=15, what="the page to say the run finished")
    store = LabelStore(run_dir / "labels.sqlite")
    got = [(a.query_id, a.answer, a.labeler) for a in store.current_answers()]
    assert got[:4] == list(zip(answered, ("left", "right", "equal", "left"), ["human"] * 4))
    assert summary["env_steps"] >= 800 and not summary["stopped_early"] and summary["labels"] == len(got)
    status = json.loads((run_dir / "status.json").read_text())
    assert status["phase"] == "finished" and status["env_steps"] == summary["env_steps"]
    assert not page.errors, page.errors
    print(f"\n[one command, human] {time.time() - t0:.1f} s")


def test_one_command_teacher_then_people(page, tmp_path):
    """rational+human: the teacher answers the initial batch at once, so RL starts without waiting
    for anyone; the pairs asked for during RL go to the page."""
    run_dir = tmp_path / "mixed"
    t0 = time.time()
    # a label schedule front-loaded (C = 100 frames): people get pairs early in the run
    run = Training(run_dir, "--env-id", ENV, "--labeler", "rational+human", "--total-steps", "1200",
                   "--label-budget", "8", "--label-schedule-constant", "100")
    try:
        url = run.url()
        page.goto(url)
        wait_until(lambda: labeling(page), timeout=120, what="a pair for people")
        first = shown_id(page)
        page.keyboard.press("ArrowRight")
        wait_until(lambda: shown_id(page) != first, timeout=30, what="the answer to be saved")
        summary = run.finish()
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    wait_until(lambda: FINISHED in empty_title(page), timeout=15, what="the page to say the run finished")
    table = queries_table(run_dir)
    routes = [r for _, r, _ in table]
    assert routes[:4] == ["oracle"] * 4 and set(routes[4:]) == {"human"} and len(routes) > 4
    store = LabelStore(run_dir / "labels.sqlite")
    by_query = {a.query_id: a for a in store.current_answers()}
    for qid, route, _ in table[:4]:  # the initial batch: the teacher's, answered as it was posted
        assert by_query[qid].labeler.startswith("oracle:") and by_query[qid].shown_at is None
    human = [a for a in store.current_answers() if a.labeler == "human"]
    assert [(a.query_id, a.answer) for a in human] == [(first, "right")]
    assert table[[q for q, _, _ in table].index(first)][2] > 400  # asked for during RL, after the initial batch
    assert summary["env_steps"] >= 1200 and summary["labels"] == len(by_query)
    assert not page.errors, page.errors
    print(f"\n[one command, rational+human] {time.time() - t0:.1f} s")

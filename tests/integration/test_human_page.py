"""The labeling page for a new user: a run's own goal, pretraining progress, classic-control and
MuJoCo clips, and what the page says when a run cannot draw its clips.

1. ``--goal TEXT`` (training command line and ``python -m oracles.human``) replaces the env's usual
   line, is shown as text (never HTML), and an empty one is refused with exit status 2.
2. During reward-model pretraining the empty page shows the epoch (from status.json) and its pace.
3. CartPole and Pendulum frames (pygame, a core dependency through gymnasium[classic-control])
   reach the page, from a real env and from a one-command run with ``--labeler human``.
4. A run whose env cannot render (no pygame, no OpenGL) says why on the page, not just "no frames".

Browser tests drive Debian's /usr/bin/chromium through Playwright (skipped only when it is absent).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from oracles.human import HumanLabeler, check_goal
from oracles.human.__main__ import main as serve_main
from oracles.human.server import LabelServer
from rlhp_core.envs import make_vec_env
from rlhp_core.gym_vec_env import GymVecEnv
from rlhp_core.label_store import LabelStore
from rlhp_core.segments import Query, Segment
from tests.helpers.human import (ROOT, api, assert_clips_play, base_url, labeling, make_queries, shown_id,
                                  wait_until, write_status)

CARTPOLE = "CartPole-v1"
GOAL = "Keep alongside other cars; don't pass them"
PYGAME_MISSING = ('unavailable: DependencyNotInstalled: pygame is not installed, run '
                  '`pip install "gymnasium[classic-control]"`')


def cartpole_store(run_dir: Path) -> LabelStore:
    return LabelStore(run_dir / "labels.sqlite", env_id=CARTPOLE, obs_shape=(4,))


# -- 1. the goal -----------------------------------------------------------------------------
def test_goal_checks():
    assert check_goal("  Keep alongside\n other cars  ") == "Keep alongside other cars"
    assert check_goal("<b>x</b> & \"y\"") == "<b>x</b> & \"y\""  # shown as text: any printable text is fine
    for bad, why in (("", "expected the goal"), ("  \n\t ", "expected the goal"), ("x" * 501, "at most 500"),
                     ("a\x00b", "printable"), (3, "must be text")):
        with pytest.raises(ValueError, match=why):
            check_goal(bad, "--goal")


def test_goal_checks_before_anything_is_served(run_dir):
    store = cartpole_store(run_dir)
    with pytest.raises(ValueError, match="expected the goal"):
        LabelServer(store, goal="")
    with pytest.raises(ValueError, match="expected the goal"):
        HumanLabeler(store, env_id=CARTPOLE, goal="   ")
    assert not (run_dir / "label_server.json").exists()  # refused before a port was taken or remembered


def test_training_cli_goal_flag(tmp_path, capsys):
    from rlhp_core.cli import _checked_config, main

    base = ["--env-id", CARTPOLE, "--labeler", "human", "--port", "0"]
    run = tmp_path / "run"
    assert main([*base, "--run-dir", str(run), "--goal", ""]) == 2
    err = capsys.readouterr().err
    assert "--goal ''" in err and "expected the goal" in err and len(err.strip().splitlines()) == 1
    assert main([*base, "--run-dir", str(run), "--goal", " \t "]) == 2
    assert "--goal" in capsys.readouterr().err
    assert not run.exists()  # refused before anything was written
    # only people see a goal: a scripted labeler with --goal is refused too
    assert main(["--env-id", CARTPOLE, "--labeler", "rational", "--run-dir", str(run), "--goal", GOAL]) == 2
    assert "only people see the goal" in capsys.readouterr().err
    cfg = _checked_config([*base, "--run-dir", str(run), "--goal", f"  {GOAL}\n"])
    assert cfg.extra["goal"] == GOAL  # kept in TrainConfig.extra (config.json), like --host and --port
    assert "goal" not in _checked_config([*base, "--run-dir", str(run)]).extra


def test_serve_cli_goal_flag(run_dir, capsys):
    cartpole_store(run_dir)
    for value in ("", "   "):
        with pytest.raises(SystemExit) as exc:
            serve_main(["--run-dir", str(run_dir), "--goal", value, "--port", "0"])
        assert exc.value.code == 2
        assert "--goal" in capsys.readouterr().err


def _serve_process(run_dir: Path, *args: str) -> tuple[subprocess.Popen, str]:
    """``python -m oracles.human`` on a free port; (process, base URL)."""
    proc = subprocess.Popen([sys.executable, "-m", "oracles.human", "--run-dir", str(run_dir), "--port", "0", *args],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while time.time() < deadline:
        line = proc.stderr.readline()
        match = re.search(r"Open (http://\S+)", line)
        if match:
            return proc, match.group(1).rstrip("/")
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"the server did not start: {proc.communicate()}")


def test_goal_served_from_flag_or_the_runs_config(run_dir):
    store = cartpole_store(run_dir)
    with HumanLabeler(store, env_id=CARTPOLE, goal=f" {GOAL} ", linger_s=0) as lab:
        _, state = api(base_url(lab), "/api/state")
        assert state["task"] == GOAL and state["task_source"] == "run"
    with HumanLabeler(store, env_id=CARTPOLE, linger_s=0) as lab:
        _, state = api(base_url(lab), "/api/state")
        assert state["task"].startswith("Keep the pole balanced") and state["task_source"] == "env"
    # serving an existing run from its own process: the goal its training command line was given
    (run_dir / "config.json").write_text(json.dumps({"label_budget": 40, "extra": {"goal": GOAL}}))
    for args, want in (((), GOAL), (("--goal", "Stay left"), "Stay left")):
        proc, base = _serve_process(run_dir, *args)
        try:
            _, state = api(base, "/api/state")
            assert (state["task"], state["task_source"], state["label_budget"]) == (want, "run", 40)
        finally:
            proc.terminate()
            proc.wait(timeout=10)


@pytest.mark.browser
def test_browser_goal_is_shown_as_text(page, run_dir):
    store = cartpole_store(run_dir)
    store.add_queries(make_queries(1, size=(130, 200)), route="human")
    goal = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"> Keep alongside & pass'
    lab = HumanLabeler(store, env_id=CARTPOLE, goal=goal, linger_s=0)
    try:
        page.goto(lab.url)
        wait_until(lambda: labeling(page), what="the first pair")
        assert page.inner_text("#task") == goal  # exactly the text typed, markup and all
        assert page.eval_on_selector("#task", "e => e.children.length") == 0  # no element was made from it
        assert page.evaluate("() => document.querySelectorAll('img[src=x], script:not([src])').length") == 0
        assert page.evaluate("() => window.__pwned") is None
        assert page.is_visible("#task-note") and "not by the game's score" in page.inner_text("#task-note")
    finally:
        lab.close()
    # the env's usual line carries no such note
    lab = HumanLabeler(store, env_id=CARTPOLE, linger_s=0)
    try:
        page.goto(lab.url)
        wait_until(lambda: page.inner_text("#task").startswith("Keep the pole"), what="the env's goal")
        assert not page.is_visible("#task-note")
    finally:
        lab.close()
    assert not page.errors, page.errors


# -- 2. pretraining ----------------------------------------------------------------------------
@pytest.mark.browser
def test_browser_pretraining_progress(page, run_dir):
    store = cartpole_store(run_dir)
    phase = "pretraining reward model"
    now = time.time()
    # epoch 30 of 200, reported 1000 s ago: pretraining reports every few epochs, minutes apart at
    # the paper's Atari settings, so an old report is not yet a sign of a dead run
    write_status(run_dir / "status.json", phase=phase, pretrain_epoch=30, pretrain_epochs=200, updated_at=now - 1000)
    lab = HumanLabeler(store, env_id=CARTPOLE, label_budget=40, linger_s=0)
    try:
        page.goto(lab.url)
        detail = lambda: page.inner_text("#empty-detail")  # noqa: E731
        wait_until(lambda: "epoch 30 of 200" in detail(), what="the pretraining epoch")
        assert detail().startswith("Pretraining the reward model: epoch 30 of 200. Reinforcement learning starts next")
        assert "still going" not in detail() and "stale" not in (page.get_attribute("#updated", "class") or "")
        assert "learning from the first labels" in page.inner_text("#empty-title")
        assert page.is_visible("#empty-progress")
        width = lambda: page.evaluate(  # noqa: E731
            "() => document.getElementById('empty-progress-bar').getBoundingClientRect().width"
            " / document.getElementById('empty-progress').getBoundingClientRect().width")
        wait_until(lambda: abs(width() - 0.15) < 0.02, what="the bar at 15%")
        # 30 more epochs 120 s later: 140 to go at 4 s each, about 9 minutes; that report is itself
        # 880 s old, far more than the pace (120 s per report) explains: the page asks if the run lives
        write_status(run_dir / "status.json", phase=phase, pretrain_epoch=60, pretrain_epochs=200, updated_at=now - 880)
        wait_until(lambda: "epoch 60 of 200" in detail(), what="the next epoch")
        assert "epoch 60 of 200 (about 9 min left)" in detail()
        assert "is it still going?" in detail() and "stale" in (page.get_attribute("#updated", "class") or "")
        wait_until(lambda: abs(width() - 0.30) < 0.02, what="the bar at 30%")
        # RL starts: the bar goes
        write_status(run_dir / "status.json", phase="training")
        wait_until(lambda: "collecting new clips" in page.inner_text("#empty-title"), what="the training phase")
        assert not page.is_visible("#empty-progress")
    finally:
        lab.close()
    assert not page.errors, page.errors


# -- 3. classic-control frames -----------------------------------------------------------------
def _real_clips(env_id: str, steps: int = 40) -> tuple[list[np.ndarray], tuple[int, ...], dict]:
    """25-step clips of two envs playing at random: (frames per env, obs shape, env info)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env = make_vec_env(env_id, 2, keep_frames=True)
    # pygame is a core dependency (gymnasium[classic-control]): a missing renderer fails here, never skips
    assert not [w for w in caught if "cannot render" in str(w.message)], [str(w.message) for w in caught]
    with env:
        env.action_space.seed(0)
        obs, first = env.reset(seed=0)
        frames = [first]
        for _ in range(steps):
            frames.append(env.step(np.stack([env.action_space.sample() for _ in range(2)])).frames)
        stacked = np.stack(frames[-25:])  # (25, envs, H, W, 3)
        return [stacked[:, i] for i in range(2)], obs.shape[1:], env.info


def _segment(frames: np.ndarray, obs_shape: tuple[int, ...]) -> Segment:
    n = len(frames)
    return Segment(obs=np.zeros((n, *obs_shape), np.float32), actions=np.zeros(n, np.int64),
                   true_rewards=np.zeros(n, np.float32), episode_ends=np.zeros(n, bool), frames=frames, start_step=15)


def test_classic_control_frames_are_rendered_and_shrunk():
    import gymnasium as gym

    clips, _, info = _real_clips(CARTPOLE, steps=0)
    assert info["frames"].startswith("render_mode='rgb_array', 600x400 shrunk 3x to 200x133")
    assert clips[0].shape == (1, 133, 200, 3) and clips[0].dtype == np.uint8
    # each pixel is the rounded mean of a 3x3 block of the full render (env 0 reset with seed 0)
    full = gym.make(CARTPOLE, render_mode="rgb_array")
    full.reset(seed=0)
    big = full.render()[:399].astype(np.float64)
    full.close()
    want = np.floor(big.reshape(133, 3, 200, 3, 3).mean(axis=(1, 3)) + 0.5).astype(np.uint8)
    assert np.array_equal(clips[0][0], want)
    assert (want < 200).any() and (want > 250).any()  # a cart and pole on white: a picture, not a blank
    clips, _, info = _real_clips("Pendulum-v1", steps=0)
    assert clips[0].shape == (1, 250, 250, 3) and "shrunk 2x" in info["frames"]


@pytest.mark.browser
@pytest.mark.parametrize("env_id,size", [(CARTPOLE, (200, 133)), ("Pendulum-v1", (250, 250))])
def test_browser_real_classic_control_clips(page, run_dir, env_id, size):
    """Real CartPole / Pendulum frames on the page, like the Enduro screenshot test. The CartPole
    screenshot is docs/labeling-page-cartpole.png with RLHP_WRITE_DOCS=1, else it stays in tmp."""
    (left, right), obs_shape, _ = _real_clips(env_id)
    assert left.shape == (25, size[1], size[0], 3)
    assert not np.array_equal(left, right)
    store = LabelStore(run_dir / "labels.sqlite", env_id=env_id, obs_shape=obs_shape)
    store.add_queries([Query("real-0", _segment(left, obs_shape), _segment(right, obs_shape))], route="human")
    write_status(run_dir / "status.json", env_steps=40_960, total_steps=1_000_000, label_budget=700,
                 labels_answered=175, labels_pending=1, episode_return=41.5, updated_at=time.time() - 2)
    lab = HumanLabeler(store, env_id=env_id, label_budget=700, linger_s=0)
    try:
        page.goto(lab.url)
        wait_until(lambda: labeling(page), what="the pair")
        assert shown_id(page) == "real-0"
        assert not page.is_visible("#clip-left .noframes") and not page.is_visible("#frames-problem")
        dims = page.evaluate("() => ['left', 'right'].map(s => [document.getElementById('canvas-' + s).width,"
                             " document.getElementById('canvas-' + s).height])")
        assert dims == [list(size), list(size)]
        assert_clips_play(page)  # both clips advance in step, their pixels change, scaled up
        # what is drawn is the env's picture: the left canvas's current frame equals one of the clip's frames
        drawn = np.array(page.evaluate("""() => {
          const c = document.getElementById('canvas-left');
          return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data);
        }"""), np.uint8).reshape(size[1], size[0], 4)[..., :3]
        assert min(int(np.abs(drawn.astype(int) - f).max()) for f in left) <= 2
        out = (ROOT / "docs" if os.environ.get("RLHP_WRITE_DOCS") == "1" and env_id == CARTPOLE else run_dir)
        shot = out / f"labeling-page-{env_id.split('-')[0].lower()}.png"
        page.screenshot(path=str(shot))
        assert shot.stat().st_size > 20_000
    finally:
        lab.close()
    assert not page.errors, page.errors


# -- 4. when a run cannot draw its clips ---------------------------------------------------------------
def test_missing_pygame_is_explained(monkeypatch, run_dir):
    monkeypatch.setitem(sys.modules, "pygame", None)  # `import pygame` fails, as without the package
    with pytest.warns(UserWarning, match="cannot render frames"):
        env = make_vec_env(CARTPOLE, 1, keep_frames=True)
    with env:
        assert env.reset(seed=0)[1] is None
        note = env.info["frames"]
    assert note.startswith("unavailable: DependencyNotInstalled") and "gymnasium[classic-control]" in note
    # the learner writes env_info.json next to status.json; the page's state carries the reason
    (run_dir / "env_info.json").write_text(json.dumps({"frames": note}))
    with HumanLabeler(cartpole_store(run_dir), env_id=CARTPOLE, linger_s=0) as lab:
        _, state = api(base_url(lab), "/api/state")
    assert state["frames"]["problem"].startswith("DependencyNotInstalled: pygame is not installed")
    (run_dir / "env_info.json").write_text(json.dumps({"frames": "render_mode='rgb_array'"}))
    with HumanLabeler(cartpole_store(run_dir), env_id=CARTPOLE, linger_s=0) as lab:
        assert api(base_url(lab), "/api/state")[1]["frames"] == {"problem": None}


def test_opengl_failures_get_a_hint():
    hint = GymVecEnv._render_hint(RuntimeError("Cannot initialize a EGL device display. This likely means that "
                                               "your EGL driver does not support the PLATFORM_DEVICE extension"))
    assert "MUJOCO_GL" in hint and "libegl1" in hint and "osmesa" in hint
    assert GymVecEnv._render_hint(ImportError("pygame is not installed")) == ""  # gymnasium's own message says it


def test_mujoco_frames_or_the_reason():
    """MuJoCo renders headless through EGL (MUJOCO_GL=egl when there is no display). Here, without a
    GPU, that is Mesa's software renderer: it works, hundreds of ms per frame, and a warning says so."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env = make_vec_env("Hopper-v5", 1, keep_frames=True)
    with env:
        note = env.info["frames"]
        if note.startswith("unavailable"):
            assert "MUJOCO_GL" in note  # the reason and the way out, shown on the page (see above)
            return
        _, frames = env.reset(seed=0)
        assert frames.shape == (1, 240, 240, 3) and "480x480 shrunk 2x" in note
        assert frames.std() > 5  # a picture, not a blank
        ms = float(re.search(r"(\d+) ms per frame", note).group(1))
        slow = [str(w.message) for w in caught if "ms per env and step" in str(w.message)]
        assert bool(slow) == (ms > 50), (note, slow)
        if slow:
            assert "MUJOCO_GL='egl'" in slow[0] and "--num-envs" in slow[0]


@pytest.mark.browser
def test_browser_frames_problem_is_explained(page, run_dir):
    store = cartpole_store(run_dir)
    store.add_queries(make_queries(1, frames=False), route="human")
    (run_dir / "env_info.json").write_text(json.dumps({"frames": PYGAME_MISSING}))
    write_status(run_dir / "status.json", phase="initial labels")
    lab = HumanLabeler(store, env_id=CARTPOLE, linger_s=0)
    try:
        page.goto(lab.url)
        wait_until(lambda: labeling(page), what="the pair")
        banner = page.inner_text("#frames-problem")
        assert page.is_visible("#frames-problem")
        assert banner.startswith("This run cannot draw its clips") and "pygame is not installed" in banner
        assert 'pip install "gymnasium[classic-control]"' in banner and "rerun the same command" in banner
        assert page.is_visible("#clip-left .noframes")
        assert "answer “Can't tell”" in page.inner_text("#clip-left .noframes small")
        page.keyboard.press("ArrowDown")
        wait_until(lambda: [(a.query_id, a.answer) for a in store.current_answers()] == [("q0", "incomparable")],
                   what="the answer")
        wait_until(lambda: not labeling(page), what="the empty state")
        assert page.is_visible("#frames-problem")  # still said while waiting for the next pair
    finally:
        lab.close()
    assert not page.errors, page.errors


# -- the one-command run ---------------------------------------------------------------------------
@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("env_id", [CARTPOLE, "Pendulum-v1"])
def test_one_command_classic_control_human_run(page, tmp_path, env_id):
    """``python -m rlhp_core.train --env-id CartPole-v1 --labeler human --goal ...``: the learner keeps
    frames, the label store holds them, the page plays them under the run's goal, the run finishes."""
    from tests.helpers.human import FINISHED, Training, empty_title

    run_dir = tmp_path / "run"
    run = Training(run_dir, "--env-id", env_id, "--labeler", "human", "--total-steps", "800", "--goal", GOAL)
    try:
        page.goto(run.url())
        wait_until(lambda: labeling(page), timeout=120, what="the first pair")
        assert page.inner_text("#task") == GOAL and page.is_visible("#task-note")
        assert not page.is_visible("#clip-left .noframes") and not page.is_visible("#frames-problem")
        assert_clips_play(page)
        store = LabelStore(run_dir / "labels.sqlite")
        q = store.query(shown_id(page), with_frames=True)
        assert q.left.frames is not None and q.left.frames.shape[0] == 25 and q.left.frames.shape[-1] == 3
        assert max(q.left.frames.shape[1:3]) <= GymVecEnv.MAX_FRAME_SIDE
        info = json.loads((run_dir / "env_info.json").read_text())
        assert info["frames"].startswith("render_mode='rgb_array'")
        assert json.loads((run_dir / "config.json").read_text())["extra"]["goal"] == GOAL
        for i in range(4):  # the initial batch (TINY: 4 pairs); then RL runs to the end
            wait_until(lambda: labeling(page), timeout=60, what=f"pair {i + 1} of the initial batch")
            page.keyboard.press("ArrowLeft")
            wait_until(lambda n=i + 1: len(store.current_answers()) == n, timeout=30, what=f"answer {i + 1} saved")
        summary = run.finish()
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    wait_until(lambda: FINISHED in empty_title(page), timeout=15, what="the page to say the run finished")
    assert summary["env_steps"] >= 800 and summary["labels"] >= 4
    assert not page.errors, page.errors

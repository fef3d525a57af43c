"""rlhp_core.ale_loop (with ale_env_group and ram_progress): the same observations as the native
backend, Enduro's odometer read from RAM (checked against the digits on the screen), progress,
episode ends, worker processes, errors."""

from __future__ import annotations

import ale_py
import numpy as np
import pytest

from rlhp_core.ale_loop import AleLoopVecEnv
from rlhp_core.atari_preprocessing import BLANK_VALUE
from rlhp_core.envs import make_vec_env
from rlhp_core.ram_progress import (
    ENDURO_ODOMETER_FRACTION,
    ENDURO_ODOMETER_HUNDREDS_TENS,
    ENDURO_ODOMETER_UNITS_TENTHS,
    ENDURO_SPEED,
    ODOMETER_FINE_PER_UNIT,
    enduro_odometer,
)

ENDURO = "ALE/Enduro-v5"
MIN_SPEED_PROGRESS = 12 / ODOMETER_FINE_PER_UNIT
"""One agent step (4 frames) at Enduro's minimum speed 6: the fraction byte grows by speed/2 a frame."""

# The odometer on the raw screen: four digit cells 8 pixels wide from column 64 (thousands,
# hundreds, tens, units; the rolling tenths digit follows at 96), on an orange panel. A digit at
# rest fills rows 165-171 and leaves rows 164 and 172 orange; while it rolls to the next digit,
# parts of both show, so it matches no template. Glyphs copied from frames of the real game.
PANEL_ORANGE = np.array([195, 144, 61], dtype=np.uint8)
DIGIT_GLYPHS = {
    0: ("..####..", ".##..##.", ".##..##.", ".##..##.", ".##..##.", ".##..##.", "..####.."),
    1: ("...##...", "..###...", "...##...", "...##...", "...##...", "...##...", "..####.."),
    2: ("..####..", ".#...##.", ".....##.", "..####..", ".##.....", ".##.....", ".######."),
    3: ("..####..", ".#...##.", "....##..", "....##..", ".....##.", ".#...##.", "..####.."),
    4: ("....##..", "...###..", "..#.##..", ".#..##..", ".######.", "....##..", "....##.."),
    5: (".######.", ".##.....", ".##.....", ".#####..", ".....##.", ".#...##.", ".#####.."),
    6: ("..####..", ".##...#.", ".##.....", ".#####..", ".##..##.", ".##..##.", "..####.."),
    7: (".######.", ".#....#.", ".....##.", "....##..", "...##...", "...##...", "...##..."),
    8: ("..####..", ".##..##.", ".##..##.", "..####..", ".##..##.", ".##..##.", "..####.."),
    9: ("..####..", ".##..##.", ".##..##.", "..#####.", ".....##.", ".#...##.", "..####.."),
}
GLYPH_TO_DIGIT = {np.array([[c == "#" for c in row] for row in rows]).tobytes(): d for d, rows in DIGIT_GLYPHS.items()}


def _panel_digits(frame: np.ndarray) -> list[int | None]:
    """The four integer odometer digits drawn on a raw RGB frame; None for a digit mid-roll."""
    digits = []
    for k in range(4):
        ink = (frame[164:173, 64 + 8 * k : 72 + 8 * k] != PANEL_ORANGE).any(-1)
        at_rest = not ink[0].any() and not ink[-1].any()
        digits.append(GLYPH_TO_DIGIT.get(ink[1:-1].tobytes()) if at_rest else None)
    return digits


def _loop(num_envs: int, **kwargs) -> AleLoopVecEnv:
    """ale_loop in this process (one worker: no process start-up; the worker test covers processes)."""
    return make_vec_env(ENDURO, num_envs, atari_backend="ale_loop", num_threads=1, **kwargs)


def _odometer(env: AleLoopVecEnv) -> np.ndarray:
    """(N,) odometer fine counts read from each in-process env's RAM now."""
    ram = np.zeros((env.num_envs, 128), dtype=np.uint8)
    for j, ale in enumerate(env._group.ales):
        ale.getRAM(ram[j])
    return enduro_odometer(ram)


def _action(env, name: str, n: int) -> np.ndarray:
    return np.full(n, env.action_meanings.index(name))


# --------------------------------------------------------------------------------------------
# Same observations as native
# --------------------------------------------------------------------------------------------


@pytest.mark.skipif(tuple(map(int, ale_py.__version__.split(".")[:2])) < (0, 12),
                    reason="ale_loop ports ale-py 0.12's native preprocessing; older versions' native differs")
@pytest.mark.parametrize(
    "env_id, num_envs, steps, sticky, limit, seed",
    [
        (ENDURO, 3, 90, 0.25, 23, 11),  # sticky actions; episodes cut every 23 steps (autoresets, no-op RNG)
        ("ALE/MsPacman-v5", 2, 440, 0.0, None, 2),  # a game over (env 1, step 422), another game's blanking
    ],
)
def test_bit_identical_to_native(env_id, num_envs, steps, sticky, limit, seed):
    kw = dict(sticky_actions=sticky, max_episode_steps=limit)
    with (
        make_vec_env(env_id, num_envs, atari_backend="ale_loop", num_threads=1, **kw) as loop,
        make_vec_env(env_id, num_envs, atari_backend="native", **kw) as native,
    ):
        obs_l, _ = loop.reset(seed=seed)
        obs_n, _ = native.reset(seed=seed)
        np.testing.assert_array_equal(obs_l, obs_n)
        rng = np.random.default_rng(seed)
        terminated = truncated = 0
        for t in range(steps):
            act = rng.integers(0, loop.action_space.n, num_envs)
            a, b = loop.step(act), native.step(act)
            for field in ("obs", "final_obs", "reward", "terminated", "truncated"):
                np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=f"{field} at step {t}")
            assert a.episodes == b.episodes
            terminated += int(a.terminated.sum())
            truncated += int(a.truncated.sum())
        if limit is not None:
            assert truncated == num_envs * (steps // limit)
        else:
            assert terminated >= 1, "the run should contain a game over"


def test_same_seed_same_observations_rewards_and_progress():
    def run(seed: int):
        with _loop(2, sticky_actions=0.25) as env:
            obs, _ = env.reset(seed=seed)
            out = [[obs], [], []]
            rng = np.random.default_rng(0)
            for _ in range(60):
                b = env.step(rng.integers(0, 9, 2))
                out[0].append(b.obs)
                out[1].append(b.reward)
                out[2].append(b.progress)
            return [np.stack(x) for x in out]

    first, again, other = run(7), run(7), run(8)
    for x, y in zip(first, again):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(first[0], other[0])


# --------------------------------------------------------------------------------------------
# Shapes, info, blanking, backend choice
# --------------------------------------------------------------------------------------------


def test_enduro_defaults_to_ale_loop_with_blanked_obs_and_progress():
    with make_vec_env(ENDURO, 2, keep_frames=True, num_threads=1) as env:
        assert isinstance(env, AleLoopVecEnv) and env.backend == "ale_loop"
        assert env.progress_name == "distance"
        assert env.obs_shape == (4, 84, 84) and env.obs_dtype == np.uint8 and env.action_space.n == 9
        info = env.info
        assert info["backend"].startswith("ale_loop") and info["num_workers"] == 1
        assert info["max_episode_steps"] == 27_000 and info["noop_max"] == 30 and info["sticky_actions"] == 0.0
        assert info["reward_clipping"] is False and info["terminal_on_life_loss"] is False
        for address in ("0xAA", "0xA9", "0xA8", "0xA7", "0x96"):
            assert address in info["progress"]
        obs, frames = env.reset(seed=0)
        assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
        assert frames.shape == (2, 210, 160, 3) and frames.dtype == np.uint8
        assert (obs[:, :3] == 0).all() and obs[:, 3].any()  # zero-padded stack after reset
        mask = env.blank_mask
        assert np.flatnonzero(mask.any(1)).tolist() == list(range(62, 84))  # everything below the road
        panel = frames[:, 161:191, 48:112].copy()
        panel_changed = False
        for _ in range(150):
            b = env.step(_action(env, "FIRE", 2))
            assert b.progress.shape == (2,) and b.progress.dtype == np.float32
            assert (b.obs[:, :, mask] == BLANK_VALUE).all() and (b.final_obs[:, :, mask] == BLANK_VALUE).all()
            panel_changed |= not np.array_equal(b.frames[:, 161:191, 48:112], panel)
        assert panel_changed, "the odometer on the raw frames should move while it stays blanked in obs"


def test_other_games_and_other_backends_have_no_progress():
    with make_vec_env("ALE/Pong-v5", 1, atari_backend="ale_loop") as pong:
        pong.reset(seed=0)
        assert pong.progress_name is None and pong.info["progress"] is None
        assert pong.step(np.array([0])).progress is None
    with make_vec_env("ALE/Pong-v5", 1) as pong:
        assert pong.backend == "native"  # 'auto' picks ale_loop for Enduro only
    with make_vec_env(ENDURO, 1, atari_backend="native") as native:  # asked for explicitly
        native.reset(seed=0)
        assert native.progress_name is None and native.step(np.array([1])).progress is None


# --------------------------------------------------------------------------------------------
# The odometer in RAM against the screen, and progress
# --------------------------------------------------------------------------------------------


def test_odometer_in_ram_is_what_the_panel_shows():
    """Accelerate for 1,000 steps: every odometer digit at rest on the screen is the digit the RAM
    decoding gives, the digits roll only while the tenths roll over (9 -> 0), and progress adds up
    to the odometer's increase."""
    steps = 1000
    with _loop(1, keep_frames=True) as env:
        env.reset(seed=0)
        start = int(_odometer(env)[0])
        fire = _action(env, "FIRE", 1)
        at_rest, units_seen, total_progress = 0, set(), 0.0
        for t in range(steps):
            b = env.step(fire)
            total_progress += float(b.progress[0])
            fine = int(_odometer(env)[0])
            want = [int(c) for c in f"{fine // ODOMETER_FINE_PER_UNIT:04d}"]
            shown = _panel_digits(b.frames[0])
            assert all(s is None or s == w for s, w in zip(shown, want)), (t, shown, want)
            if None in shown:
                assert fine // 256 % 10 in (9, 0), (t, shown, want, fine)  # mid-roll only at a tenths carry
            else:
                at_rest += 1
                units_seen.add(shown[3])
        assert at_rest > 0.8 * steps
        assert units_seen == set(range(10)), "every digit glyph should have been compared"
        assert total_progress == pytest.approx((fine - start) / ODOMETER_FINE_PER_UNIT, rel=1e-5)
        assert total_progress > 15  # units digit wrapped: tens digit compared too


def test_thousands_digit_and_carry():
    """Set the odometer to 999.9 (+ 240/256 of a tenth) and drive: the panel turns to 1000 and the
    RAM decoding follows through the carry into the thousands byte (progress stays small, > 0)."""
    with _loop(1, keep_frames=True) as env:
        env.reset(seed=0)
        fire = _action(env, "FIRE", 1)
        for _ in range(20):
            env.step(fire)
        ale = env._group.ales[0]
        ale.setRAM(ENDURO_ODOMETER_HUNDREDS_TENS, 0x99)
        ale.setRAM(ENDURO_ODOMETER_UNITS_TENTHS, 0x99)
        ale.setRAM(ENDURO_ODOMETER_FRACTION, 0xF0)
        env.step(fire)  # progress of this step includes the jump we made
        readings = []
        for _ in range(40):
            b = env.step(fire)
            assert 0 < b.progress[0] < 0.1
            fine = int(_odometer(env)[0])
            shown = _panel_digits(b.frames[0])
            if None not in shown:
                readings.append((shown, fine // ODOMETER_FINE_PER_UNIT))
        assert readings and all(s == [int(c) for c in f"{v:04d}"] for s, v in readings)
        assert readings[-1][1] >= 1000


def test_braking_rolls_at_minimum_speed_accelerating_drives_further():
    """Enduro's race starts at reset (ALE presses FIRE), so the car never stands still: braking
    or doing nothing keeps the minimum speed 6, 12/2560 of an odometer unit per step."""
    with _loop(3) as env:
        env.reset(seed=3)
        actions = np.array([env.action_meanings.index(a) for a in ("DOWN", "NOOP", "FIRE")])
        progress, speed = [], []
        ram = np.zeros(128, dtype=np.uint8)
        for _ in range(60):
            progress.append(env.step(actions).progress)
            env._group.ales[2].getRAM(ram)
            speed.append(int(ram[ENDURO_SPEED]))
        p = np.stack(progress)
        np.testing.assert_allclose(p[:, :2], MIN_SPEED_PROGRESS, rtol=1e-6)
        assert (p[:, 2] >= MIN_SPEED_PROGRESS * 0.999).all()
        assert p[:10, 2].sum() < p[-10:, 2].sum()  # speeding up
        assert p[:, 2].sum() > 4 * p[:, 0].sum()
        # the fine counter grows by speed/2 a frame: about 2 x speed per 4-frame step
        assert abs(p[-1, 2] * ODOMETER_FINE_PER_UNIT - 2 * speed[-1]) <= 4 and speed[-1] > 6


# --------------------------------------------------------------------------------------------
# Episode ends
# --------------------------------------------------------------------------------------------


def test_episode_end_same_step_final_obs_and_progress():
    steps = 12
    actions = np.array([1, 4])  # FIRE, DOWN
    with _loop(2, max_episode_steps=steps) as env, _loop(2) as endless:
        obs, _ = env.reset(seed=0)
        endless.reset(seed=0)
        for t in range(steps):
            prev = obs
            b = env.step(actions)
            e = endless.step(actions)
            obs = b.obs
            if t < steps - 1:
                assert not b.done.any() and b.episodes == []
                np.testing.assert_array_equal(b.obs, e.obs)
            np.testing.assert_array_equal(b.progress, e.progress)  # the last step's too: up to the end
        assert b.truncated.all() and not b.terminated.any()
        np.testing.assert_array_equal(b.final_obs[:, :3], prev[:, 1:])
        # native's quirk, kept: the step cut by the limit pools its 3rd frame with the previous pooled one
        assert (b.final_obs[:, -1] >= prev[:, -1]).all()
        assert (b.obs[:, :3] == 0).all() and b.obs[:, 3].any()  # the new episode's first obs
        assert [(i, n) for i, _, n in b.episodes] == [(0, steps), (1, steps)]
        assert (b.progress > 0).all()
        assert (_odometer(env) < 256).all()  # the new episode's odometer starts near 0 ...
        nxt = env.step(actions)
        np.testing.assert_allclose(nxt.progress, MIN_SPEED_PROGRESS, rtol=1e-6)  # ... and counts from there
        assert nxt.episodes == []


def test_worker_processes_match_in_process_and_frames_match_rgb_backend():
    kw = dict(max_episode_steps=15, sticky_actions=0.25, keep_frames=True)
    with (
        make_vec_env(ENDURO, 3, atari_backend="ale_loop", num_threads=2, **kw) as workers,
        make_vec_env(ENDURO, 3, atari_backend="ale_loop", num_threads=1, **kw) as local,
        make_vec_env(ENDURO, 3, atari_backend="rgb", **kw) as rgb,
    ):
        assert workers.info["num_workers"] == 2 and all(p.is_alive() for p in workers._procs)
        procs = list(workers._procs)
        for env in (workers, local):
            env.reset(seed=4)
        _, frames = rgb.reset(seed=4)
        rng = np.random.default_rng(1)
        for t in range(40):
            act = rng.integers(0, 9, 3)
            a, b, c = workers.step(act), local.step(act), rgb.step(act)
            for field in ("obs", "final_obs", "reward", "terminated", "truncated", "progress", "frames"):
                np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=f"{field} at step {t}")
            assert a.episodes == b.episodes
            np.testing.assert_array_equal(a.frames, c.frames)  # the max-pooled RGB screen, unblanked
    assert not any(p.is_alive() for p in procs)


@pytest.mark.parametrize("keep_frames", [False, True])
def test_saved_state_continues_the_same_episodes_bit_for_bit(keep_frames):
    """get_state mid-episode (sticky actions, episode ends, no-op starts to come), then a new env
    with another worker split continues exactly as the saving env does."""
    kw = dict(max_episode_steps=30, sticky_actions=0.25, keep_frames=keep_frames)
    rng = np.random.default_rng(3)
    with make_vec_env(ENDURO, 3, atari_backend="ale_loop", num_threads=2, **kw) as env:
        assert env.get_state() is None  # nothing to save before the first reset
        env.reset(seed=11)
        for _ in range(45):
            env.step(rng.integers(0, 9, 3))
        state = env.get_state()
        actions = rng.integers(0, 9, (70, 3))
        want = [env.step(a) for a in actions]
    with make_vec_env(ENDURO, 3, atari_backend="ale_loop", num_threads=1, **kw) as resumed:
        resumed.set_state(state)
        for t, a in enumerate(actions):
            got = resumed.step(a)
            for field in ("obs", "final_obs", "reward", "terminated", "truncated", "progress", "frames"):
                np.testing.assert_array_equal(getattr(got, field), getattr(want[t], field), err_msg=f"{field} at {t}")
            assert got.episodes == want[t].episodes
    assert any(w.episodes for w in want)  # the episode ends and restarts are part of what matched
    with make_vec_env(ENDURO, 2, atari_backend="ale_loop", num_threads=1, **kw) as other:
        with pytest.raises(ValueError, match="holds 3 envs, this run has 2"):
            other.set_state(state)


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


def test_errors():
    env = _loop(2)
    with pytest.raises(RuntimeError, match=r"call reset\(seed\) before step"):
        env.step(np.array([0, 0]))
    for bad in (-1, 2**31, 1.5, True):
        with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*31 - num_envs\]"):
            env.reset(seed=bad)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"actions must be in \[0, 9\)"):
        env.step(np.array([0, 9]))
    env.close()
    with pytest.raises(RuntimeError, match="is closed"):
        env.step(np.array([0, 0]))
    common = dict(sticky_actions=0.0, frameskip=4, max_episode_steps=None, keep_frames=False, blank_regions=())
    with pytest.raises(ValueError, match=r"num_workers must be an integer in \[1, num_envs=2\], got 3"):
        AleLoopVecEnv(ENDURO, "enduro", 2, num_workers=3, **common)
    with pytest.raises(ValueError, match="no ALE ROM named 'no_such_game'"), pytest.warns(UserWarning):
        AleLoopVecEnv("x", "no_such_game", 1, num_workers=1, **common)
    # in a worker process, the same failure comes back with the worker's traceback
    with pytest.raises(RuntimeError, match=r"(?s)ale_loop\[0:1\] failed.*no ALE ROM named 'no_such_game'"):
        AleLoopVecEnv("x", "no_such_game", 2, num_workers=2, **common)

"""Env stepping speed: ale-py's raw C++ vector env vs our make_vec_env, Enduro, 16 envs.

Compare the two rows of the table (same run, same machine) rather than absolute numbers:
``pytest tests/benchmarks/test_bench_envs.py --benchmark-enable`` (add ``--benchmark-autosave`` to keep
them). Under the default ``--benchmark-disable`` each runs once, quickly. Rows: the raw
emulator (ale-py's own gray 84x84 preprocessing), make_vec_env's native backend (what
training runs, but for Enduro, which defaults to ale_loop for its RAM: see rlhp_core/ale_loop.py
for that backend's speed) and its rgb backend (frames: human-labelled runs). The
make_vec_env row's ``extra_info`` holds all speeds measured back to back in that test and the
ratios ("loop at X x raw emulator"), in steps/s and in CPU microseconds per env step (the
steadier number when other processes share the cores).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from rlhp_core.atari_vec_env import _default_threads
from rlhp_core.envs import make_vec_env

torch.set_num_threads(1)

pytestmark = pytest.mark.slow  # 16 Enduro envs built and stepped three ways: 27 s on a busy 2-core box

NUM_ENVS = 16
STEPS = 50
ENDURO = "ALE/Enduro-v5"


def _raw_env(rgb: bool = False):
    """The emulator alone, with ale-py's own preprocessing (gray 84x84 stack 4), or the RGB screens we use."""
    from ale_py.vector_env import AtariVectorEnv
    from gymnasium.vector import AutoresetMode

    kw = dict(grayscale=False, img_height=210, img_width=160, stack_num=1) if rgb else {}
    env = AtariVectorEnv(
        "enduro", NUM_ENVS, num_threads=_default_threads(NUM_ENVS), autoreset_mode=AutoresetMode.SAME_STEP,
        reward_clipping=False, use_fire_reset=False, repeat_action_probability=0.0, **kw,
    )
    env.reset()  # unseeded: a seeded reset reloads every ROM (~1.5 s for 16 envs)
    return env


def _actions(n: int = STEPS) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 9, NUM_ENVS) for _ in range(n)]


def _run(env, actions) -> dict:
    """Step ``env`` through ``actions``; what came back (first and last observations, last frames) for the checks."""
    first = last = None
    for a in actions:
        out = last = env.step(a)
        first = first if first is not None else np.array(_obs(out))
    return {"steps": len(actions), "first": first, "last": np.array(_obs(last)),
            "frames": None if getattr(last, "frames", None) is None else np.array(last.frames)}


def _obs(out) -> np.ndarray:
    return out.obs if hasattr(out, "obs") else out[0]  # make_vec_env's StepBatch, or gymnasium's tuple


def _check_stepped(res: dict, frames: bool = False) -> None:
    """The emulators ran: every step taken, (N, 4, 84, 84) uint8 stacks (and with ``frames`` the
    (N, 210, 160, 3) RGB screens), and the screens changed from the first step to the last."""
    assert res["steps"] == STEPS
    assert res["last"].shape == (NUM_ENVS, 4, 84, 84) and res["last"].dtype == np.uint8, res["last"].shape
    assert not np.array_equal(res["first"], res["last"]), "the observations never changed"
    if frames:
        assert res["frames"] is not None and res["frames"].shape == (NUM_ENVS, 210, 160, 3), res["frames"]
        assert res["frames"].dtype == np.uint8 and res["frames"].std() > 0


def _speed(env, actions) -> tuple[float, float]:
    """(wall-clock steps/s, CPU microseconds per env step, all threads of this process)."""
    t0, c0 = time.perf_counter(), time.process_time()
    _run(env, actions)
    n = len(actions) * NUM_ENVS
    return n / (time.perf_counter() - t0), (time.process_time() - c0) / n * 1e6


def _enabled(config) -> bool:
    return bool(config.getoption("benchmark_enable", False) or not config.getoption("benchmark_disable", False))


@pytest.fixture(scope="module")
def envs(request):
    # Making 16 ALE envs takes ~1.5 s and a seeded reset as much again, so the default
    # (benchmarks disabled) run builds only the two that give the headline ratio.
    out = {"raw": _raw_env(), "rlhp": make_vec_env(ENDURO, NUM_ENVS, atari_backend="native")}
    out["rlhp"].reset(seed=0)
    if _enabled(request.config):
        out["raw_rgb"] = _raw_env(rgb=True)  # the RGB screens the rgb backend runs on
        out["rlhp_frames"] = make_vec_env(ENDURO, NUM_ENVS, keep_frames=True, atari_backend="rgb")
        out["rlhp_frames"].reset(seed=0)
    yield out
    for e in out.values():
        e.close()


def test_bench_raw_atari_vector_env(benchmark, envs):
    actions = _actions()
    res = benchmark.pedantic(_run, args=(envs["raw"], actions), rounds=3, iterations=1, warmup_rounds=0)
    benchmark.extra_info["env_steps_per_round"] = STEPS * NUM_ENVS
    _check_stepped(res)


def test_bench_rlhp_make_vec_env_keep_frames(benchmark, envs):
    if "rlhp_frames" not in envs:
        pytest.skip("built only with --benchmark-enable (test_envs.py covers the rgb backend)")
    actions = _actions()
    res = benchmark.pedantic(_run, args=(envs["rlhp_frames"], actions), rounds=3, iterations=1, warmup_rounds=0)
    benchmark.extra_info["env_steps_per_round"] = STEPS * NUM_ENVS
    _check_stepped(res, frames=True)


def test_bench_rlhp_make_vec_env(benchmark, envs):
    actions = _actions()
    res = benchmark.pedantic(_run, args=(envs["rlhp"], actions), rounds=3, iterations=1, warmup_rounds=0)
    _check_stepped(res)
    # back-to-back measurement in this very test, best of 2 alternations, so the ratio is fair;
    # CPU time per step is the steadier number when other processes share the cores
    speeds = {k: 0.0 for k in envs}
    cpu_us = {k: float("inf") for k in envs}
    for _ in range(2):
        for name, env in envs.items():
            sps, us = _speed(env, actions)
            speeds[name] = max(speeds[name], sps)
            cpu_us[name] = min(cpu_us[name], us)
    ratio = speeds["rlhp"] / speeds["raw"]
    cpu_ratio = cpu_us["raw"] / cpu_us["rlhp"]
    frames = "rlhp_frames" in envs
    frames_ratio = speeds["rlhp_frames"] / speeds["raw"] if frames else None
    benchmark.extra_info.update(
        env_steps_per_round=STEPS * NUM_ENVS,
        raw_steps_per_s=round(speeds["raw"]),
        raw_rgb_steps_per_s=round(speeds["raw_rgb"]) if "raw_rgb" in speeds else None,
        rlhp_steps_per_s=round(speeds["rlhp"]),
        rlhp_over_raw=round(ratio, 3),
        rlhp_keep_frames_steps_per_s=round(speeds["rlhp_frames"]) if frames else None,
        rlhp_keep_frames_over_raw=round(frames_ratio, 3) if frames else None,
        rlhp_keep_frames_cpu_us_per_step=round(cpu_us["rlhp_frames"], 1) if frames else None,
        raw_cpu_us_per_step=round(cpu_us["raw"], 1),
        rlhp_cpu_us_per_step=round(cpu_us["rlhp"], 1),
        rlhp_over_raw_by_cpu=round(cpu_ratio, 3),
    )
    msg = (
        f"\nEnduro x{NUM_ENVS}: raw AtariVectorEnv {speeds['raw']:.0f} steps/s, make_vec_env "
        f"{speeds['rlhp']:.0f} (loop at {ratio:.2f}x raw emulator); CPU per env step: raw "
        f"{cpu_us['raw']:.0f} us, make_vec_env {cpu_us['rlhp']:.0f} us ({cpu_ratio:.2f}x)"
    )
    if frames:
        msg += (
            f"\n  with frames (rgb backend): {speeds['rlhp_frames']:.0f} steps/s ({frames_ratio:.2f}x), "
            f"{cpu_us['rlhp_frames']:.0f} us/step; raw RGB emulator {speeds['raw_rgb']:.0f} steps/s"
        )
    print(msg)
    # loose guard against a pathological slowdown (e.g. BLAS threads fighting); not a speed target
    assert cpu_ratio > 0.25, (speeds, cpu_us)
    if frames:
        assert cpu_us["raw"] / cpu_us["rlhp_frames"] > 0.25, (speeds, cpu_us)

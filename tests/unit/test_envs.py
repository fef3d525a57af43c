"""rlhp_core.envs and the backends it builds: shapes, seeding, score blanking, SAME_STEP episode ends, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlhp_core.atari_preprocessing import BLANK_VALUE, SCORE_REGIONS, _AtariPreprocessor
from rlhp_core.envs import episode_step_limit, make_vec_env
from rlhp_core.vec_env import StepBatch

torch.set_num_threads(1)

ENDURO = "ALE/Enduro-v5"
FIRE = 1  # Enduro's accelerate


def _random_actions(env, steps: int, seed: int = 0) -> list[np.ndarray]:
    space = env.action_space
    rng = np.random.default_rng(seed)
    if hasattr(space, "n"):
        return [rng.integers(0, space.n, env.num_envs) for _ in range(steps)]
    return [rng.uniform(space.low, space.high, (env.num_envs, *space.shape)).astype(np.float32) for _ in range(steps)]


# --------------------------------------------------------------------------------------------
# Atari
# --------------------------------------------------------------------------------------------


def test_enduro_shapes_dtypes_and_info():
    with make_vec_env(ENDURO, 2, keep_frames=True) as env:
        assert env.is_atari
        assert env.obs_shape == (4, 84, 84) and env.obs_dtype == np.uint8
        assert env.action_space.n == 9
        obs, frames = env.reset(seed=0)
        assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
        assert frames.shape == (2, 210, 160, 3) and frames.dtype == np.uint8
        # stack is zero-padded after reset: only the newest frame is filled
        assert (obs[:, :3] == 0).all() and obs[:, 3].any()
        b = env.step(np.array([FIRE, 0]))
        assert isinstance(b, StepBatch)
        assert b.obs.shape == (2, 4, 84, 84) and b.obs.dtype == np.uint8
        assert b.reward.shape == (2,) and b.reward.dtype == np.float32
        assert b.terminated.dtype == bool and b.truncated.dtype == bool
        assert b.final_obs.shape == b.obs.shape and (b.final_obs == b.obs).all()
        assert b.frames.shape == (2, 210, 160, 3) and b.frames.dtype == np.uint8
        assert b.episodes == []
        np.testing.assert_array_equal(b.obs[:, 2], obs[:, 3])  # the stack shifts by one
        info = env.info
        assert info["env_id"] == ENDURO and info["frameskip"] == 4 and info["sticky_actions"] == 0.0
        assert info["max_episode_steps"] == 27_000 and info["noop_max"] == 30
        assert info["terminal_on_life_loss"] is False and info["reward_clipping"] is False
        for key in ("ale_py", "gymnasium", "blank_regions", "blank_source"):
            assert info[key]


def test_frames_are_the_source_of_the_newest_obs_channel():
    """rgb backend: frames[i] (raw, unblanked) preprocessed is exactly obs[i, -1], and obs doesn't
    depend on keep_frames; the native backend (default without frames) gives nearly the same obs."""
    with (
        make_vec_env(ENDURO, 2, keep_frames=True, atari_backend="rgb") as a,
        make_vec_env(ENDURO, 2, atari_backend="rgb") as b,
        make_vec_env(ENDURO, 2, atari_backend="native") as c,
    ):
        assert (a.backend, b.backend, c.backend) == ("rgb", "rgb", "native")
        oa, fa = a.reset(seed=5)
        ob, fb = b.reset(seed=5)
        oc, fc = c.reset(seed=5)
        assert fb is None and fc is None
        np.testing.assert_array_equal(oa, ob)
        diffs = []
        for act in _random_actions(a, 30):
            sa, sb, sc = a.step(act), b.step(act), c.step(act)
            np.testing.assert_array_equal(sa.obs, sb.obs)
            np.testing.assert_array_equal(sa.reward, sc.reward)
            assert sb.frames is None and sc.frames is None
            np.testing.assert_array_equal(a._prep(sa.frames), sa.obs[:, -1])
            diffs.append(np.abs(sa.obs.astype(int) - sc.obs))
        d = np.stack(diffs)
        assert d.mean() < 0.1 and (d > 1).mean() < 0.01  # gray-of-max vs max-of-gray, rounding


def test_resize_matches_ale_native_inter_area():
    """Our gray + 84x84 area resize vs ALE's own (palette gray + cv2 INTER_AREA), no maxpool: within 1 level."""
    from ale_py.vector_env import AtariVectorEnv
    from gymnasium.vector import AutoresetMode

    common = dict(num_threads=1, autoreset_mode=AutoresetMode.SAME_STEP, reward_clipping=False, maxpool=False, stack_num=1)
    rgb_env = AtariVectorEnv("enduro", 2, grayscale=False, img_height=210, img_width=160, **common)
    gray_env = AtariVectorEnv("enduro", 2, **common)
    prep = _AtariPreprocessor(np.zeros((84, 84), dtype=bool))
    try:
        rgb_env.reset(seed=1)
        gray_env.reset(seed=1)
        rng = np.random.default_rng(0)
        diffs = []
        for _ in range(40):
            act = rng.integers(0, 9, 2)
            rgb, *_ = rgb_env.step(act)
            gray, *_ = gray_env.step(act)
            diffs.append(np.abs(prep(np.ascontiguousarray(rgb[:, 0])).astype(int) - gray[:, 0]))
        d = np.stack(diffs)
        assert d.max() <= 1, d.max()
        assert (d > 0).mean() < 0.05
    finally:
        rgb_env.close()
        gray_env.close()


@pytest.mark.parametrize("sticky, backend", [(0.0, "native"), (0.25, "native"), (0.0, "rgb")])
def test_atari_same_seed_same_observations(sticky, backend):
    def run(seed):
        with make_vec_env(ENDURO, 2, sticky_actions=sticky, atari_backend=backend) as env:
            obs, _ = env.reset(seed=seed)
            out, rewards = [obs], []
            for act in _random_actions(env, 60):
                b = env.step(act)
                out.append(b.obs)
                rewards.append(b.reward)
            return np.stack(out), np.stack(rewards)

    o1, r1 = run(7)
    o2, r2 = run(7)
    np.testing.assert_array_equal(o1, o2)
    np.testing.assert_array_equal(r1, r2)
    o3, _ = run(8)
    assert not np.array_equal(o1, o3)


def test_enduro_blanked_pixels_constant_while_raw_score_changes():
    """Accelerate for a while: the raw odometer and cars-left counter change, their obs pixels never do."""
    with (
        make_vec_env(ENDURO, 1, keep_frames=True, atari_backend="rgb") as env,
        make_vec_env(ENDURO, 1, atari_backend="native") as native,
    ):
        assert native.backend == "native"
        np.testing.assert_array_equal(native.blank_mask, env.blank_mask)
        native.reset(seed=0)
        mask = env.blank_mask
        # everything below the road (raw rows >= 155 -> obs rows >= 62), nothing above it
        assert np.flatnonzero(mask.any(1)).tolist() == list(range(62, 84))
        assert mask[62:].all()
        obs, frames = env.reset(seed=0)
        odometer = frames[0, 161:176, 48:112].copy()
        counter = frames[0, 176:191, 48:112].copy()
        odometer_changed = counter_changed = False
        total = 0.0
        visible_changed = False
        first_visible = obs[0, -1, :62].copy()
        for _ in range(400):
            b = env.step(np.array([FIRE]))
            n = native.step(np.array([FIRE]))
            total += float(b.reward[0])
            assert (b.obs[:, :, mask] == BLANK_VALUE).all()
            assert (n.obs[:, :, mask] == BLANK_VALUE).all()
            assert (b.final_obs[:, :, mask] == BLANK_VALUE).all()
            odometer_changed |= not np.array_equal(b.frames[0, 161:176, 48:112], odometer)
            counter_changed |= not np.array_equal(b.frames[0, 176:191, 48:112], counter)
            visible_changed |= not np.array_equal(b.obs[0, -1, :62], first_visible)
        assert total > 0, "accelerating should pass some cars"
        assert odometer_changed and counter_changed
        assert visible_changed


def test_blank_table_regions_are_valid_and_custom_regions_apply():
    for game, regions in SCORE_REGIONS.items():
        for r0, r1, c0, c1 in regions:
            assert 0 <= r0 < r1 <= 210 and 0 <= c0 < c1 <= 160, game
    with make_vec_env("ALE/Pong-v5", 1, blank_regions=[(0, 50, 0, 160)]) as env:
        obs, _ = env.reset(seed=0)
        assert env.info["blank_source"] == "given by caller"
        assert (obs[:, :, :20] == BLANK_VALUE).all()  # rows 0..19 of 84 cover raw 0..50


def test_unknown_game_is_not_blanked_and_warns():
    with pytest.warns(UserWarning, match="no score-blanking regions"):
        env = make_vec_env("ALE/Pitfall-v5", 1)
    with env:
        assert env.info["blank_source"].startswith("none")
        assert not env.blank_mask.any()


@pytest.mark.parametrize("backend", ["native", "rgb"])
def test_atari_episode_end_same_step(backend):
    steps = 10
    with make_vec_env(ENDURO, 2, max_episode_steps=steps, atari_backend=backend) as env:
        assert env.info["max_episode_steps"] == steps
        obs, _ = env.reset(seed=0)
        returns = np.zeros(2)
        for t, act in enumerate(_random_actions(env, steps)):
            prev = obs
            b = env.step(act)
            obs = b.obs
            returns += b.reward
            if t < steps - 1:
                assert not b.truncated.any() and b.episodes == []
        assert b.truncated.all() and not b.terminated.any()
        # final_obs: the old episode continued; obs: the new one, zero-padded stack
        np.testing.assert_array_equal(b.final_obs[:, :3], prev[:, 1:])
        assert not np.array_equal(b.final_obs, b.obs)
        assert (b.obs[:, :3] == 0).all() and b.obs[:, 3].any()
        assert sorted(e[0] for e in b.episodes) == [0, 1]
        for i, ret, length in b.episodes:
            assert length == steps and ret == pytest.approx(returns[i])
        # the next episode counts from zero again
        for act in _random_actions(env, steps, seed=1):
            b = env.step(act)
        assert [e[2] for e in b.episodes] == [steps, steps]


@pytest.mark.parametrize("backend", ["native", "rgb"])
def test_atari_only_the_ended_env_is_reset(backend):
    """One env ends, the other goes on: bookkeeping touches only the ended one (faked end on a real step)."""
    with make_vec_env(ENDURO, 2, atari_backend=backend) as env:
        env.reset(seed=0)
        for act in _random_actions(env, 5):
            before = env.step(act)
        real_step = env._env.step

        def step_with_env0_ending(actions):
            obs, reward, terminated, truncated, info = real_step(actions)
            terminated = terminated.copy()
            terminated[0] = True
            info = dict(info, final_obs=np.full_like(obs, 200))
            return obs, reward + np.array([3, 0], dtype=reward.dtype), terminated, truncated, info

        env._env.step = step_with_env0_ending
        b = env.step(np.array([0, 0]))
        env._env.step = real_step
        assert b.terminated.tolist() == [True, False]
        assert [(i, n) for i, _, n in b.episodes] == [(0, 6)] and b.episodes[0][1] >= 3
        np.testing.assert_array_equal(b.final_obs[1], b.obs[1])
        assert not np.array_equal(b.final_obs[0], b.obs[0])
        # the faked final screen (all 200) lands in the newest channel, blanked like any obs
        assert (b.final_obs[0, -1][~env.blank_mask] == 200).all()
        assert (b.final_obs[0][:, env.blank_mask] == BLANK_VALUE).all()
        if backend == "rgb":
            np.testing.assert_array_equal(b.final_obs[0, :3], before.obs[0, 1:])
            assert (b.obs[0, :3] == 0).all()
            np.testing.assert_array_equal(b.obs[1, :3], before.obs[1, 1:])
        nxt = env.step(np.array([0, 0]))
        assert nxt.episodes == []


def test_episode_step_limit():
    assert episode_step_limit(ENDURO) == 27_000
    assert episode_step_limit(ENDURO, frameskip=2) == 54_000
    assert episode_step_limit(ENDURO, 100) == 100
    assert episode_step_limit("CartPole-v1") == 500
    assert episode_step_limit("Pendulum-v1") == 200


# --------------------------------------------------------------------------------------------
# Vector-observation envs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "env_id, obs_shape, discrete",
    [("CartPole-v1", (4,), True), ("Pendulum-v1", (3,), False), ("Hopper-v5", (11,), False)],
)
def test_vector_env_shapes(env_id, obs_shape, discrete):
    with make_vec_env(env_id, 3) as env:
        assert not env.is_atari
        assert env.obs_shape == obs_shape and env.obs_dtype == np.float32
        obs, frames = env.reset(seed=0)
        assert obs.shape == (3, *obs_shape) and obs.dtype == np.float32 and frames is None
        if discrete:
            act = np.array([0, 1, 0])
        else:
            act = np.full((3, *env.action_space.shape), 100.0, dtype=np.float32)  # clipped to bounds
        b = env.step(act)
        assert b.obs.shape == (3, *obs_shape) and b.obs.dtype == np.float32
        assert b.final_obs.shape == b.obs.shape
        assert b.reward.shape == (3,) and b.reward.dtype == np.float32
        assert b.terminated.shape == (3,) and b.frames is None


def test_vector_env_seed_reproducible():
    def run(seed):
        with make_vec_env("Pendulum-v1", 2) as env:
            obs, _ = env.reset(seed=seed)
            out = [obs]
            for act in _random_actions(env, 20):
                out.append(env.step(act).obs)
            return np.stack(out)

    np.testing.assert_array_equal(run(3), run(3))
    assert not np.array_equal(run(3), run(4))


def test_vector_env_episode_end_returns_match_rewards():
    with make_vec_env("Pendulum-v1", 2, max_episode_steps=7) as env:
        env.reset(seed=0)
        returns = np.zeros(2)
        for t, act in enumerate(_random_actions(env, 7)):
            b = env.step(act)
            returns += b.reward
        assert b.truncated.all()
        assert not np.array_equal(b.final_obs, b.obs)
        assert [(i, n) for i, _, n in b.episodes] == [(0, 7), (1, 7)]
        for i, ret, _ in b.episodes:
            assert ret == pytest.approx(returns[i], rel=1e-5)
    # natural termination: CartPole with a constant push falls within ~10 steps
    with make_vec_env("CartPole-v1", 1) as env:
        env.reset(seed=0)
        for n in range(1, 60):
            b = env.step(np.array([1]))
            if b.terminated.any():
                break
        assert b.terminated[0] and b.episodes == [(0, float(n), n)]
        assert abs(b.final_obs[0, 2]) > 0.2  # the pole angle at the end, not the new episode's


def test_mujoco_frames():
    with make_vec_env("Hopper-v5", 2, keep_frames=True) as env:
        if env.info["frames"].startswith("unavailable"):
            pytest.skip(f"MuJoCo cannot render here: {env.info['frames']}")
        obs, frames = env.reset(seed=0)
        assert frames.ndim == 4 and frames.shape[0] == 2 and frames.shape[-1] == 3 and frames.dtype == np.uint8
        b = env.step(np.zeros((2, 3), dtype=np.float32))
        assert b.frames.shape == frames.shape


def test_classic_control_frames_need_pygame():
    try:
        import pygame  # noqa: F401
    except ImportError:
        with pytest.warns(UserWarning, match="cannot render frames"):
            env = make_vec_env("CartPole-v1", 1, keep_frames=True)
        with env:
            obs, frames = env.reset(seed=0)
            assert frames is None and env.step(np.array([0])).frames is None
    else:
        with make_vec_env("CartPole-v1", 1, keep_frames=True) as env:
            _, frames = env.reset(seed=0)
            assert frames.shape[0] == 1 and frames.shape[-1] == 3


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


def test_unknown_env_id():
    with pytest.raises(ValueError, match=r"unknown env id 'NoSuchEnv-v0'.*ALE/<Game>-v5"):
        make_vec_env("NoSuchEnv-v0", 1)
    with pytest.raises(ValueError, match=r"unknown env id 'ALE/Endurro-v5'.*Did you mean.*ALE/Enduro-v5"):
        make_vec_env("ALE/Endurro-v5", 1)
    with pytest.raises(ValueError, match="unknown env id"):
        episode_step_limit("NoSuchEnv-v0")


def test_atari_id_forms():
    with make_vec_env("EnduroNoFrameskip-v4", 1) as env:  # the paper's id: same treatment as ALE/Enduro-v5
        assert env.is_atari and env.info["frameskip"] == 4 and env.info["sticky_actions"] == 0.0
    with pytest.raises(ValueError, match=r"'Enduro-v4' is not supported.*ALE/<Game>-v5"):
        make_vec_env("Enduro-v4", 1)
    with pytest.raises(ValueError, match="not supported"):
        make_vec_env("EnduroNoFrameskip-v0", 1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_envs=0), "num_envs must be an integer >= 1, got 0"),
        (dict(num_envs=2.5), "num_envs must be an integer"),
        (dict(num_envs=1, sticky_actions=1.5), r"sticky_actions must be in \[0, 1\].*1.5"),
        (dict(num_envs=1, sticky_actions=-0.1), r"sticky_actions must be in \[0, 1\]"),
        (dict(num_envs=1, frameskip=0), "frameskip must be an integer >= 1"),
        (dict(num_envs=1, max_episode_steps=0), "max_episode_steps must be an integer >= 1"),
        (dict(num_envs=1, blank_regions=[(0, 300, 0, 10)]), "blank region"),
        (dict(num_envs=1, atari_backend="fast"), "atari_backend must be one of"),
        (dict(num_envs=1, atari_backend="native", keep_frames=True), "gives no RGB frames"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_vec_env(ENDURO, **kwargs)


def test_atari_only_arguments_rejected_elsewhere():
    with pytest.raises(ValueError, match="sticky_actions applies to Atari envs only"):
        make_vec_env("CartPole-v1", 1, sticky_actions=0.25)


def test_bad_actions():
    with make_vec_env(ENDURO, 2) as env:
        env.reset(seed=0)
        with pytest.raises(ValueError, match=r"actions must have shape \(2,\)"):
            env.step(np.array([0, 1, 2]))
        with pytest.raises(ValueError, match=r"actions must be in \[0, 9\)"):
            env.step(np.array([0, 9]))
    with make_vec_env("Pendulum-v1", 2) as env:
        env.reset(seed=0)
        with pytest.raises(ValueError, match=r"actions must have shape \(2, 1\)"):
            env.step(np.zeros(2, dtype=np.float32))


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
@pytest.mark.parametrize("keep_frames", [False, True])
def test_vector_env_state_round_trip_continues_exactly(env_id, keep_frames):
    """get_state/set_state (what an exact resume saves): a fresh env given the state continues with the
    same observations and frames as the original (pygame's window is not part of the state)."""
    from rlhp_core.envs import make_vec_env

    def act():
        return np.zeros(2, dtype=np.int64) if env_id.startswith("CartPole") else np.zeros((2, 1), np.float32)

    a = make_vec_env(env_id, 2, keep_frames=keep_frames)
    a.reset(seed=0)
    for _ in range(5):
        a.step(act())
    state = a.get_state()
    assert state is not None
    b = make_vec_env(env_id, 2, keep_frames=keep_frames)
    b.reset(seed=123)
    b.set_state(state)
    for _ in range(3):
        sa, sb = a.step(act()), b.step(act())
        np.testing.assert_array_equal(sa.obs, sb.obs)
        if keep_frames and sa.frames is not None:
            np.testing.assert_array_equal(sa.frames, sb.frames)
    a.close()
    b.close()

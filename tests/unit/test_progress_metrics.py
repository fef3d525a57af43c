"""Issue 9's parts that need no emulator: episode counters from the reward stream, the
normalisation rule, the learning-rate horizon, and the progress teacher's ordering."""

from __future__ import annotations

import math

import numpy as np
import pytest

from oracles.teacher import parse_teacher
from rlhp_core.config import ATARI_LR_HORIZON, TrainConfig, resolve
from rlhp_core.episode_stats import EpisodeStats
from rlhp_core.reward.normalization import MIN_DECISIVE, binomial_tail, member_weights, std_floor
from rlhp_core.segments import Query, Segment


# -- episode counters ------------------------------------------------------------------------------
def test_counters_see_passes_that_the_floored_score_hides():
    """Enduro-like stream: env 0 passes 3 cars and is passed back 3 times (score 0), env 1 never
    moves; both episodes end at step 8. The return says 0 for both; the counters tell them apart."""
    stats = EpisodeStats(2)
    rewards = [(1, 0), (1, 0), (0, 0), (-1, 0), (1, 0), (-1, 0), (0, 0), (-1, 0)]
    progress = [(2.0, 0.0)] * 8
    for t, r in enumerate(rewards):
        stats.step(np.array(r, dtype=np.float32), np.array([t == 7, t == 7]), np.array(progress[t]))
    w = stats.pop_window()
    assert w["charts/episodic_return"] == 0.0
    assert w["charts/episodic_gained"] == pytest.approx(1.5)  # mean of 3 and 0
    assert w["charts/episodic_lost"] == pytest.approx(1.5)
    assert w["charts/episodic_progress"] == pytest.approx(8.0)  # mean of 16 and 0
    assert w["charts/episodic_length"] == 8
    assert w["charts/gained_per_1k_steps"] == pytest.approx(1000 * 3 / 16)
    assert w["charts/progress_per_step"] == pytest.approx(1.0)
    assert w["charts/cumulative_gained"] == 3.0 and w["charts/cumulative_true_reward"] == 0.0
    # the next window starts empty, the cumulative counters go on, and a new episode starts at 0
    stats.step(np.array([1.0, 1.0]), np.array([True, False]), np.array([0.0, 0.0]))
    w = stats.pop_window()
    assert w["charts/episodic_return"] == 1.0 and w["charts/episodic_gained"] == 1.0
    assert w["charts/cumulative_gained"] == 5.0


def test_counters_survive_a_checkpoint_round_trip():
    a = EpisodeStats(1)
    for r in (1.0, -1.0, 1.0):
        a.step(np.array([r]), np.array([True]))
    b = EpisodeStats(1)
    b.load_state_dict(a.state_dict())
    assert (b.cumulative_reward, b.cumulative_gained, b.count, list(b.recent)) == (1.0, 2.0, 3, [1.0, -1.0, 1.0])


def test_no_progress_column_for_envs_without_a_measure():
    stats = EpisodeStats(1)
    stats.step(np.array([1.0]), np.array([True]))
    w = stats.pop_window()
    assert "charts/episodic_progress" not in w and "charts/progress_per_step" not in w


# -- normalisation rule ------------------------------------------------------------------------------
def test_binomial_tail_matches_known_values():
    assert binomial_tail(0, 10) == 1.0
    assert binomial_tail(10, 10) == pytest.approx(1 / 1024)
    assert binomial_tail(15, 20) == pytest.approx(0.020694, abs=1e-6)


def test_chance_members_get_no_weight_and_small_evidence_is_not_judged():
    n = MIN_DECISIVE
    w = member_weights([0.5, 0.95, 0.55, 0.5, float("nan")], [n, n, n, n - 1, 0])
    assert w.tolist() == [0.0, 1.0, 0.0, 1.0, 1.0]


def test_normalisation_floors_the_spread_and_zeroes_members_at_chance(monkeypatch):
    """Member 0 learnt something (accuracy 0.9 on 40 decisive pairs) and varies: full size.
    Member 1 varies by 1e-6: scaled by 1e-6 / floor, not blown up to full size. Member 2 is at
    chance (0.5 on 40 pairs): weight 0."""
    from rlhp_core.reward import RewardEnsemble

    ens = RewardEnsemble((3,), 2, n_members=3, reward_std=0.05, seed=0)
    rng = np.random.default_rng(0)
    raw = np.stack([rng.normal(2.0, 1.0, 1000), rng.normal(0.0, 1e-6, 1000), rng.normal(0.0, 1.0, 1000)])
    monkeypatch.setattr(ens, "raw_rewards", lambda obs, actions=None: raw)
    obs = np.zeros((1000, 3), np.float32)
    fit = {"val_accuracy_members": [0.9, 0.9, 0.5], "val_decisive_members": [40, 40, 40]}
    ens.update_normalization(obs, None, segment_length=25, fit_metrics=fit)
    out = ens.predict_members(obs)
    assert out[0].std() == pytest.approx(0.05, rel=1e-6) and abs(out[0].mean()) < 1e-9
    assert out[1].std() == pytest.approx(0.05 * raw[1].std() / std_floor(25), rel=1e-6)
    assert out[1].std() < 1e-5
    assert np.all(out[2] == 0.0)
    assert ens.norm_weight.tolist() == [1.0, 1.0, 0.0]
    # a later fit that passes the test gives the member its weight back; no fit metrics keep the weights
    ens.update_normalization(obs, None, segment_length=25,
                             fit_metrics={"val_accuracy_members": [0.9] * 3, "val_decisive_members": [40] * 3})
    assert ens.norm_weight.tolist() == [1.0, 1.0, 1.0]
    ens.update_normalization(obs, None, segment_length=25)
    assert ens.norm_weight.tolist() == [1.0, 1.0, 1.0]
    assert std_floor(25) == pytest.approx(0.1 / math.sqrt(50))


# -- learning-rate horizon ---------------------------------------------------------------------------
def test_lr_horizon_defaults_to_the_reference_runs_on_atari_and_to_the_run_elsewhere():
    assert resolve(TrainConfig(env_id="ALE/Enduro-v5", total_steps=1_000_000)).lr_horizon == ATARI_LR_HORIZON
    assert resolve(TrainConfig(env_id="CartPole-v1", total_steps=40_000, label_budget=200)).lr_horizon == 40_000
    assert resolve(TrainConfig(env_id="CartPole-v1", lr_horizon=5)).lr_horizon == 5
    with pytest.raises(ValueError, match="lr_schedule 'cosine'"):
        resolve(TrainConfig(lr_schedule="cosine"))
    with pytest.raises(ValueError, match="lr_horizon must be >= 1"):
        resolve(TrainConfig(lr_horizon=0))


def test_a_short_run_is_the_start_of_the_long_one():
    """The lr in force after k updates is the same in a 1M-step run and in a 10M-step run."""
    import gymnasium as gym

    from rlhp_core.rl import Rollout, make_algo
    from rlhp_core.rl_settings import RLSettings

    def lrs(total_steps, schedule="linear"):
        cfg = resolve(TrainConfig(env_id="ALE/Enduro-v5", algo="a2c", total_steps=total_steps, lr_schedule=schedule))
        s = RLSettings(lr=cfg.lr, n_steps=2, num_envs=2, total_steps=cfg.lr_horizon, anneal_lr=schedule == "linear")
        algo = make_algo("a2c", (3,), np.float32, gym.spaces.Discrete(2), s, "cpu", 0)
        out = []
        for _ in range(3):
            obs = np.zeros((2, 2, 3), np.float32)
            _, extras = algo.act(obs[0])
            ext = {k: np.stack([v, v]) for k, v in extras.items()}
            m = algo.update(Rollout(obs=obs, actions=np.zeros((2, 2), np.int64), rewards=np.ones((2, 2), np.float32),
                                    dones=np.zeros((2, 2), bool), timeouts=np.zeros((2, 2), bool),
                                    final_values_obs=obs, last_obs=obs[0], extras=ext))
            out.append(m["charts/learning_rate"])
        return out

    assert lrs(1_000_000) == lrs(10_000_000)
    assert lrs(1_000_000)[2] == pytest.approx(7e-4 * (1 - 8 / ATARI_LR_HORIZON))
    assert lrs(1_000_000, "constant") == [7e-4] * 3


# -- the progress teacher ----------------------------------------------------------------------------
def _seg(rewards, progress):
    n = len(rewards)
    return Segment(obs=np.zeros((n, 1), np.float32), actions=np.zeros(n, np.int64),
                   true_rewards=np.asarray(rewards, np.float32), episode_ends=np.zeros(n, bool),
                   progress=None if progress is None else np.asarray(progress, np.float32))


def test_progress_teacher_decides_by_reward_first_then_by_progress():
    teacher = parse_teacher("progress", np.random.default_rng(0))
    rational = parse_teacher("rational", np.random.default_rng(0))
    pairs = [
        Query("reward-wins", _seg([1, 0, 0], [0, 0, 0]), _seg([0, 0, 0], [5, 5, 5])),  # more reward beats progress
        Query("progress-breaks-tie", _seg([0, 0, 0], [1, 1, 1]), _seg([0, 0, 0], [2, 2, 2])),
        Query("progress-left", _seg([1, 0, -1], [3, 3, 3]), _seg([0, 0, 0], [0, 0, 0])),
        Query("true-tie", _seg([0, 0, 0], [1, 1, 1]), _seg([0, 0, 0], [1, 1, 1])),
    ]
    assert teacher.answer_batch(pairs) == ["left", "right", "left", "equal"]
    assert rational.answer_batch(pairs) == ["left", "equal", "equal", "equal"]
    probs = teacher.answer_probabilities(pairs)
    assert probs[1].tolist() == [0.0, 1.0, 0.0, 0.0]


def test_progress_teacher_keeps_the_noise_knobs_and_a_margin():
    wide = parse_teacher("progress:progress_margin=2", np.random.default_rng(0))
    q = Query("q", _seg([0, 0], [1, 1]), _seg([0, 0], [2, 1.5]))  # progress 2 vs 3.5: within margin 2
    assert wide.answer_batch([q]) == ["equal"]
    noisy = parse_teacher("progress:eps_mistake=0.25", np.random.default_rng(0))
    p = noisy.answer_probabilities([Query("q", _seg([0], [0]), _seg([0], [1]))])
    assert p[0].tolist() == pytest.approx([0.25, 0.75, 0.0, 0.0])


def test_progress_teacher_refuses_segments_without_progress():
    teacher = parse_teacher("progress", np.random.default_rng(0))
    with pytest.raises(ValueError, match="driving-progress measure"):
        teacher.answer_batch([Query("q", _seg([0], None), _seg([0], None))])
    with pytest.raises(ValueError, match="progress_margin must be in"):
        parse_teacher("progress_margin=-1", np.random.default_rng(0))

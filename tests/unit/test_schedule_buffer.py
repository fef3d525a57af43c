import math

import numpy as np
import pytest

from rlhp_core.buffer import SegmentBuffer
from rlhp_core.queries import select_pairs
from rlhp_core.schedule import LabelSchedule


def test_schedule_starts_with_initial_and_ends_at_budget():
    s = LabelSchedule(budget=5500, initial=500, total_frames=40_000_000, constant=5e6)
    assert s.due(0) == 500
    assert s.due(40_000_000) == 5500
    assert s.due(80_000_000) == 5500
    dues = [s.due(f) for f in range(0, 40_000_001, 1_000_000)]
    assert dues == sorted(dues)
    # the rate decays as C / (T + C): the first 10% of frames get more labels than the last 10%
    assert s.due(4_000_000) - s.due(0) > 3 * (s.due(40_000_000) - s.due(36_000_000))
    # and matches the integral C ln(1 + T/C) share
    share = math.log1p(8e6 / 5e6) / math.log1p(40e6 / 5e6)
    assert s.due(8_000_000) == 500 + math.floor(5000 * share)


def test_schedule_rejects_bad_input():
    with pytest.raises(ValueError, match="initial labels 600 exceed the label budget 290"):
        LabelSchedule(budget=290, initial=600, total_frames=10, constant=1.0)


def test_buffer_windows_and_wraparound():
    buf = SegmentBuffer(capacity=10, num_envs=2, obs_shape=(1,), obs_dtype=np.float32, action_shape=(),
                        action_dtype=np.int64)
    for t in range(25):
        buf.add(np.array([[t], [100 + t]], dtype=np.float32), np.array([t, t]), np.array([t, -t]),
                np.array([t % 7 == 0, False]), truncations=np.array([t == 21, False]))
    assert buf.filled == 10
    seg = buf.segment(1, 17, 5)
    np.testing.assert_array_equal(seg.obs[:, 0], 100 + np.arange(17, 22))
    np.testing.assert_array_equal(seg.true_rewards, -np.arange(17, 22))
    seg0 = buf.segment(0, 20, 5)
    np.testing.assert_array_equal(seg0.episode_ends, np.arange(20, 25) % 7 == 0)
    np.testing.assert_array_equal(seg0.terminations, [False] * 5)  # the end at step 21 was a time limit
    envs, starts = buf.sample_starts(200, 5, np.random.default_rng(0))
    assert starts.min() >= 15 and starts.max() <= 20


def test_disagreement_selects_highest_variance():
    buf = SegmentBuffer(capacity=50, num_envs=1, obs_shape=(1,), obs_dtype=np.float32, action_shape=(),
                        action_dtype=np.int64)
    for t in range(50):
        buf.add(np.array([[t]], dtype=np.float32), np.array([0]), np.array([0.0]), np.array([False]))

    def probs(le, ls, re, rs, length):
        # members disagree in proportion to the left segment's first observation
        spread = buf.gather(le, ls, length, "obs")[:, 0, 0] / 50.0
        return np.stack([0.5 + spread / 2, 0.5 - spread / 2, np.full_like(spread, 0.5)])

    pairs = select_pairs(buf, 3, 5, np.random.default_rng(1), mode="disagreement", factor=10, score=probs)
    rand = select_pairs(buf, 30, 5, np.random.default_rng(1), mode="random")
    chosen = sorted(p[1] for p in pairs)
    assert min(chosen) >= np.percentile([p[1] for p in rand], 70)
    with pytest.raises(ValueError, match="query selection 'best' is not one of"):
        select_pairs(buf, 3, 5, np.random.default_rng(1), mode="best", score=probs)

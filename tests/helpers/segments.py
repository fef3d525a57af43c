"""Small random segments for the unit tests."""

from __future__ import annotations

import numpy as np


def make_segment(rng: np.random.Generator, length: int = 5, obs_shape=(3,), rewards=None, frames: bool = False):
    from rlhp_core.segments import Segment

    return Segment(
        obs=rng.normal(size=(length, *obs_shape)).astype(np.float32),
        actions=rng.integers(0, 2, size=length),
        true_rewards=np.asarray(rewards if rewards is not None else rng.normal(size=length), dtype=np.float32),
        episode_ends=np.zeros(length, dtype=bool),
        frames=rng.integers(0, 255, size=(length, 8, 8, 3), dtype=np.uint8) if frames else None,
    )

"""Shared test helpers: one torch thread (CI has 2 cores shared with the emulator), small segments."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(1)


def make_segment(rng: np.random.Generator, length: int = 5, obs_shape=(3,), rewards=None, frames: bool = False):
    from rlhp_core.segments import Segment

    return Segment(
        obs=rng.normal(size=(length, *obs_shape)).astype(np.float32),
        actions=rng.integers(0, 2, size=length),
        true_rewards=np.asarray(rewards if rewards is not None else rng.normal(size=length), dtype=np.float32),
        episode_ends=np.zeros(length, dtype=bool),
        frames=rng.integers(0, 255, size=(length, 8, 8, 3), dtype=np.uint8) if frames else None,
    )


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """An empty run directory (the labeling page's and the learner's tests share it)."""
    d = tmp_path / "run"
    d.mkdir()
    return d

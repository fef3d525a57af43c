"""The interface the learner steps: :class:`VecEnv` (N envs, SAME_STEP autoreset) and what one step
returns, :class:`StepBatch`. The backends are in :mod:`rlhp_core.atari_vec_env`,
:mod:`rlhp_core.ale_loop` and :mod:`rlhp_core.gym_vec_env`; :func:`rlhp_core.envs.make_vec_env`
chooses and builds one.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata

import gymnasium as gym
import numpy as np

__all__ = ["StepBatch", "VecEnv"]


@dataclass
class StepBatch:
    """What one step of all N envs returns."""

    obs: np.ndarray
    """(N, *obs_shape) obs after the step; where an episode ended, already the NEW episode's first obs."""
    reward: np.ndarray
    """(N,) float32 true env reward, unclipped."""
    terminated: np.ndarray
    """(N,) bool: the episode ended by the game's own rules."""
    truncated: np.ndarray
    """(N,) bool: the episode was cut by the step limit."""
    final_obs: np.ndarray
    """(N, *obs_shape) last obs of the ended episode where terminated|truncated, else equal to obs."""
    frames: np.ndarray | None
    """(N, H, W, 3) uint8 raw RGB screen matching ``obs`` (unblanked; for people), None unless keep_frames."""
    episodes: list[tuple[int, float, int]]
    """(env_index, true undiscounted unclipped return, length in agent steps) of each episode that ended now."""
    progress: np.ndarray | None = None
    """(N,) float32 progress made in this step (Enduro: odometer distance, up to an episode's end), or None."""

    @property
    def done(self) -> np.ndarray:
        return self.terminated | self.truncated


class VecEnv:
    """N envs stepped together, SAME_STEP autoreset. Built by :func:`make_vec_env`."""

    env_id: str
    num_envs: int
    obs_shape: tuple
    obs_dtype: np.dtype
    action_space: gym.Space
    """The single env's action space (Discrete or Box)."""
    is_atari: bool
    keep_frames: bool
    info: dict
    """Settings to record with every result (env id, frameskip, sticky actions, versions, limits, blanking...)."""
    progress_name: str | None = None
    """What ``StepBatch.progress`` measures ('distance' on Enduro's ale_loop backend), None: no progress."""

    def __init__(self, num_envs: int, keep_frames: bool):
        self.num_envs = num_envs
        self.keep_frames = keep_frames
        self._ep_return = np.zeros(num_envs, dtype=np.float64)
        self._ep_length = np.zeros(num_envs, dtype=np.int64)

    def reset(self, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Reset all envs; env i is seeded with seed + i. Returns (obs, frames)."""
        raise NotImplementedError

    def step(self, actions: np.ndarray) -> StepBatch:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def get_state(self) -> bytes | None:
        """Everything needed to continue these envs exactly where they are (emulator or physics
        state, their random generators, episode tallies), or None where the backend cannot save it:
        a resumed run then restarts its envs instead (README, "What resume does not restore")."""
        return None

    def set_state(self, state: bytes) -> None:
        """Continue from :meth:`get_state`'s bytes."""
        raise NotImplementedError(f"{type(self).__name__} cannot restore env state")

    def __enter__(self) -> "VecEnv":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.env_id!r}, num_envs={self.num_envs}, keep_frames={self.keep_frames})"

    # --- shared helpers ---------------------------------------------------------------------
    def _track_episodes(self, reward: np.ndarray, done: np.ndarray) -> list[tuple[int, float, int]]:
        self._ep_return += reward
        self._ep_length += 1
        episodes = []
        if done.any():
            for i in np.flatnonzero(done):
                episodes.append((int(i), float(self._ep_return[i]), int(self._ep_length[i])))
            self._ep_return[done] = 0.0
            self._ep_length[done] = 0
        return episodes

    def _reset_tracking(self) -> None:
        self._ep_return[:] = 0.0
        self._ep_length[:] = 0

    def _check_actions(self, actions) -> np.ndarray:
        a = np.asarray(actions)
        space = self.action_space
        if isinstance(space, gym.spaces.Discrete):
            if a.shape != (self.num_envs,):
                raise ValueError(f"actions must have shape ({self.num_envs},) for a Discrete action space, got {a.shape}")
            if not np.issubdtype(a.dtype, np.integer):
                if np.issubdtype(a.dtype, np.floating) and np.all(a == np.round(a)):
                    a = a.astype(np.int64)
                else:
                    raise ValueError(f"Discrete actions must be integers, got dtype {a.dtype}")
            a = a.astype(np.int64, copy=False)
            lo, hi = int(space.start), int(space.start + space.n)
            if a.size and (a.min() < lo or a.max() >= hi):
                raise ValueError(f"actions must be in [{lo}, {hi}), got min {a.min()} max {a.max()}")
            return a
        want = (self.num_envs, *space.shape)
        if a.shape != want:
            raise ValueError(f"actions must have shape {want} for a Box action space, got {a.shape}")
        return np.clip(a.astype(space.dtype, copy=False), space.low, space.high)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:  # pragma: no cover
        return "unknown"

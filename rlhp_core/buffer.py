"""The recent stretch of every env's stream, from which query segments are cut.

A ring buffer over the last ``capacity`` agent steps of all N envs. Segments are windows of
one env's column; the agent's stream is continuous, so a window may hold an episode end,
which its ``episode_ends`` flag keeps visible to labelers. Frames (raw RGB for people) are
kept only when a labeler wants them.
"""

from __future__ import annotations

import numpy as np

from .segments import Segment


class SegmentBuffer:
    def __init__(self, capacity: int, num_envs: int, obs_shape: tuple, obs_dtype, action_shape: tuple,
                 action_dtype, keep_frames: bool = False):
        if capacity < 1:
            raise ValueError(f"buffer capacity must be >= 1, got {capacity}")
        self.capacity, self.num_envs = capacity, num_envs
        self.obs = np.zeros((capacity, num_envs, *obs_shape), dtype=obs_dtype)
        self.actions = np.zeros((capacity, num_envs, *action_shape), dtype=action_dtype)
        self.true_rewards = np.zeros((capacity, num_envs), dtype=np.float32)
        self.episode_ends = np.zeros((capacity, num_envs), dtype=bool)
        self.truncations = np.zeros((capacity, num_envs), dtype=bool)
        self.progress: np.ndarray | None = None  # allocated at the first progress seen (envs that measure it)
        self.keep_frames = keep_frames
        self.frames: np.ndarray | None = None  # allocated at the first frames seen (their size depends on the env)
        self.steps_written = 0
        """Per-env step count ever written (also the global step index of the next row)."""

    def add(self, obs, actions, true_rewards, episode_ends, frames=None, truncations=None, progress=None) -> None:
        """Append one step of all envs: obs the action was taken in, the action, what followed.
        ``truncations``: which of the ends were time limits (default: none); ``progress``: the
        env's driving progress in this step (StepBatch.progress), or None."""
        i = self.steps_written % self.capacity
        self.obs[i] = obs
        self.actions[i] = actions
        self.true_rewards[i] = true_rewards
        self.episode_ends[i] = episode_ends
        self.truncations[i] = False if truncations is None else truncations
        if self.keep_frames and frames is not None:
            if self.frames is None:
                self.frames = np.zeros((self.capacity, *frames.shape), dtype=np.uint8)
            self.frames[i] = frames
        if progress is not None:
            if self.progress is None:
                self.progress = np.zeros((self.capacity, self.num_envs), dtype=np.float32)
            self.progress[i] = progress
        self.steps_written += 1

    _FIELDS = ("obs", "actions", "true_rewards", "episode_ends", "truncations", "progress", "frames")

    def state_dict(self) -> dict:
        """The whole ring (for a resume that continues exactly, see Learner._checkpoint)."""
        return {"steps_written": self.steps_written, **{f: getattr(self, f) for f in self._FIELDS}}

    def load_state_dict(self, d: dict) -> None:
        if d["obs"].shape != self.obs.shape:
            raise ValueError(f"buffer state has obs of shape {d['obs'].shape}, this buffer {self.obs.shape}")
        for f in self._FIELDS:
            setattr(self, f, None if d[f] is None else np.array(d[f]))
        self.steps_written = int(d["steps_written"])

    @property
    def filled(self) -> int:
        return min(self.steps_written, self.capacity)

    def can_sample(self, length: int) -> bool:
        return self.filled >= length

    def sample_starts(self, count: int, length: int, rng: np.random.Generator,
                      newer_than: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(env index, start step) for ``count`` random windows held in full.

        ``newer_than`` restricts windows to steps written at or after that step index, so each
        query round looks at behaviour of the current policy rather than stale data.
        """
        if not self.can_sample(length):
            raise ValueError(f"buffer holds {self.filled} steps, a segment needs {length}")
        first = max(self.steps_written - self.filled, newer_than)
        last = self.steps_written - length  # inclusive start bound
        if last < first:
            first = last
        starts = rng.integers(first, last + 1, size=count)
        envs = rng.integers(0, self.num_envs, size=count)
        return envs, starts

    @property
    def terminations(self) -> np.ndarray:
        """(capacity, N) bool: episode ends that were not a time limit (Segment.terminations)."""
        return self.episode_ends & ~self.truncations

    def window_rows(self, starts: np.ndarray, length: int) -> np.ndarray:
        """(count, length) ring-buffer rows of windows starting at global steps ``starts``."""
        return (starts[:, None] + np.arange(length)[None, :]) % self.capacity

    def gather(self, envs: np.ndarray, starts: np.ndarray, length: int, field: str) -> np.ndarray:
        """One field (or ``terminations``) for many windows at once: (count, length, ...)."""
        return getattr(self, field)[self.window_rows(starts, length), envs[:, None]]

    def segment(self, env: int, start: int, length: int) -> Segment:
        e, s = np.array([env]), np.array([start])
        take = lambda f: self.gather(e, s, length, f)[0]  # noqa: E731
        return Segment(
            obs=take("obs"),
            actions=take("actions"),
            true_rewards=take("true_rewards"),
            episode_ends=take("episode_ends"),
            frames=take("frames") if self.frames is not None else None,
            env_index=int(env),
            start_step=int(start),
            truncations=take("truncations"),
            progress=take("progress") if self.progress is not None else None,
        )

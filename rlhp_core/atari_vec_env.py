"""Atari on ale-py's C++ vector env: the ``native`` and ``rgb`` backends of
:func:`rlhp_core.envs.make_vec_env` (the module doc there says how they differ).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from gymnasium.vector import AutoresetMode

from .atari_preprocessing import (
    ALE_MAX_FRAMES_PER_EPISODE,
    BLANK_VALUE,
    FRAME_STACK,
    NOOP_MAX,
    OBS_SIZE,
    RAW_HEIGHT,
    RAW_WIDTH,
    _AtariPreprocessor,
    _atari_blanking,
    atari_info,
)
from .vec_env import StepBatch, VecEnv

__all__ = ["AtariVecEnv"]


class AtariVecEnv(VecEnv):
    """Atari on ale-py's C++ vector env, two ways to the same 84x84x4 observation (module doc).

    ``backend="native"``: ALE preprocesses (gray, max-pool, cv2 INTER_AREA, stack) in C++;
    we only blank. ``backend="rgb"``: ALE returns the max-pooled RGB screen, which is kept as
    the frame people see, and gray/resize/blank/stack happen here in numpy.
    """

    is_atari = True

    def __init__(
        self,
        env_id: str,
        game: str,
        num_envs: int,
        *,
        sticky_actions: float,
        frameskip: int,
        max_episode_steps: int | None,
        keep_frames: bool,
        blank_regions: Sequence[tuple[int, int, int, int]] | None,
        num_threads: int | None,
        backend: str = "auto",
    ):
        from ale_py.vector_env import AtariVectorEnv

        super().__init__(num_envs, keep_frames)
        if backend not in ("auto", "native", "rgb"):
            raise ValueError(f"AtariVecEnv's backend must be 'auto', 'native' or 'rgb', got {backend!r}")
        if backend == "auto":
            backend = "rgb" if keep_frames else "native"
        if backend == "native" and keep_frames:
            raise ValueError("atari_backend='native' gives no RGB frames; use 'rgb' or 'auto' with keep_frames=True")
        self.backend = backend
        self.env_id = env_id
        self.game = game
        regions, boxes, blank_source, mask = _atari_blanking(env_id, game, blank_regions)
        self.blank_mask = mask
        """(84, 84) bool: the observation pixels that are always BLANK_VALUE."""
        self._boxes = [(slice(i0, i1), slice(j0, j1)) for i0, i1, j0, j1 in boxes]
        self._prep = _AtariPreprocessor(mask)
        max_frames = ALE_MAX_FRAMES_PER_EPISODE if max_episode_steps is None else max_episode_steps * frameskip
        if num_threads is None:
            num_threads = _default_threads(num_envs)
        if backend == "rgb":
            image = dict(img_height=RAW_HEIGHT, img_width=RAW_WIDTH, grayscale=False, stack_num=1)
            pipeline = "ALE max-pooled RGB 210x160; numpy: luma gray, 84x84 area resize, blank, stack 4"
        else:
            image = dict(img_height=OBS_SIZE, img_width=OBS_SIZE, grayscale=True, stack_num=FRAME_STACK)
            pipeline = "ALE C++: palette gray, max-pool, cv2 INTER_AREA 84x84, stack 4; numpy: blank"
        self._env = AtariVectorEnv(
            game,
            num_envs,
            num_threads=num_threads,
            max_num_frames_per_episode=max_frames,
            repeat_action_probability=float(sticky_actions),
            autoreset_mode=AutoresetMode.SAME_STEP,
            frameskip=frameskip,
            maxpool=True,
            noop_max=NOOP_MAX,
            episodic_life=False,
            life_loss_info=False,
            reward_clipping=False,
            use_fire_reset=False,
            **image,
        )
        self.action_space = self._env.single_action_space
        self.obs_shape = (FRAME_STACK, OBS_SIZE, OBS_SIZE)
        self.obs_dtype = np.dtype(np.uint8)
        self._stack = np.zeros((num_envs, *self.obs_shape), dtype=np.uint8)
        self.action_meanings = [a.name for a in self._env.ale.get_action_set()]
        self.info = {
            **atari_info(env_id, game, num_envs, frameskip=frameskip, sticky_actions=sticky_actions,
                         max_frames=max_frames, obs_shape=self.obs_shape, regions=regions, boxes=boxes,
                         blank_source=blank_source, keep_frames=keep_frames),
            "backend": f"ale_py.vector_env.AtariVectorEnv ({backend})",
            "pipeline": pipeline,
            "num_threads": num_threads,
        }

    def _blank(self, stacks: np.ndarray) -> np.ndarray:
        for rows, cols in self._boxes:
            stacks[..., rows, cols] = BLANK_VALUE
        return stacks

    def _frames(self, raw: np.ndarray) -> np.ndarray | None:
        return raw.copy() if self.keep_frames else None

    def reset(self, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
        obs, _ = self._env.reset(seed=int(seed))
        self._reset_tracking()
        if self.backend == "native":
            return self._blank(np.array(obs, dtype=np.uint8)), None
        raw = obs[:, 0]
        self._stack[:] = 0
        self._stack[:, -1] = self._prep(raw)
        return self._stack.copy(), self._frames(raw)

    def step(self, actions: np.ndarray) -> StepBatch:
        a = self._check_actions(actions)
        obs, reward, terminated, truncated, info = self._env.step(a)
        reward = reward.astype(np.float32)
        terminated = terminated.astype(bool)
        truncated = truncated.astype(bool)
        done = terminated | truncated
        idx = np.flatnonzero(done)
        frames = None
        if self.backend == "native":
            new_obs = self._blank(np.array(obs, dtype=np.uint8))
            final_obs = new_obs.copy()
            if idx.size:
                final_obs[idx] = self._blank(np.array(info["final_obs"][idx], dtype=np.uint8))
        else:
            raw = obs[:, 0]
            stack = self._stack
            stack[:, :-1] = stack[:, 1:]
            stack[:, -1] = self._prep(raw)
            final_obs = stack.copy()
            if idx.size:
                final_obs[idx, -1] = self._prep(np.ascontiguousarray(info["final_obs"][idx, 0]))
                stack[idx, :-1] = 0
            new_obs = stack.copy()
            frames = self._frames(raw)
        episodes = self._track_episodes(reward, done)
        return StepBatch(
            obs=new_obs,
            reward=reward,
            terminated=terminated,
            truncated=truncated,
            final_obs=final_obs,
            frames=frames,
            episodes=episodes,
        )

    def close(self) -> None:
        self._env.close()


def _default_threads(num_envs: int) -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        cores = os.cpu_count() or 1
    return max(1, min(num_envs, cores))

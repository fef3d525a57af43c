"""gymnasium's vector-observation envs (CartPole-v1, Pendulum-v1, Hopper-v5, ...) as a
:class:`VecEnv`: ``SyncVectorEnv`` with SAME_STEP autoreset, float32 obs, frames for people from
``render_mode="rgb_array"`` (:mod:`rlhp_core.envs` says more).
"""

from __future__ import annotations

import os
import pickle
import warnings

if "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
    # Headless MuJoCo rendering; must be set before mujoco is first imported.
    os.environ["MUJOCO_GL"] = "egl"

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

from .vec_env import StepBatch, VecEnv, _version

__all__ = ["GymVecEnv"]


class GymVecEnv(VecEnv):
    """gymnasium SyncVectorEnv (SAME_STEP autoreset), float32 obs."""

    is_atari = False

    def __init__(self, env_id: str, num_envs: int, *, max_episode_steps: int | None, keep_frames: bool):
        super().__init__(num_envs, keep_frames)
        self.env_id = env_id
        kwargs = {}
        if max_episode_steps is not None:
            kwargs["max_episode_steps"] = max_episode_steps
        if keep_frames:
            kwargs["render_mode"] = "rgb_array"
            if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
                # pygame (classic control) draws off-screen; without this SDL looks for a display
                # and prints "error: XDG_RUNTIME_DIR is invalid" on headless machines
                os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
        self._env = gym.make_vec(
            env_id,
            num_envs=num_envs,
            vectorization_mode="sync",
            vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP},
            **kwargs,
        )
        single_obs = self._env.single_observation_space
        self.action_space = self._env.single_action_space
        if not isinstance(single_obs, gym.spaces.Box):
            self._env.close()
            raise ValueError(
                f"{env_id} has observation space {single_obs}; allowed: a Box (vector observations) "
                f"or an Atari id of the form ALE/<Game>-v5"
            )
        if not isinstance(self.action_space, (gym.spaces.Discrete, gym.spaces.Box)):
            self._env.close()
            raise ValueError(f"{env_id} has action space {self.action_space}; allowed: Discrete or Box")
        self.obs_shape = tuple(single_obs.shape)
        self.obs_dtype = np.dtype(np.float32)
        spec = gym.spec(env_id)
        limit = max_episode_steps if max_episode_steps is not None else spec.max_episode_steps
        self._frames_note = "render_mode='rgb_array'" if keep_frames else None
        self._shrink = 1
        if keep_frames:
            try:
                self._env.reset(seed=0)
                first = np.asarray(self._env.render()[0])
            except Exception as exc:  # missing pygame, no GL: no frames, say why
                self.keep_frames = False
                self._frames_note = f"unavailable: {type(exc).__name__}: {exc}{self._render_hint(exc)}"
                warnings.warn(f"{env_id}: cannot render frames ({self._frames_note}); frames will be None", stacklevel=3)
            else:
                h, w = first.shape[:2]
                self._shrink = max(1, -(-max(h, w) // self.MAX_FRAME_SIDE))
                if self._shrink > 1:
                    self._frames_note += (f", {w}x{h} shrunk {self._shrink}x to {w // self._shrink}x"
                                          f"{h // self._shrink} (MAX_FRAME_SIDE {self.MAX_FRAME_SIDE})")
                from time import perf_counter

                t = perf_counter()
                self._env.envs[0].render()  # the first render set up the renderer; time a plain one
                ms = 1000 * (perf_counter() - t)
                self._frames_note += f", {ms:.0f} ms per frame"
                if ms > 50:  # classic control: a few ms; MuJoCo on a GPU: ~1 ms; in software: 100s
                    warnings.warn(f"{env_id}: rendering frames for people takes {ms:.0f} ms per env and step "
                                  f"({ms * num_envs / 1000:.1f} s per step of {num_envs} envs), far more than the "
                                  f"env itself"
                                  + (f"; MuJoCo renders through MUJOCO_GL={os.environ.get('MUJOCO_GL')!r}, which "
                                     f"without a GPU is software OpenGL: label on a machine with one, or use fewer "
                                     f"envs (--num-envs)" if "mujoco" in type(self._env.envs[0].unwrapped).__module__
                                     else "; fewer envs (--num-envs) make each step cheaper"), stacklevel=3)
        self.info = {
            "env_id": env_id,
            "backend": "gymnasium SyncVectorEnv",
            "num_envs": num_envs,
            "frameskip": 1,
            "sticky_actions": 0.0,
            "max_episode_steps": limit,
            "autoreset_mode": "same_step",
            "frames": self._frames_note,
            "mujoco_gl": os.environ.get("MUJOCO_GL"),
            "gymnasium": _version("gymnasium"),
        }

    MAX_FRAME_SIDE = 256
    """Frames for people are shrunk (by a whole factor, each pixel the mean of a k x k block) until
    their longer side is at most this: classic control renders 600x400 and 500x500, MuJoCo 480x480,
    and the segment buffer keeps every env's frame of every step it holds (CartPole at full size,
    16 envs x 256 steps: 2.9 GB; shrunk 3x to 200x133: 0.33 GB). The page scales clips up again."""

    @staticmethod
    def _render_hint(exc: Exception) -> str:
        """What to do about a failed render, where the error does not say."""
        text = f"{type(exc).__name__} {exc}".lower()
        if "pygame" in text:
            return ""  # gymnasium's message names the install command
        if any(k in text for k in ("egl", "opengl", "gl context", "mjr_makecontext", "glfw", "osmesa")):
            return (f" (MuJoCo draws through OpenGL: MUJOCO_GL={os.environ.get('MUJOCO_GL')!r} here; headless "
                    f"machines need MUJOCO_GL=egl with libEGL, e.g. apt-get install libegl1, or MUJOCO_GL=osmesa "
                    f"with libosmesa6)")
        return ""

    def _render(self) -> np.ndarray | None:
        if not self.keep_frames:
            return None
        frames = np.stack(self._env.render()).astype(np.uint8, copy=False)
        k = self._shrink
        if k == 1:
            return frames
        n, h, w, c = frames.shape
        h, w = h - h % k, w - w % k
        total = np.zeros((n, h // k, w // k, c), dtype=np.uint16 if k <= 16 else np.uint32)  # 255 * k * k fits
        for dy in range(k):
            for dx in range(k):
                total += frames[:, dy:h:k, dx:w:k]
        total += k * k // 2
        total //= k * k
        return total.astype(np.uint8)

    def get_state(self) -> bytes | None:
        """The sub-envs pickled whole (their physics state and seeded generators; with SAME_STEP
        autoreset nothing else in the vector env carries over a step), or None for envs that do not
        pickle (e.g. MuJoCo's native handles)."""
        # classic control keeps its pygame window in screen/clock/surf, which do not pickle: they are
        # pickled as None (the restored env opens new ones at its first render)
        held = [(e.unwrapped, {k: e.unwrapped.__dict__[k] for k in ("screen", "clock", "surf") if k in e.unwrapped.__dict__})
                for e in self._env.envs]
        for env, attrs in held:
            env.__dict__.update(dict.fromkeys(attrs))
        try:
            return pickle.dumps((self._env.envs, self._ep_return, self._ep_length))
        except (pickle.PicklingError, TypeError, AttributeError, ValueError):
            return None
        finally:
            for env, attrs in held:
                env.__dict__.update(attrs)

    def set_state(self, state: bytes) -> None:
        envs, self._ep_return, self._ep_length = pickle.loads(state)  # noqa: S301 - our own checksummed checkpoint
        if len(envs) != self.num_envs:
            raise ValueError(f"env state holds {len(envs)} envs, this run has {self.num_envs}")
        for old in self._env.envs:
            old.close()
        self._env.envs = envs

    def reset(self, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
        obs, _ = self._env.reset(seed=int(seed))
        self._reset_tracking()
        return np.asarray(obs, dtype=np.float32).copy(), self._render()

    def step(self, actions: np.ndarray) -> StepBatch:
        a = self._check_actions(actions)
        obs, reward, terminated, truncated, info = self._env.step(a)
        obs = np.array(obs, dtype=np.float32)
        reward = np.asarray(reward, dtype=np.float32)
        terminated = np.asarray(terminated, dtype=bool)
        truncated = np.asarray(truncated, dtype=bool)
        done = terminated | truncated
        final_obs = obs.copy()
        if done.any():
            finals = info["final_obs"]
            for i in np.flatnonzero(done):
                final_obs[i] = finals[i]
        episodes = self._track_episodes(reward, done)
        return StepBatch(
            obs=obs,
            reward=reward,
            terminated=terminated,
            truncated=truncated,
            final_obs=final_obs,
            frames=self._render(),
            episodes=episodes,
        )

    def close(self) -> None:
        self._env.close()

"""Vectorised environments: Atari with the paper's preprocessing, and gymnasium vector envs.

One small interface, :class:`VecEnv`, that the learner steps; :func:`make_vec_env` builds it.

Atari (``ALE/<Game>-v5``; ``<Game>NoFrameskip-v4`` is accepted too and gets the same treatment)
    Runs on ale-py's C++ vector env (``ale_py.vector_env.AtariVectorEnv``), the fastest backend.
    Preprocessing is Mnih et al. 2015 as the paper used it (SPEC.md, "Atari environment"):
    0-29 no-ops at reset (ALE's ``noop_max=30``), frameskip 4 with a max over the last two
    frames, grayscale, 84x84 (area interpolation, as cv2 ``INTER_AREA``), 4 frames stacked,
    channel-first ``(4, 84, 84) uint8``. No life-loss signal, no fire-on-reset, rewards
    *unclipped* (the learner clips for the true-reward baseline). Sticky actions default to
    0.0 (the paper's ``NoFrameskip-v4`` setting); 0.25 is ``v5``'s default.

    Two backends give the same observation, both on ALE's C++ vector env:
      * ``native`` (default without frames, the fastest): ALE does palette gray, max-pool,
        cv2 ``INTER_AREA`` resize and stacking in C++; only the blanking happens here.
      * ``rgb`` (default with ``keep_frames=True``): ALE returns the max-pooled RGB screen
        (210x160x3), kept unblanked as the frame people see (``StepBatch.frames``); gray
        (ALE's own luma, 0.299 R + 0.587 G + 0.114 B, which reproduces its gray palette),
        84x84 area resize (equal to cv2 ``INTER_AREA`` within 1 gray level), blanking and
        stacking happen here in vectorised numpy (about 1 ms for 16 envs, no BLAS threads).
        ``frames[i]`` is exactly the screen that the newest channel ``obs[i, -1]`` came from.
    The one difference: ``native`` takes the max of the two gray frames, ``rgb`` the gray of
    the max-pooled RGB (what OpenAI baselines' MaxAndSkip + WarpFrame do). They differ only
    at flickering pixels (measured on Enduro/Pong/MsPacman: mean |diff| < 0.05 gray levels,
    about 1.5% of pixels off by one, a few in 1,000 by more); pass ``atari_backend="rgb"``
    to get bit-identical observations with and without frames.

    ``ale_loop`` (:mod:`rlhp_core.ale_loop`, Enduro's default) steps an ``ALEInterface`` per env to
    read the RAM: ``native``'s observations bit for bit, frames, and ``StepBatch.progress``.

    Score blanking: the reward model must not read the reward off the screen. Each game in
    :data:`SCORE_REGIONS` lists raw-screen rectangles (found by looking at real frames, see
    the table's comments); every 84x84 pixel whose source footprint touches one is set to
    :data:`BLANK_VALUE` in every stacked frame. Enduro blanks everything below the road
    (odometer, day counter, cars-left counter, logo). A game missing from the table is
    not blanked (nothing is guessed): a warning says so and ``info["blank_source"]``
    records it; pass ``blank_regions=`` to give rectangles yourself.

Vector-observation envs (CartPole-v1, Pendulum-v1, Hopper-v5, HalfCheetah-v5, ...)
    gymnasium ``SyncVectorEnv`` with SAME_STEP autoreset; obs float32. With
    ``keep_frames=True`` frames come from ``render_mode="rgb_array"`` (MuJoCo renders
    headless through EGL: ``MUJOCO_GL`` is set to ``egl`` at import when there is no
    display and it is unset). Classic-control rendering needs pygame
    (``gymnasium[classic-control]``); without it frames are ``None`` and a warning says why.

Every env here auto-resets in the SAME step (gymnasium ``AutoresetMode.SAME_STEP``): where an
episode ends, ``obs`` is already the next episode's first observation and ``final_obs``
holds the last observation of the ended one. Returns and lengths are tracked here from the
unclipped rewards, in agent steps.
"""

from __future__ import annotations

import difflib
import os
import pickle
import warnings
from dataclasses import dataclass
from importlib import metadata
from typing import Sequence

if "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
    # Headless MuJoCo rendering; must be set before mujoco is first imported.
    os.environ["MUJOCO_GL"] = "egl"

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

from .config import is_atari

__all__ = [
    "BLANK_VALUE",
    "SCORE_REGIONS",
    "StepBatch",
    "VecEnv",
    "AtariVecEnv",
    "GymVecEnv",
    "make_vec_env",
    "episode_step_limit",
    "atari_game",
]

# ----------------------------------------------------------------------------------------
# Atari constants
# ----------------------------------------------------------------------------------------

RAW_HEIGHT, RAW_WIDTH = 210, 160
"""Every ALE game's screen size."""
OBS_SIZE = 84
FRAME_STACK = 4
NOOP_MAX = 30
ALE_MAX_FRAMES_PER_EPISODE = 108_000
"""ALE's v5 default episode cap in emulator frames (27,000 agent steps at frameskip 4)."""
BLANK_VALUE = 0
"""Gray level written over blanked pixels of the 84x84 observation (black, as in the paper)."""
LUMA = (0.299, 0.587, 0.114)
"""ALE's grayscale palette is round(0.299 R + 0.587 G + 0.114 B) of its RGB palette (checked on Enduro's colours)."""

SCORE_REGIONS: dict[str, tuple[tuple[int, int, int, int], ...]] = {
    # (row0, row1, col0, col1), half-open, in raw 210x160 screen pixels. Found by playing each
    # game (random actions; accelerate on Enduro), saving frames as PNG and looking, then
    # listing which rows change over time. What each covers, and what stays visible:
    # Enduro: the road ends at row 154; rows 161-190 (cols 48-111) hold the odometer, the day
    # number and the cars-left-to-pass counter (the reward!); rows 196-202 the Activision logo.
    "enduro": ((155, 210, 0, 160),),
    # Pong: both scores at rows 1-20; the white top wall starts at row 24 (kept visible).
    "pong": ((0, 24, 0, 160),),
    # Breakout: score, lives and player number at rows 5-14; the grey wall starts at row 17.
    "breakout": ((0, 17, 0, 160),),
    # SpaceInvaders: both players' scores at rows 10-19; the invaders start at row 31.
    "space_invaders": ((0, 25, 0, 160),),
    # Seaquest: score at rows 9-16 (the sky); reserve subs at rows 22-29 stay visible.
    "seaquest": ((0, 19, 0, 160),),
    # Qbert: 5-digit score at rows 6-12, cols 34-70 (lives icons below it stay visible;
    # Q*bert jumping off the top cube reaches row 13, right of col 64).
    "qbert": ((0, 13, 32, 72),),
    # BeamRider: score (rows 10-17), sector (21-28) and enemies-left counter (32-39); the
    # first beam is at row 43.
    "beam_rider": ((0, 42, 0, 160),),
    # MsPacman: score at rows 187-193 under the maze (which ends at row 171); lives and
    # fruit at rows 173-182 stay visible.
    "ms_pacman": ((183, 210, 0, 160),),
}


def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of area-average downsampling (cv2 INTER_AREA for n_in >= n_out)."""
    m = np.zeros((n_out, n_in), dtype=np.float64)
    scale = n_in / n_out
    for i in range(n_out):
        lo, hi = i * scale, (i + 1) * scale
        for j in range(int(np.floor(lo)), min(n_in, int(np.ceil(hi)))):
            m[i, j] = max(0.0, min(hi, j + 1) - max(lo, j))
    return m / scale


def _blank_masks(regions: Sequence[tuple[int, int, int, int]]) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """84x84 bool mask of pixels whose source footprint touches any raw region, and the 84x84 boxes."""
    mask = np.zeros((OBS_SIZE, OBS_SIZE), dtype=bool)
    boxes = []
    sy, sx = RAW_HEIGHT / OBS_SIZE, RAW_WIDTH / OBS_SIZE
    for r0, r1, c0, c1 in regions:
        if not (0 <= r0 < r1 <= RAW_HEIGHT and 0 <= c0 < c1 <= RAW_WIDTH):
            raise ValueError(
                f"blank region {(r0, r1, c0, c1)} must be (row0, row1, col0, col1) with "
                f"0 <= row0 < row1 <= {RAW_HEIGHT} and 0 <= col0 < col1 <= {RAW_WIDTH}"
            )
        # output i covers [i*s, (i+1)*s): it touches [a, b) iff i*s < b and (i+1)*s > a
        i0 = int(np.floor(r0 / sy))
        i1 = int(np.ceil(r1 / sy))
        j0 = int(np.floor(c0 / sx))
        j1 = int(np.ceil(c1 / sx))
        mask[i0:i1, j0:j1] = True
        boxes.append((i0, i1, j0, j1))
    return mask, boxes


class _AtariPreprocessor:
    """RGB (N, 210, 160, 3) uint8 -> blanked gray (N, 84, 84) uint8, vectorised over N.

    Rows: 210 -> 84 is 5 -> 2, so the area weights are exact integers (2, 2, 1 | 1, 2, 2) / 5,
    summed in uint16. Then gray (ALE's luma), then columns 160 -> 84 as at most 3 weighted
    taps per output column. Only numpy ufuncs and gathers, no BLAS: a matmul here would
    start OpenBLAS threads that fight the learner for the CPU (measured 15x slower under load).
    """

    def __init__(self, blank_mask: np.ndarray):
        self.blank_mask = blank_mask
        self.blank_any = bool(blank_mask.any())
        self.luma = tuple(np.float32(w) for w in LUMA)
        cols = _area_matrix(RAW_WIDTH, OBS_SIZE)  # (84, 160)
        taps = int((cols > 0).sum(1).max())
        self.tap_index = np.zeros((taps, OBS_SIZE), dtype=np.intp)
        self.tap_weight = np.zeros((taps, OBS_SIZE), dtype=np.float32)
        for k in range(OBS_SIZE):
            nz = np.flatnonzero(cols[k] > 0)
            self.tap_index[:, k] = nz[-1]
            self.tap_index[: len(nz), k] = nz
            self.tap_weight[: len(nz), k] = cols[k, nz] / 5.0  # /5: the integer row weights' sum

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        n = rgb.shape[0]
        x = rgb.reshape(n, RAW_HEIGHT // 5, 5, RAW_WIDTH * 3)
        rows = np.empty((n, RAW_HEIGHT // 5, 2, RAW_WIDTH * 3), dtype=np.uint16)
        even, odd = rows[:, :, 0], rows[:, :, 1]
        np.add(x[:, :, 0], x[:, :, 1], out=even, dtype=np.uint16)
        even <<= 1
        even += x[:, :, 2]
        np.add(x[:, :, 3], x[:, :, 4], out=odd, dtype=np.uint16)
        odd <<= 1
        odd += x[:, :, 2]
        rows = rows.reshape(n, OBS_SIZE, RAW_WIDTH, 3)
        gray = rows[..., 0] * self.luma[0]
        gray += rows[..., 1] * self.luma[1]
        gray += rows[..., 2] * self.luma[2]
        out = gray[:, :, self.tap_index[0]] * self.tap_weight[0]
        for t in range(1, len(self.tap_index)):
            out += gray[:, :, self.tap_index[t]] * self.tap_weight[t]
        out += 0.5
        out = out.astype(np.uint8)
        if self.blank_any:
            out[:, self.blank_mask] = BLANK_VALUE
        return out


# ----------------------------------------------------------------------------------------
# Interface
# ----------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------
# Atari
# ----------------------------------------------------------------------------------------


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:  # pragma: no cover
        return "unknown"


ATARI_BACKENDS = ("auto", "native", "rgb", "ale_loop")
"""'auto': 'ale_loop' for Enduro (its RAM gives ``progress``), else 'native' ('rgb' with frames)."""


def _atari_blanking(env_id: str, game: str, blank_regions) -> tuple[tuple, list, str, np.ndarray]:
    """(raw regions, their 84x84 boxes, where they came from, 84x84 mask); warns for a game without regions."""
    if blank_regions is not None:
        regions = tuple(tuple(int(v) for v in r) for r in blank_regions)
        blank_source = "given by caller"
    elif game in SCORE_REGIONS:
        regions = SCORE_REGIONS[game]
        blank_source = f"SCORE_REGIONS[{game!r}]"
    else:
        regions = ()
        blank_source = f"none: {game!r} has no entry in rlhp_core.envs.SCORE_REGIONS (pass blank_regions=...)"
        warnings.warn(f"{env_id}: no score-blanking regions known for game {game!r}; the reward model may read "
                      f"the score off the screen. Known games: {sorted(SCORE_REGIONS)}", stacklevel=4)
    mask, boxes = _blank_masks(regions)
    return regions, boxes, blank_source, mask


def atari_info(env_id: str, game: str, num_envs: int, *, frameskip: int, sticky_actions: float, max_frames: int,
               obs_shape: tuple, regions, boxes, blank_source: str, keep_frames: bool) -> dict:
    """The settings every Atari backend records with its results (ALE asks for frameskip, sticky
    actions and the version with every result); each backend adds its own backend and pipeline."""
    return {
        "env_id": env_id,
        "game": game,
        "num_envs": num_envs,
        "frameskip": frameskip,
        "sticky_actions": float(sticky_actions),
        "repeat_action_probability": float(sticky_actions),
        "max_episode_steps": max_frames // frameskip,
        "max_num_frames_per_episode": max_frames,
        "noop_max": NOOP_MAX,
        "maxpool_last_two_frames": True,
        "obs_shape": list(obs_shape),
        "frame_stack_padding": "zeros after reset",
        "terminal_on_life_loss": False,
        "fire_reset": False,
        "reward_clipping": False,
        "full_action_space": False,
        "autoreset_mode": "same_step",
        "blank_regions": [list(r) for r in regions],
        "blank_regions_84": [list(b) for b in boxes],
        "blank_value": BLANK_VALUE,
        "blank_source": blank_source,
        "frames": "max-pooled RGB 210x160 (unblanked)" if keep_frames else None,
        "ale_py": _version("ale-py"),
        "gymnasium": _version("gymnasium"),
    }


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


# ----------------------------------------------------------------------------------------
# gymnasium vector-observation envs
# ----------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------
# Construction
# ----------------------------------------------------------------------------------------

_ale_registered = False


def _register_ale() -> None:
    global _ale_registered
    if not _ale_registered:
        import ale_py

        gym.register_envs(ale_py)
        _ale_registered = True


def _spec(env_id: str):
    """gymnasium spec for env_id, or ValueError naming the id and what is allowed."""
    if not isinstance(env_id, str) or not env_id:
        raise ValueError(f"env_id must be a non-empty string, got {env_id!r}")
    _register_ale()
    try:
        return gym.spec(env_id)
    except gym.error.Error as exc:
        close = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.6)
        hint = f" Did you mean {close}?" if close else ""
        raise ValueError(
            f"unknown env id {env_id!r} ({exc}).{hint} Allowed: an Atari game as ALE/<Game>-v5 "
            f"(e.g. ALE/Enduro-v5, ALE/Pong-v5) or any registered gymnasium env with vector "
            f"observations (e.g. CartPole-v1, Pendulum-v1, Hopper-v5, HalfCheetah-v5)."
        ) from None


def atari_game(env_id: str) -> str | None:
    """ALE ROM name ('enduro') for an Atari id we accept, None for a non-Atari id.

    Accepted Atari forms: ``ALE/<Game>-v5`` and ``<Game>NoFrameskip-v4`` (the paper's). Other
    ale-py ids (``Enduro-v4``, ``ALE/Enduro-ram-v5``...) raise ValueError: their built-in
    settings differ and the rest of the project recognises only these two forms.
    """
    spec = _spec(env_id)
    if not str(spec.entry_point).startswith("ale_py"):
        return None
    kw = spec.kwargs
    ok_form = is_atari(env_id) and (env_id.endswith("-v5") or env_id.endswith("NoFrameskip-v4"))
    if not ok_form or kw.get("obs_type", "rgb") != "rgb":
        raise ValueError(
            f"Atari env id {env_id!r} is not supported; allowed: ALE/<Game>-v5 (e.g. ALE/Enduro-v5) "
            f"or <Game>NoFrameskip-v4, with image observations. Frameskip and sticky actions are "
            f"set by make_vec_env's arguments."
        )
    return kw["game"]


def episode_step_limit(env_id: str, max_episode_steps: int | None = None, frameskip: int = 4) -> int | None:
    """The longest episode in agent steps, if the env has a limit (None: unlimited).

    ``max_episode_steps`` overrides the env's own limit. Atari: ALE's 108,000 frames / frameskip.
    """
    if max_episode_steps is not None:
        if int(max_episode_steps) < 1:
            raise ValueError(f"max_episode_steps must be >= 1 or None, got {max_episode_steps}")
        return int(max_episode_steps)
    if atari_game(env_id) is not None:
        return ALE_MAX_FRAMES_PER_EPISODE // frameskip
    return _spec(env_id).max_episode_steps


def make_vec_env(
    env_id: str,
    num_envs: int,
    *,
    sticky_actions: float = 0.0,
    frameskip: int = 4,
    max_episode_steps: int | None = None,
    keep_frames: bool = False,
    blank_regions: Sequence[tuple[int, int, int, int]] | None = None,
    num_threads: int | None = None,
    atari_backend: str = "auto",
) -> VecEnv:
    """Build N envs of ``env_id`` stepped together (see the module doc for what each kind does).

    Args:
        env_id: ``ALE/<Game>-v5`` (Atari) or a registered vector-observation gymnasium id.
        num_envs: number of parallel envs (>= 1).
        sticky_actions: Atari repeat_action_probability in [0, 1]; 0.0 = the paper's setting.
            Must be 0 for non-Atari envs.
        frameskip: Atari agent-step length in frames (the paper: 4). Ignored for non-Atari envs.
        max_episode_steps: truncate episodes after this many agent steps (None: the env's own
            limit; Atari: 108,000 frames = 27,000 steps at frameskip 4).
        keep_frames: also return raw RGB frames (for people to label).
        blank_regions: Atari only: raw-screen rectangles (row0, row1, col0, col1) to blank
            instead of the game's entry in :data:`SCORE_REGIONS` (``()`` blanks nothing).
        num_threads: Atari emulator threads, or worker processes for 'ale_loop' (None:
            min(num_envs, cores available)).
        atari_backend: 'auto' ('ale_loop' for Enduro, else 'native', or 'rgb' with frames),
            'native' (ALE's C++ preprocessing, fastest), 'rgb' (ALE RGB + numpy preprocessing;
            frames) or 'ale_loop' (:mod:`rlhp_core.ale_loop`: native's obs, frames, RAM progress).
    """
    if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
        raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
    num_envs = int(num_envs)
    try:
        sticky = float(sticky_actions)
    except (TypeError, ValueError):
        raise ValueError(f"sticky_actions must be a number in [0, 1], got {sticky_actions!r}") from None
    if not 0.0 <= sticky <= 1.0:
        raise ValueError(f"sticky_actions must be in [0, 1] (0.0 = paper, 0.25 = ALE v5 default), got {sticky_actions!r}")
    if isinstance(frameskip, bool) or not isinstance(frameskip, (int, np.integer)) or frameskip < 1:
        raise ValueError(f"frameskip must be an integer >= 1, got {frameskip!r}")
    if max_episode_steps is not None and (
        isinstance(max_episode_steps, bool) or not isinstance(max_episode_steps, (int, np.integer)) or max_episode_steps < 1
    ):
        raise ValueError(f"max_episode_steps must be an integer >= 1 or None, got {max_episode_steps!r}")
    if num_threads is not None and (not isinstance(num_threads, (int, np.integer)) or num_threads < 1):
        raise ValueError(f"num_threads must be an integer >= 1 or None, got {num_threads!r}")
    if atari_backend not in ATARI_BACKENDS:
        raise ValueError(f"atari_backend must be one of {ATARI_BACKENDS}, got {atari_backend!r}")
    game = atari_game(env_id)
    if game is not None:
        common = dict(sticky_actions=sticky, frameskip=int(frameskip), keep_frames=bool(keep_frames),
                      max_episode_steps=None if max_episode_steps is None else int(max_episode_steps),
                      blank_regions=blank_regions)
        if atari_backend == "ale_loop" or atari_backend == "auto" and game == "enduro":
            from .ale_loop import AleLoopVecEnv  # imports this module

            workers = min(num_envs, int(num_threads or _default_threads(num_envs)))
            return AleLoopVecEnv(env_id, game, num_envs, num_workers=workers, **common)
        return AtariVecEnv(env_id, game, num_envs, num_threads=num_threads, backend=atari_backend, **common)
    if sticky != 0.0:
        raise ValueError(f"sticky_actions applies to Atari envs only; {env_id} needs sticky_actions=0.0, got {sticky}")
    if blank_regions is not None:
        raise ValueError(f"blank_regions applies to Atari envs only, not {env_id}")
    return GymVecEnv(
        env_id,
        num_envs,
        max_episode_steps=None if max_episode_steps is None else int(max_episode_steps),
        keep_frames=bool(keep_frames),
    )

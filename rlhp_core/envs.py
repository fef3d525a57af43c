"""Vectorised environments: Atari with the paper's preprocessing, and gymnasium vector envs.

One small interface, :class:`VecEnv`, that the learner steps; :func:`make_vec_env` chooses a
backend and builds it. Where each part is:

- :mod:`rlhp_core.vec_env`: the interface (:class:`VecEnv`, :class:`StepBatch`);
- :mod:`rlhp_core.atari_vec_env`: the ``native`` and ``rgb`` Atari backends;
- :mod:`rlhp_core.ale_loop`: the ``ale_loop`` Atari backend (with :mod:`rlhp_core.ale_env_group`
  and :mod:`rlhp_core.ram_progress`);
- :mod:`rlhp_core.atari_preprocessing`: what every Atari backend shares: the constants, score
  blanking (:data:`SCORE_REGIONS`), the resizes, the recorded settings;
- :mod:`rlhp_core.gym_vec_env`: gymnasium's vector-observation envs;
- this module: the env id checks and the factory.

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
        cv2 ``INTER_AREA`` resize and stacking in C++; only the blanking happens in Python.
      * ``rgb`` (default with ``keep_frames=True``): ALE returns the max-pooled RGB screen
        (210x160x3), kept unblanked as the frame people see (``StepBatch.frames``); gray
        (ALE's own luma, 0.299 R + 0.587 G + 0.114 B, which reproduces its gray palette),
        84x84 area resize (equal to cv2 ``INTER_AREA`` within 1 gray level), blanking and
        stacking happen in vectorised numpy (about 1 ms for 16 envs, no BLAS threads).
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
holds the last observation of the ended one. Returns and lengths are tracked by VecEnv from the
unclipped rewards, in agent steps.
"""

from __future__ import annotations

import difflib
from typing import Sequence

import gymnasium as gym
import numpy as np

from .atari_preprocessing import ALE_MAX_FRAMES_PER_EPISODE
from .atari_vec_env import AtariVecEnv, _default_threads
from .config import is_atari
from .gym_vec_env import GymVecEnv
from .vec_env import VecEnv

__all__ = ["make_vec_env", "episode_step_limit", "atari_game"]

ATARI_BACKENDS = ("auto", "native", "rgb", "ale_loop")
"""'auto': 'ale_loop' for Enduro (its RAM gives ``progress``), else 'native' ('rgb' with frames)."""


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
            from .ale_loop import AleLoopVecEnv  # imports ale_py: loaded only when it is used

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

"""A trained run, outside the learner: its config, policy, reward model and environment.

A run directory (``python -m rlhp_core.train --run-dir D``) holds everything needed to use what
was learned elsewhere, but only the learner knew how to put it back together. This module does
it without the learner (no run lock, no label store, no labeler), so it can read a run that is
still training: checkpoints are renamed into place whole (rlhp_core/checkpoint.py), and only
verified ones are read.

- :func:`read_config`: the run's resolved ``TrainConfig`` (config.json).
- :func:`load_policy`: the newest verified checkpoint's policy, as a :class:`TrainedPolicy`
  with ``predict(obs, deterministic)``.
- :func:`load_reward_model`: the learned reward r̂ as a :class:`RewardEnsemble`, from the newest
  verified checkpoint (the same step as the policy) or ``reward_model.pt``.
- :func:`make_vec_env_for` / :func:`make_env`: the run's environment with the run's settings
  (sticky actions, frameskip, episode limit, Atari preprocessing and score blanking), as the
  project's :class:`VecEnv` or as one ``gymnasium.Env`` (:class:`RunEnv`) for outside code such
  as Stable-Baselines3. The observation is the one the policy and r̂ were trained on: on Atari
  the blanked ``(4, 84, 84) uint8`` stack, which no stock gymnasium wrapper chain reproduces.

See docs/using-a-trained-run.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from .checkpoint import load_latest, read_checkpoint
from .config import TrainConfig, resolve
from .envs import make_vec_env
from .reward import RewardEnsemble
from .rl import make_algo
from .rl_settings import RLSettings
from .vec_env import VecEnv

__all__ = ["RunEnv", "RunError", "TrainedPolicy", "load_policy", "load_reward_model", "make_env", "make_vec_env_for",
           "read_config", "real_time_fps"]


class RunError(ValueError):
    """A path that is not a usable run (or run file); the message names it and says what was expected.
    A ValueError, so that the commands report it in one line and exit 2."""


def _run_dir(run_dir: str | Path) -> Path:
    path = Path(run_dir)
    if not path.exists():
        raise RunError(f"run directory {str(run_dir)!r} does not exist")
    if not path.is_dir():
        raise RunError(f"{str(run_dir)!r} is a file, not a run directory")
    if not (path / "config.json").is_file():
        raise RunError(f"{str(run_dir)!r} is not a run directory: it has no config.json "
                       f"(expected a folder made by python -m rlhp_core.train --run-dir)")
    return path


def read_config(run_dir: str | Path) -> TrainConfig:
    """The run's resolved config (config.json). Raises RunError for a folder that is not a run or a
    config this code cannot read."""
    path = _run_dir(run_dir) / "config.json"
    try:
        return resolve(TrainConfig.from_json(path.read_text()))
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # ConfigError and JSONDecodeError are ValueErrors
        raise RunError(f"{path} is not a config this code can read: {exc}") from None


def _latest_state(run_dir: Path) -> tuple[int, dict]:
    """(step, state) of the newest verified checkpoint; RunError when the run has none yet."""
    blob = load_latest(run_dir)  # CheckpointError (a ValueError) when none verifies
    if blob is None:
        raise RunError(f"run directory {str(run_dir)!r} has no checkpoint yet (checkpoints/step-N appear "
                       f"every checkpoint_every steps and at the end of a run)")
    return int(blob["step"]), blob["state"]


# -- environments --------------------------------------------------------------------------------------------------
def make_vec_env_for(cfg: TrainConfig, num_envs: int, *, keep_frames: bool = False,
                     max_episode_steps: int | None = None) -> VecEnv:
    """``num_envs`` envs of the run's env with the run's settings (the learner's make_vec_env call).

    ``max_episode_steps`` (agent steps) replaces the run's own limit when given: an evaluation may cut
    episodes shorter than training did. ``keep_frames`` asks for RGB frames (Atari: the ``rgb`` or
    ``ale_loop`` backend; classic control: pygame), which ``VecEnv.keep_frames`` confirms.
    """
    limit = cfg.max_episode_steps if max_episode_steps is None else max_episode_steps
    return make_vec_env(cfg.env_id, num_envs, sticky_actions=cfg.sticky_actions, frameskip=cfg.frameskip,
                        max_episode_steps=limit, keep_frames=keep_frames)


def real_time_fps(vec: VecEnv) -> float:
    """Frames per second that play the env at its own speed: ALE runs at 60 frames/s and an agent
    step is frameskip of them; vector envs have no common clock, so 30."""
    return 60 / int(vec.info["frameskip"]) if vec.is_atari else 30.0


class RunEnv(gym.Env):
    """One env of a run as a ``gymnasium.Env``: the project's :class:`VecEnv` with a single env.

    Why not ``gym.make``: on Atari the policy and the reward model read the project's own
    observation (ALE C++ or ale_loop preprocessing, 84x84 gray, 4-frame stack zero-padded after
    reset, score regions blanked), and no chain of stock wrappers gives it bit for bit. Going
    through the VecEnv gives exactly what the learner saw, for every env kind, by one code path.
    (For vector-observation envs ``gym.make(env_id)`` gives the same observations, as float32 here.)

    Episodes: the VecEnv auto-resets in the step that ends an episode. ``step`` returns that
    episode's final observation, as gymnasium expects, and keeps the new episode's first one for
    the next ``reset()`` without a seed. ``reset(seed=S)`` reseeds the env; ``reset()`` mid-episode
    starts a new one seeded from ``np_random``, so a seeded reset determines everything after it.

    ``info`` carries ``progress`` where the env measures it (Enduro's odometer distance).
    ``render_mode="rgb_array"`` returns the screen of the latest observation (Atari: the unblanked
    RGB frame; classic control needs pygame). On Atari other than Enduro frames come from the
    ``rgb`` backend, whose observations differ from ``native``'s at flickering pixels (rlhp_core/envs.py).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}  # noqa: RUF012 - gymnasium's own convention

    def __init__(self, vec: VecEnv, render_mode: str | None = None):
        if vec.num_envs != 1:
            raise ValueError(f"RunEnv wraps a VecEnv of 1 env, got num_envs={vec.num_envs}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if render_mode is not None and not vec.keep_frames:
            raise ValueError(f"{vec.env_id} cannot render frames here: {vec.info.get('frames')}")
        self._vec = vec
        self.render_mode = render_mode
        self.action_space = vec.action_space
        if vec.is_atari:
            self.observation_space = gym.spaces.Box(0, 255, vec.obs_shape, np.uint8)
        else:  # the VecEnv casts to float32; bounds are not carried over (CartPole's are mostly infinite anyway)
            self.observation_space = gym.spaces.Box(-np.inf, np.inf, vec.obs_shape, np.float32)
        self.metadata = {**self.metadata, "render_fps": real_time_fps(vec)}
        self.env_info = vec.info
        """The VecEnv's settings record (env id, frameskip, sticky actions, blanking, versions...)."""
        self._pending: tuple[np.ndarray, np.ndarray | None] | None = None
        self._frame: np.ndarray | None = None
        self._closed = False

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is None and self._pending is not None:
            obs, frames = self._pending
        else:
            # ALE takes 32-bit seeds; a seeded reset fixes np_random and so this draw
            env_seed = seed if seed is not None else int(self.np_random.integers(2**31 - 1))
            obs, frames = self._vec.reset(seed=env_seed)
        self._pending = None
        self._frame = None if frames is None else frames[0]
        return obs[0].copy(), {}

    def step(self, action):
        out = self._vec.step(np.asarray(action)[None])
        terminated, truncated = bool(out.terminated[0]), bool(out.truncated[0])
        if terminated or truncated:
            obs = out.final_obs[0].copy()
            self._pending = (out.obs, out.frames)  # the next episode's start (its frame too)
        else:
            obs = out.obs[0].copy()
            self._frame = None if out.frames is None else out.frames[0]
        info = {} if out.progress is None else {"progress": float(out.progress[0])}
        return obs, float(out.reward[0]), terminated, truncated, info

    def render(self):
        return None if self.render_mode is None or self._frame is None else self._frame.copy()

    def close(self):
        if not self._closed:
            self._closed = True
            self._vec.close()


def make_env(run: str | Path | TrainConfig, *, render_mode: str | None = None,
             max_episode_steps: int | None = None) -> RunEnv:
    """One env of a run (a run directory or its config) as a ``gymnasium.Env`` (:class:`RunEnv`)."""
    cfg = run if isinstance(run, TrainConfig) else read_config(run)
    vec = make_vec_env_for(cfg, 1, keep_frames=render_mode is not None, max_episode_steps=max_episode_steps)
    try:
        return RunEnv(vec, render_mode)
    except ValueError:
        vec.close()
        raise


# -- the policy ----------------------------------------------------------------------------------------------------
@dataclass
class TrainedPolicy:
    """A run's policy at one checkpoint. ``predict(obs, deterministic)`` takes one observation or a
    batch ``(N, *obs_shape)`` and gives the action(s): the mode (argmax, Gaussian mean) when
    deterministic, else a sample. Box actions come unclipped, as the learner's; the env clips them."""

    algo: object
    """The A2C or PPO of rlhp_core/rl.py, its weights loaded."""
    config: TrainConfig
    step: int
    """Agent steps of training behind this checkpoint."""

    def predict(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        return self.algo.predict(obs, deterministic)

    __call__ = predict


def load_policy(run_dir: str | Path, *, env: VecEnv | RunEnv | None = None, device: str | torch.device = "cpu",
                seed: int | None = None) -> TrainedPolicy:
    """The policy of the run's newest verified checkpoint.

    The network is rebuilt from the settings the checkpoint itself recorded (``algo.settings``), so
    it matches the weights whatever the defaults are today; the observation and action spaces come
    from ``env`` (a VecEnv or RunEnv of the run) or, without one, from a one-env VecEnv made and
    closed here. ``seed`` reseeds the generator of stochastic ``predict`` (None: the checkpoint's).
    """
    path = _run_dir(run_dir)
    cfg = read_config(path)
    step, state = _latest_state(path)
    algo_state = dict(state["algo"])
    try:
        settings = RLSettings(**algo_state["settings"])
    except TypeError as exc:  # a setting this code does not know: the network may not be the one it builds
        raise RunError(f"the policy in {path / 'checkpoints'} was saved with settings this code cannot "
                       f"rebuild: {exc}") from None
    made = env is None
    if made:
        env = make_vec_env_for(cfg, 1)
    try:
        if isinstance(env, VecEnv):
            obs_shape, obs_dtype = env.obs_shape, env.obs_dtype
        else:
            obs_shape, obs_dtype = env.observation_space.shape, env.observation_space.dtype
        algo = make_algo(algo_state["algo"], obs_shape, obs_dtype, env.action_space, settings, device, cfg.seed)
    finally:
        if made:
            env.close()
    if seed is not None:  # through the state dict, the algo's one way in to its generators
        algo_state["eval_gen"] = torch.Generator(device=torch.device(device)).manual_seed(int(seed)).get_state()
    try:
        algo.load_state_dict(algo_state)
    except (RuntimeError, ValueError) as exc:  # e.g. a checkpoint of another env's shapes
        raise RunError(f"the policy in {path / 'checkpoints'} does not fit {cfg.env_id}'s spaces: {exc}") from None
    return TrainedPolicy(algo, cfg, step)


# -- the reward model ----------------------------------------------------------------------------------------------
def _ensemble_state(source: Path) -> tuple[TrainConfig, dict, str]:
    """(config, ensemble state dict, where it came from) for a run dir, a checkpoint dir or a reward_model.pt."""
    if source.is_dir() and (source / "config.json").is_file():  # a run directory
        cfg = read_config(source)
        if cfg.reward != "preferences":
            raise RunError(f"{str(source)!r} is a true-reward baseline run (reward={cfg.reward!r}): it has no reward model")
        blob = load_latest(source)
        if blob is not None:
            return cfg, blob["state"]["ensemble"], f"{source / 'checkpoints'} (step {blob['step']})"
        if (source / "reward_model.pt").is_file():
            return cfg, _load_state_file(source / "reward_model.pt"), str(source / "reward_model.pt")
        raise RunError(f"run directory {str(source)!r} has no reward model yet: no checkpoint and no reward_model.pt")
    if source.is_dir() and (source / "COMPLETE").is_file():  # checkpoints/step-N
        blob = read_checkpoint(source)
        if "ensemble" not in blob["state"]:
            raise RunError(f"checkpoint {str(source)!r} holds no reward model (a true-reward baseline run)")
        return read_config(source.parent.parent), blob["state"]["ensemble"], str(source)
    if source.is_file():  # reward_model.pt, with the run's config.json beside it
        if not (source.parent / "config.json").is_file():
            raise RunError(f"{str(source)!r} has no config.json beside it: the reward model's settings "
                           f"(ensemble size, reward std, dropout...) are read from the run's config.json")
        return read_config(source.parent), _load_state_file(source), str(source)
    if not source.exists():
        raise RunError(f"{str(source)!r} does not exist; expected a run directory, a checkpoints/step-N "
                       f"directory or a reward_model.pt")
    raise RunError(f"{str(source)!r} is neither a run directory (no config.json), a checkpoint directory "
                   f"(no COMPLETE) nor a reward_model.pt")


def _load_state_file(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain values only
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a truncated or alien file
        raise RunError(f"{path} is not a readable reward model ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or "signature" not in state:
        raise RunError(f"{path} is not a RewardEnsemble state dict (no 'signature')")
    return state


def load_reward_model(source: str | Path, *, device: str | torch.device = "cpu") -> RewardEnsemble:
    """The learned reward of a run: a :class:`RewardEnsemble` whose ``predict(obs, actions)`` is r̂,
    the normalised ensemble mean the policy was trained on.

    ``source``: a run directory (its newest verified checkpoint's ensemble, the same step as
    :func:`load_policy`'s policy; ``reward_model.pt`` when it has no checkpoint), a
    ``checkpoints/step-N`` directory, or a ``reward_model.pt`` with the run's config.json beside it.
    The ensemble is rebuilt from config.json's settings and the spaces its state records (the
    learner built it from the env's spaces; ``load_state_dict`` checks they agree), so no env is made.
    """
    cfg, state, where = _ensemble_state(Path(source))
    sig = state["signature"]
    actions = sig["n_actions"] if sig["n_actions"] is not None else tuple(sig["act_shape"])
    model = RewardEnsemble.from_config(cfg, sig["obs_shape"], actions, device=device)
    try:
        model.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise RunError(f"the reward model in {where} does not fit its run's config.json: {exc}") from None
    return model


"""The learner: one loop over the paper's three activities (section 2.2).

The policy acts in vectorised envs and is trained by RL (A2C or PPO) on the rewards of its
reward source (rlhp_core/reward_source.py): r̂ learned from preferences, whose queries, answers
and fitting hang on the loop at its refit points, or the env's reward for the baseline. The
loop records through a RunRecorder (rlhp_core/recording.py) and checkpoints its whole state, so
rerunning the same command on the same run directory resumes it from its newest complete
checkpoint, bit for bit where the envs can save theirs.

Run ``python -m rlhp_core.train --help``. The command line (rlhp_core/cli.py) and ``bench.sweep``
build the labeler a preference run needs (oracles/) and hand it in: the core knows nothing of
who answers.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .allocator import active_allocator
from .buffer import SegmentBuffer
from .checkpoint import CheckpointError, load_latest, save_checkpoint
from .config import TrainConfig, resolve, resumed_config, save_config
from .envs import episode_step_limit, make_vec_env
from .episode_stats import EpisodeStats
from .labeler import LabelerFactory
from .recording import METRIC_KEYS, OnMetrics, RunRecorder
from .reward_source import LearnedReward, RewardSource, TrueReward
from .rl import Rollout, make_algo
from .rl_settings import RLSettings
from .run_lock import RunLock


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available here; use 'cpu' or 'auto'")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"device {name!r} is not valid; allowed: 'auto', 'cpu', 'cuda', 'cuda:N'") from exc


class Learner:
    """One run: its envs, policy, reward source and recorder, and the loop that drives them.

    ``labeler`` builds the labeler of a preference run (rlhp_core.labeler.LabelerFactory);
    ``on_metrics(step, metrics)`` sees every metrics row; ``should_stop()`` is asked after every
    update (a pruned sweep trial, a stop button): the run then checkpoints and returns.
    """

    def __init__(self, cfg: TrainConfig, *, labeler: LabelerFactory | None = None,
                 on_metrics: OnMetrics | None = None, should_stop: Callable[[], bool] | None = None):
        asked = cfg
        self.cfg = cfg = resolve(cfg)
        self.run_dir = Path(cfg.run_dir)
        self.should_stop = should_stop
        self.device = resolve_device(cfg.device)
        learned = cfg.reward == "preferences"
        if learned and labeler is None:
            raise ValueError("a preference run needs a labeler: pass labeler=oracles.ConfiguredLabeler(cfg.labeler), "
                             "or run through rlhp_core.cli.train, which builds the one cfg.labeler names")
        limit = episode_step_limit(cfg.env_id, cfg.max_episode_steps)
        if learned and limit is not None and cfg.segment_length > limit:
            raise ValueError(
                f"segment_length {cfg.segment_length} is longer than an episode of {cfg.env_id} "
                f"({limit} steps); allowed: segment_length <= {limit}"
            )
        self.recorder = RunRecorder(self.run_dir, on_metrics)
        self.env = self.reward = None
        # one learner per run directory, from before its config is read until close()
        self._lock = RunLock(self.run_dir).acquire()
        try:
            self._open(asked, labeler if learned else None)
        except BaseException:
            self.close()
            raise

    def _open(self, asked: TrainConfig, labeler: LabelerFactory | None) -> None:
        """Everything of __init__ that reads or writes the run directory (under its lock)."""
        self.cfg = cfg = resumed_config(self.run_dir, asked, self.cfg)
        keep_frames = labeler is not None and labeler.wants_frames
        self.env = make_vec_env(cfg.env_id, cfg.num_envs, sticky_actions=cfg.sticky_actions, frameskip=cfg.frameskip,
                                max_episode_steps=cfg.max_episode_steps, keep_frames=keep_frames)
        save_config(cfg, self.run_dir)
        (self.run_dir / "env_info.json").write_text(json.dumps(self.env.info, indent=2, sort_keys=True, default=str))

        torch.manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        space = self.env.action_space
        self.action_shape = tuple(space.shape or ())
        self.action_dtype = np.int64 if not self.action_shape else np.float32
        settings = RLSettings(lr=cfg.lr, gamma=cfg.gamma, ent_coef=cfg.ent_coef, n_steps=cfg.n_steps,
                              num_envs=cfg.num_envs, total_steps=cfg.lr_horizon,
                              anneal_lr=cfg.lr_schedule == "linear")
        self.algo = make_algo(cfg.algo, self.env.obs_shape, self.env.obs_dtype, space, settings, self.device, cfg.seed)
        capacity = max(4 * cfg.segment_length, cfg.n_steps)
        self.buffer = SegmentBuffer(capacity, cfg.num_envs, self.env.obs_shape, self.env.obs_dtype,
                                    self.action_shape, self.action_dtype, keep_frames)
        if labeler is None:
            self.reward: RewardSource = TrueReward(clip=self.env.is_atari)
        else:
            self.reward = LearnedReward(cfg, env=self.env, buffer=self.buffer, rng=self.rng, device=self.device,
                                        labeler=labeler, store_path=self.run_dir / "labels.sqlite",
                                        status_path=self.recorder.status_path,
                                        frames_per_step=cfg.frameskip if self.env.is_atari else 1)

        # counters: all restored on resume
        self.env_steps = 0
        self.iteration = 0
        self.phase = self.reward.start_phase
        self.episodes = EpisodeStats(cfg.num_envs)
        self.resume_count = 0
        self.fresh = 0  # initial labels: steps since the last round of queries
        self._obs = self._frames = None  # what the envs show now (the loop acts on it next)
        self._env_restored = False  # True: the checkpoint held the envs' own state (VecEnv.get_state)
        self._restore()

    # -- checkpoints ---------------------------------------------------------------------------------
    def _restore(self) -> None:
        blob = load_latest(self.run_dir)
        if blob is None:
            self.reward.start_fresh()
            self.recorder.truncate(0)
            return
        s = blob["state"]
        if s.get("env_id") != self.cfg.env_id:
            raise CheckpointError(f"checkpoint in {self.run_dir} is for env {s.get('env_id')!r}, not {self.cfg.env_id!r}")
        self.algo.load_state_dict(s["algo"])
        c = s["counters"]
        self.env_steps, self.iteration, self.phase = c["env_steps"], c["iteration"], c["phase"]
        self.resume_count = c["resume_count"] + 1
        self.episodes.load_state_dict(c)
        if "envs" in s:
            e = s["envs"]
            self.env.set_state(e["state"])
            self.buffer.load_state_dict(e["buffer"])
            self.episodes.load_in_flight_state(e["episodes"])
            self._obs, self._frames, self.fresh = e["obs"], e["frames"], e["fresh"]
            self._env_restored = True
        self.rng.bit_generator.state = s["numpy_rng"]
        torch.set_rng_state(s["torch_rng"])
        self.reward.load(s)
        self.recorder.truncate(self.env_steps)

    def checkpoint(self) -> None:
        state = {
            "env_id": self.cfg.env_id,
            "algo": self.algo.state_dict(),
            "counters": dict(env_steps=self.env_steps, iteration=self.iteration, phase=self.phase,
                             resume_count=self.resume_count, **self.episodes.state_dict()),
            "numpy_rng": self.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
        }
        self.reward.save(state)
        env_state = self.env.get_state()
        if env_state is not None:  # then the resumed run continues these very episodes, bit for bit
            state["envs"] = {"state": env_state, "obs": self._obs, "frames": self._frames, "fresh": self.fresh,
                             "buffer": self.buffer.state_dict(), "episodes": self.episodes.in_flight_state()}
        save_checkpoint(self.run_dir, self.env_steps, state)

    # -- what the reward source and the loop use --------------------------------------------------------
    def write_status(self) -> None:
        self.recorder.write_status({
            "env_steps": self.env_steps, "total_steps": self.cfg.total_steps, "phase": self.phase,
            **self.reward.status(),
            "episode_return": float(np.mean(self.episodes.recent)) if self.episodes.recent else None,
            "updated_at": time.time(),
        })

    def step_envs(self):
        """One step of all envs with the current policy; fills the segment buffer."""
        obs = self._obs
        actions, extras = self.algo.act(obs)
        out = self.env.step(actions)
        ended = out.terminated | out.truncated
        self.buffer.add(obs, actions, out.reward, ended, self._frames, truncations=out.truncated & ~out.terminated,
                        progress=out.progress)
        self.env_steps += self.cfg.num_envs
        self.episodes.step(out.reward, ended, out.progress, at_step=self.env_steps)
        self._obs, self._frames = out.obs, out.frames
        return actions, extras, out

    def tick(self) -> None:
        self.recorder.tick(self.env_steps)

    def stop_requested(self) -> bool:
        return self.should_stop is not None and self.should_stop()

    # -- the loop --------------------------------------------------------------------------------------
    def _rollout(self) -> Rollout:
        """``n_steps`` steps of every env. Time-limit ends are always bootstrapped from the final
        obs (as if the episode went on: no information about the reward leaks); terminations are
        shown to the agent only with ``episode_signal``."""
        T, N = self.cfg.n_steps, self.cfg.num_envs
        obs = np.zeros((T, N, *self.env.obs_shape), dtype=self.env.obs_dtype)
        actions = np.zeros((T, N, *self.action_shape), dtype=self.action_dtype)
        rewards = np.zeros((T, N), dtype=np.float32)
        dones = np.zeros((T, N), dtype=bool)
        timeouts = np.zeros((T, N), dtype=bool)
        finals = np.zeros_like(obs)
        extras = []
        for t in range(T):
            obs[t] = self._obs
            actions[t], ex, out = self.step_envs()
            extras.append(ex)
            rewards[t] = out.reward
            timeouts[t] = out.truncated & ~out.terminated
            dones[t] = timeouts[t] | (out.terminated if self.cfg.episode_signal else False)
            finals[t] = out.final_obs
        return Rollout(obs=obs, actions=actions, rewards=rewards, dones=dones, timeouts=timeouts,
                       final_values_obs=finals, last_obs=self._obs,
                       extras={k: np.stack([e[k] for e in extras]) for k in extras[0]})

    def _record(self, rl_metrics: dict, sps: float) -> None:
        finished = self.episodes.window_episodes()
        metrics = {**rl_metrics, **self.episodes.pop_window(), "charts/SPS": sps, **self.reward.metrics()}
        metrics = {k: float(v) for k, v in metrics.items() if v is not None and k in METRIC_KEYS}
        self.recorder.log(self.env_steps, metrics, finished)
        self.recorder.show(metrics, self.episodes.recent, self.env.progress_name)

    def run(self) -> dict:
        cfg = self.cfg
        if cfg.progress:
            self.recorder.open_bar(cfg.total_steps, self.env_steps, f"{cfg.env_id} {cfg.algo} {cfg.reward}")
        t_start, steps_at_start = time.time(), self.env_steps
        if not self._env_restored:  # a new run, or a resume whose envs could not be saved: a new seed per resume
            self._obs, self._frames = self.env.reset(seed=cfg.seed + 7919 * self.resume_count)
        last_log = self.env_steps - self.env_steps % cfg.log_every
        last_ckpt, last_status = self.env_steps, 0.0
        sps_t, sps_steps = time.time(), self.env_steps
        try:
            stopped = self.phase != "training" and not self.reward.warm_up(self)
            while not stopped and self.env_steps < cfg.total_steps:
                rollout = self._rollout()
                self.reward.rewards(rollout.obs, rollout.actions, rollout.rewards)
                rl_metrics = self.algo.update(rollout)
                self.iteration += 1
                self.reward.after_update(self.env_steps, final=self.env_steps >= cfg.total_steps)
                if self.env_steps - last_log >= cfg.log_every:
                    last_log = self.env_steps - self.env_steps % cfg.log_every
                    now = time.time()
                    self._record(rl_metrics, (self.env_steps - sps_steps) / max(now - sps_t, 1e-9))
                    sps_t, sps_steps = now, self.env_steps
                if self.env_steps - last_ckpt >= cfg.checkpoint_every:
                    self.checkpoint()
                    last_ckpt = self.env_steps
                if time.time() - last_status > 2:
                    self.write_status()
                    last_status = time.time()
                self.tick()
                stopped = self.stop_requested()
        except KeyboardInterrupt:
            self.checkpoint()
            raise
        finally:
            self.recorder.close()
        completed = self.env_steps >= cfg.total_steps
        self.reward.finish(completed)
        self.checkpoint()
        if completed:
            self.phase = "finished"
        self.write_status()
        self.reward.export(self.run_dir)
        wall = time.time() - t_start
        return {
            "final_return": float(np.mean(self.episodes.recent)) if self.episodes.recent else math.nan,
            "episodes": self.episodes.count,
            "env_steps": self.env_steps,
            "labels": self.reward.labels_used(),
            "wall_time_s": wall,
            "sps": (self.env_steps - steps_at_start) / max(wall, 1e-9),
            "malloc": active_allocator(),  # tcmalloc or glibc: it changes sps ~1.7x on Atari (allocator.py)
            "run_dir": str(self.run_dir),
            "stopped_early": stopped,
            "env_info": self.env.info,
        }

    def close(self) -> None:
        """Release everything the learner holds (also what a failed __init__ had opened)."""
        try:
            if self.env is not None:
                self.env.close()
            if self.reward is not None:
                self.reward.close()
        finally:
            self._lock.release()  # only now may another learner take the run directory


def run_training(cfg: TrainConfig, *, labeler: LabelerFactory | None = None, on_metrics: OnMetrics | None = None,
                 should_stop: Callable[[], bool] | None = None) -> dict:
    """Train (or resume) the run described by ``cfg``; returns a summary (see Learner.run).

    A preference run needs ``labeler`` (rlhp_core.labeler.LabelerFactory); rlhp_core.cli.train
    builds the one ``cfg.labeler`` names."""
    learner = Learner(cfg, labeler=labeler, on_metrics=on_metrics, should_stop=should_stop)
    try:
        return learner.run()
    finally:
        learner.close()


# -- command line: rlhp_core/cli.py (python -m rlhp_core.train runs it) --------------------------------
from .cli import cli, main, train  # noqa: E402,F401 - re-exported: the command's historical home

if __name__ == "__main__":
    sys.exit(cli())

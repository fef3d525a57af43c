"""The learner: the paper's three activities in one loop (section 2.2).

1. The policy acts in vectorised envs and is trained by RL (A2C or PPO) on the reward
   predicted by the ensemble (or on the true reward, for the baseline).
2. Every ``reward_update_every`` steps, pairs of recent segments are chosen (ensemble
   disagreement) and posted to the labeler, as many as the label schedule allows.
3. Whatever answers exist by then are read back from the label store and the ensemble is
   refitted on the most recent ``label_buffer`` of them.

Before RL starts (preference runs) the untrained policy collects the initial batch of
queries, the loop waits for their answers, and the ensemble is pretrained on them.

Run ``python -m rlhp_core.train --help``. Rerunning the same command on the same run
directory resumes it from its newest complete checkpoint.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .allocator import active_allocator
from .background_fit import BackgroundFit
from .buffer import SegmentBuffer
from .checkpoint import CheckpointError, load_latest, save_checkpoint
from .config import TrainConfig, resolve, save_config
from .envs import episode_step_limit, make_vec_env
from .episode_stats import WINDOW_KEYS, EpisodeStats
from .fit_schedule import Plateau, make_fit_schedule
from .label_store import LabelStore
from .run_lock import RunLock
from .labeler import Labeler, RoutedLabeler
from .queries import select_pairs
from .reward_model import PreferenceDataset, RewardEnsemble, bt_prob
from .rl import Rollout, RLSettings, make_algo
from .schedule import LabelSchedule
from .segments import ANSWER_MU, Query

METRIC_KEYS = (
    *WINDOW_KEYS, "charts/SPS", "labels/posted", "labels/answered", "labels/trainable", "labels/equal_share",
    "reward/val_accuracy", "reward/val_decisive", "reward/fit_epochs", "reward/comparisons_trained", "reward/raw_std", "reward/members_learnt",
    "reward/true_pref_accuracy", "reward/pred_true_corr", "losses/reward_train", "losses/reward_val", "reward/l2",
    "losses/policy", "losses/value", "losses/entropy", "losses/approx_kl", "losses/clipfrac", "losses/grad_norm",
    "losses/explained_variance", "charts/learning_rate",
)
"""Columns of metrics.csv, in order (CleanRL-style namespaces)."""

EPISODE_COLUMNS = ("env_steps", "end_step", "env", "return", "length", "gained", "lost", "progress")
"""Columns of episodes.csv: one row per finished episode (SB3's Monitor files), so a curve can
have a point per episode rather than one per log window. ``end_step``: the run's agent steps when
it ended; ``env_steps``: the metrics row it was written with (a resume drops rows after its
checkpoint by this column, as it does metrics.csv's)."""

PRETRAIN_CHECKPOINT_EPOCHS = 10
"""Reward-model pretraining writes a checkpoint every this many epochs."""

RESUMABLE_CHANGES = {"total_steps", "device", "progress", "checkpoint_every", "log_every", "run_dir", "extra"}
"""Config fields that may differ when a run directory is resumed."""

REWARD_MODEL_ONLY = {"reward_fit_schedule"}
"""Settings a true-reward run never uses (it trains no reward model): resuming one with another
value of these is the same run (a sweep may pin them for its label-using cells)."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available here; use 'cpu' or 'auto'")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"device {name!r} is not valid; allowed: 'auto', 'cpu', 'cuda', 'cuda:N'") from exc


def build_labeler(cfg: TrainConfig, store: LabelStore, status_path: Path) -> Labeler:
    """Turn the config's labeler spec into a Labeler. Imports oracles lazily: the core needs none."""
    spec = cfg.labeler
    if spec == "human" or spec.endswith("+human"):
        from oracles.human import HumanLabeler
        from oracles.scripted import make_labeler

        human = HumanLabeler(
            store, env_id=cfg.env_id, label_budget=cfg.label_budget,
            status_path=status_path, host=cfg.extra.get("host", "127.0.0.1"), port=int(cfg.extra.get("port", 0)),
            goal=cfg.extra.get("goal"),
        )
        print(f"Label at: {human.url}", flush=True)
        if spec == "human":
            return human
        teacher = make_labeler(spec[: -len("+human")], seed=cfg.seed, env_id=cfg.env_id,
                               segment_length=cfg.segment_length, episode_end_penalty=cfg.episode_end_penalty)
        return RoutedLabeler(teacher, human, initial=cfg.initial_labels)
    from oracles.scripted import make_labeler

    return make_labeler(spec, seed=cfg.seed, env_id=cfg.env_id, segment_length=cfg.segment_length,
                        episode_end_penalty=cfg.episode_end_penalty)


def _episode_end_penalty(cfg: TrainConfig) -> float:
    """The penalty per episode end that the reward-quality metrics apply (the teacher's default)."""
    if cfg.episode_end_penalty is not None:
        return cfg.episode_end_penalty
    try:
        from oracles.teacher import env_defaults
    except ImportError:
        return 0.0
    return float(env_defaults(cfg.env_id).episode_end_penalty)


def _reward_metrics(m: dict) -> dict[str, float]:
    """A fit's metrics as metrics.csv columns (val_accuracy: on decisive held-out pairs only)."""
    return {"losses/reward_train": m.get("train_loss"), "losses/reward_val": m.get("val_loss"),
            "reward/val_accuracy": m.get("val_accuracy"), "reward/l2": m.get("l2_mean"),
            "reward/val_decisive": float(np.mean(m.get("val_decisive_members", [np.nan]))),
            "reward/fit_epochs": m.get("epoch")}


def query_id(seed: int, index: int) -> str:
    """The id of a run's ``index``-th query (counting every query in its store, imported ones
    too): a function of the seed and the count, not of a random stream, so a run that crashed
    before its first checkpoint and starts again never reuses an id the store already holds."""
    return hashlib.blake2b(f"rlhp-query:{seed}:{index}".encode(), digest_size=8).hexdigest()


class _StateIds:
    """Stands in for the SegmentBuffer inside ``select_pairs``: the same window draws, but a
    gathered window is the ids of its states (row * num_envs + env) rather than their frames,
    for :meth:`Learner._member_probs_by_state`."""

    def __init__(self, buffer: SegmentBuffer):
        self.buffer = buffer

    def sample_starts(self, count: int, length: int, rng: np.random.Generator, newer_than: int = 0):
        return self.buffer.sample_starts(count, length, rng, newer_than)

    def gather(self, envs: np.ndarray, starts: np.ndarray, length: int, field: str) -> np.ndarray:
        return self.buffer.window_rows(starts, length) * self.buffer.num_envs + envs[:, None]


class Learner:
    def __init__(self, cfg: TrainConfig, *, labeler: Labeler | None = None,
                 on_metrics: Callable[[int, dict[str, float]], None] | None = None,
                 should_stop: Callable[[], bool] | None = None):
        asked = cfg
        self.cfg = cfg = resolve(cfg)
        self.run_dir = Path(cfg.run_dir)
        self.on_metrics, self.should_stop = on_metrics, should_stop
        self.prefs = cfg.reward == "preferences"
        self.device = resolve_device(cfg.device)
        limit = episode_step_limit(cfg.env_id, cfg.max_episode_steps)
        if self.prefs and limit is not None and cfg.segment_length > limit:
            raise ValueError(
                f"segment_length {cfg.segment_length} is longer than an episode of {cfg.env_id} "
                f"({limit} steps); allowed: segment_length <= {limit}"
            )
        # one learner per run directory, from before its config is read until close()
        self._lock = RunLock(self.run_dir).acquire()
        try:
            self._open(asked, labeler)
        except BaseException:
            self.close()
            raise

    def _open(self, asked: TrainConfig, labeler: Labeler | None) -> None:
        """Everything of __init__ that reads or writes the run directory (under its lock)."""
        self._check_run_dir(asked)
        cfg = self.cfg
        self.status_path = self.run_dir / "status.json"
        self.store_path = self.run_dir / "labels.sqlite"
        self._owns_labeler = labeler is None
        if labeler is not None:
            keep_frames = bool(labeler.wants_frames)
        else:
            keep_frames = self.prefs and (cfg.labeler == "human" or cfg.labeler.endswith("+human"))
        self.env = make_vec_env(cfg.env_id, cfg.num_envs, sticky_actions=cfg.sticky_actions, frameskip=cfg.frameskip,
                                max_episode_steps=cfg.max_episode_steps, keep_frames=keep_frames)
        self.frames_per_step = cfg.frameskip if self.env.is_atari else 1
        save_config(cfg, self.run_dir)
        (self.run_dir / "env_info.json").write_text(json.dumps(self.env.info, indent=2, sort_keys=True, default=str))
        self.store = None
        if self.prefs:
            self.store = LabelStore(self.store_path, env_id=cfg.env_id, obs_shape=self.env.obs_shape)
            if labeler is None:
                labeler = build_labeler(cfg, self.store, self.status_path)
        self.labeler = labeler

        torch.manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        space = self.env.action_space
        self.action_shape = tuple(space.shape or ())
        self.action_dtype = np.int64 if not self.action_shape else np.float32
        settings = RLSettings(lr=cfg.lr, gamma=cfg.gamma, ent_coef=cfg.ent_coef, n_steps=cfg.n_steps,
                              num_envs=cfg.num_envs, total_steps=cfg.lr_horizon,
                              anneal_lr=cfg.lr_schedule == "linear")
        self.algo = make_algo(cfg.algo, self.env.obs_shape, self.env.obs_dtype, space, settings, self.device, cfg.seed)

        self.ensemble = self.dataset = self.schedule = self.fit_schedule = None
        self.fitter: BackgroundFit | None = None  # reward_fit='background' only
        self.pretraining: Plateau | None = None
        if self.prefs:
            self.ensemble = RewardEnsemble.from_config(cfg, self.env.obs_shape, space, device=self.device)
            self.fit_schedule = make_fit_schedule(cfg)
            self.pretraining = self.fit_schedule.pretraining()
            self.dataset = PreferenceDataset.from_config(cfg)
            self.schedule = LabelSchedule(cfg.label_budget, cfg.initial_labels,
                                          cfg.total_steps * self.frames_per_step, cfg.label_schedule_constant)
        capacity = max(4 * cfg.segment_length, cfg.n_steps)
        self.buffer = SegmentBuffer(capacity, cfg.num_envs, self.env.obs_shape, self.env.obs_dtype,
                                    self.action_shape, self.action_dtype, keep_frames)

        # counters: all restored on resume
        self.env_steps = 0
        self.iteration = 0
        self.phase = "initial labels" if self.prefs else "training"
        self.last_reward_fit = 0
        self.ingested: list[int] = []  # answer ids in the dataset, in order
        self.in_memory: dict[str, tuple] = {}  # query id -> (left obs, left act, right obs, right act)
        self.episodes = EpisodeStats(cfg.num_envs)
        self.reward_metrics: dict[str, float] = {}
        self.resume_count = 0
        self.fit_keys: set = set()  # the dataset's labels (query ids) at the last fit: how much it has grown since
        self._obs = self._frames = None  # what the envs show now (the loop acts on it next)
        self._fresh = 0  # initial phase: steps since the last round of queries
        self._env_restored = False  # True: the checkpoint held the envs' own state (VecEnv.get_state)
        self._end_penalty = _episode_end_penalty(cfg)
        self._restore()

    # -- run directory ----------------------------------------------------------------------
    def _check_run_dir(self, asked: TrainConfig) -> None:
        path = self.run_dir / "config.json"
        if not path.exists():
            return
        try:
            old = TrainConfig.from_json(path.read_text())
            recorded = json.loads(path.read_text())
            if "lr_horizon" not in recorded:  # written before it existed: decayed over the run
                old.lr_horizon = old.total_steps
            if "reward_fit_schedule" not in recorded:  # written before it existed: the paper's ratio
                old.reward_fit_schedule = "ratio"
            old = resolve(old)
        except (ValueError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path} is not a config this code can read: {exc}") from exc
        # A setting left to its per-env default (None, or reward_fit 'auto') goes on as the run
        # started: the default may have changed since (reward_fit 'auto' did; lr_horizon follows
        # total_steps off Atari, and total_steps may grow on resume).
        kept = {f.name: getattr(old, f.name) for f in dataclasses.fields(TrainConfig)
                if getattr(asked, f.name) is None or (f.name == "reward_fit" and asked.reward_fit == "auto")}
        self.cfg = dataclasses.replace(self.cfg, **kept)
        diffs = {
            f.name: (getattr(old, f.name), getattr(self.cfg, f.name))
            for f in dataclasses.fields(TrainConfig)
            if f.name not in RESUMABLE_CHANGES and getattr(old, f.name) != getattr(self.cfg, f.name)
            and not (f.name in REWARD_MODEL_ONLY and old.reward == self.cfg.reward == "true")
        }
        if diffs:
            listing = ", ".join(f"{k}: run has {a!r}, asked {b!r}" for k, a, b in ((k, *v) for k, v in diffs.items()))
            raise ValueError(
                f"run directory {self.run_dir} belongs to a different configuration ({listing}); "
                f"use a new run_dir, or repeat the original settings to resume"
            )

    def _restore(self) -> None:
        blob = load_latest(self.run_dir)
        if blob is None:
            if self.prefs and self.cfg.seed_labels:
                copied = self.store.import_from(LabelStore(self.cfg.seed_labels))
                print(f"seeded {copied} labels from {self.cfg.seed_labels}", flush=True)
            self._truncate_metrics(0)
            return
        s = blob["state"]
        if s.get("env_id") != self.cfg.env_id:
            raise CheckpointError(f"checkpoint in {self.run_dir} is for env {s.get('env_id')!r}, not {self.cfg.env_id!r}")
        self.algo.load_state_dict(s["algo"])
        c = s["counters"]
        self.env_steps, self.iteration, self.phase = c["env_steps"], c["iteration"], c["phase"]
        self.last_reward_fit, self.resume_count = c["last_reward_fit"], c["resume_count"] + 1
        if self.prefs:
            if "pretraining" in c:
                self.pretraining = Plateau(**c["pretraining"])
            else:  # checkpoints from before fit schedules: a count of fixed epochs
                self.pretraining.epoch = c.get("pretrain_epoch", self.cfg.pretrain_epochs if self.phase == "training" else 0)
        self.episodes.load_state_dict(c)
        if "envs" in s:
            e = s["envs"]
            self.env.set_state(e["state"])
            self.buffer.load_state_dict(e["buffer"])
            self.episodes.load_in_flight_state(e["episodes"])
            self._obs, self._frames, self._fresh = e["obs"], e["frames"], e["fresh"]
            self._env_restored = True
        self.rng.bit_generator.state = s["numpy_rng"]
        torch.set_rng_state(s["torch_rng"])
        if self.prefs:
            self.ensemble.load_state_dict(s["ensemble"])
            self.reward_metrics = dict(s.get("reward_metrics", {}))
            if "reward_trainer" in s:
                self.fitter = BackgroundFit.copy_of(self.ensemble)
                self.fitter.trainer.load_state_dict(s["reward_trainer"])
                self.fitter.pending = s["reward_fit_pending"]
            self._rebuild_dataset(s["ingested"])
            self.fit_keys = set(s["fit_keys"]) if "fit_keys" in s else set(self.dataset.keys())
            if "labeler" in s and hasattr(self.labeler, "set_state"):
                self.labeler.set_state(s["labeler"])
        self._truncate_metrics(self.env_steps)

    def _rebuild_dataset(self, answer_ids: list[int]) -> None:
        """Re-add a checkpoint's comparisons from the store, in the same order.

        Bootstrap/validation splits are seeded by query id, so the rebuilt dataset is the one
        the checkpoint had, without storing gigabytes of frames in the checkpoint.
        """
        by_id = {a.id: a for a in self.store.all_answers()}
        self.ingested = []
        for aid in answer_ids:
            self._add_answer(by_id[aid])

    def _add_answer(self, a) -> None:
        self.ingested.append(a.id)
        seg = self.in_memory.pop(a.query_id, None)
        if a.answer not in ANSWER_MU:  # incomparable: kept in the store, never trained on
            return
        if seg is None:
            q = self.store.query(a.query_id)
            seg = (q.left.obs, q.left.actions, q.right.obs, q.right.actions)
        self.dataset.add(*seg, a.answer, key=a.query_id)

    def _checkpoint(self) -> None:
        state = {
            "env_id": self.cfg.env_id,
            "algo": self.algo.state_dict(),
            "counters": dict(env_steps=self.env_steps, iteration=self.iteration, phase=self.phase,
                             last_reward_fit=self.last_reward_fit, resume_count=self.resume_count,
                             pretraining=self.pretraining.state_dict() if self.prefs else None,
                             **self.episodes.state_dict()),
            "numpy_rng": self.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
        }
        if self.prefs:
            if self.fitter is not None:  # the fit in flight ends first; it is installed on schedule
                self.fitter.wait()
                state["reward_trainer"] = self.fitter.trainer.state_dict()
                state["reward_fit_pending"] = self.fitter.pending
            state["ensemble"] = self.ensemble.state_dict()
            state["ingested"] = list(self.ingested)
            state["fit_keys"] = sorted(self.fit_keys)
            state["reward_metrics"] = dict(self.reward_metrics)  # the last fit's, logged until the next one
            if hasattr(self.labeler, "get_state"):
                state["labeler"] = self.labeler.get_state()
        env_state = self.env.get_state()
        if env_state is not None:  # then the resumed run continues these very episodes, bit for bit
            state["envs"] = {"state": env_state, "obs": self._obs, "frames": self._frames, "fresh": self._fresh,
                             "buffer": self.buffer.state_dict(), "episodes": self.episodes.in_flight_state()}
        save_checkpoint(self.run_dir, self.env_steps, state)

    # -- metrics and status ---------------------------------------------------------------------
    @property
    def _metrics_path(self) -> Path:
        return self.run_dir / "metrics.csv"

    def _truncate_metrics(self, up_to_step: int) -> None:
        """Drop rows of metrics.csv and episodes.csv written after the checkpoint we resume from,
        so no step or episode is logged twice."""
        for path, columns in ((self._metrics_path, ("env_steps", *METRIC_KEYS)),
                              (self.run_dir / "episodes.csv", EPISODE_COLUMNS)):
            rows = []
            if path.exists():
                with open(path, newline="") as f:
                    rows = [r for r in csv.DictReader(f) if int(r["env_steps"]) <= up_to_step]
            tmp = path.with_suffix(".csv.tmp")
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
                w.writeheader()
                w.writerows(rows)
            tmp.replace(path)

    def _log(self, metrics: dict[str, float], episodes: list[dict] = ()) -> None:
        if episodes:
            with open(self.run_dir / "episodes.csv", "a", newline="") as f:
                csv.DictWriter(f, fieldnames=EPISODE_COLUMNS).writerows(
                    {"env_steps": self.env_steps, **{k: e.get(k, "") for k in EPISODE_COLUMNS[1:]}} for e in episodes)
        with open(self._metrics_path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=("env_steps", *METRIC_KEYS)).writerow(
                {"env_steps": self.env_steps, **{k: metrics.get(k, "") for k in METRIC_KEYS}})
        if self.on_metrics is not None:
            self.on_metrics(self.env_steps, metrics)

    def _write_status(self) -> None:
        counts = self.store.counts() if self.store is not None else {}
        answered = sum(counts.get(k, 0) for k in ("left", "right", "equal", "incomparable"))
        status = {
            "env_steps": self.env_steps, "total_steps": self.cfg.total_steps, "phase": self.phase,
            "labels_answered": answered, "labels_pending": counts.get("pending", 0),
            "label_budget": self.cfg.label_budget if self.prefs else 0,
            "pretrain_epoch": self.pretraining.epoch if self.prefs else 0,
            "pretrain_epochs": self.cfg.pretrain_epochs if self.prefs else 0,
            "episode_return": float(np.mean(self.episodes.recent)) if self.episodes.recent else None,
            "updated_at": time.time(),
        }
        tmp = self.status_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(status))
        tmp.replace(self.status_path)

    # -- acting ------------------------------------------------------------------------------------
    def _step_envs(self, obs: np.ndarray, frames) -> tuple:
        """One step of all envs with the current policy; fills the segment buffer."""
        actions, extras = self.algo.act(obs)
        out = self.env.step(actions)
        ended = out.terminated | out.truncated
        self.buffer.add(obs, actions, out.reward, ended, frames, truncations=out.truncated & ~out.terminated,
                        progress=out.progress)
        self.env_steps += self.cfg.num_envs
        self.episodes.step(out.reward, ended, out.progress, at_step=self.env_steps)
        self._obs, self._frames = out.obs, out.frames
        return actions, extras, out

    # -- queries and the reward model ------------------------------------------------------------
    def _post_queries(self, count: int, mode: str, newer_than: int = 0) -> int:
        L = self.cfg.segment_length
        if count <= 0 or not self.buffer.can_sample(L):
            return 0
        # Disagreement: candidates come back as state ids, so r̂ runs once per distinct state
        # (the same draws, pairs and probabilities as select_pairs on the buffer itself).
        source, probs = (_StateIds(self.buffer), self._member_probs_by_state) if mode == "disagreement" \
            else (self.buffer, None)
        pairs = select_pairs(source, count, L, self.rng, mode=mode, factor=self.cfg.candidate_factor,
                             member_probs=probs, newer_than=newer_than)
        queries = []
        first = self._labels_posted()
        for i, (le, ls, re_, rs) in enumerate(pairs):
            left, right = self.buffer.segment(le, ls, L), self.buffer.segment(re_, rs, L)
            qid = query_id(self.cfg.seed, first + i)
            queries.append(Query(qid, left, right))
            self.in_memory[qid] = (left.obs, left.actions, right.obs, right.actions)
        self.labeler.post(self.store, queries, self.env_steps)
        return len(queries)

    def _member_probs_by_state(self, left_ids, _left_act, right_ids, _right_act) -> np.ndarray:
        """RewardEnsemble.member_probs for candidate windows given as state ids (see _StateIds).

        Candidate windows overlap heavily (10 candidate pairs per query, drawn from the last
        ``capacity`` steps of N envs), so the ensemble is run once per distinct state instead of
        once per window step; the per-member window sums and P(left > right) are then what
        ``member_probs`` computes on the gathered frames (no noise term).
        """
        ids = np.concatenate([left_ids.reshape(-1), right_ids.reshape(-1)])
        uniq, inverse = np.unique(ids, return_inverse=True)
        rows, envs = np.divmod(uniq, self.buffer.num_envs)
        raw = self.ensemble.raw_rewards(self.buffer.obs[rows, envs], self.buffer.actions[rows, envs])  # (M, U)
        rets = raw[:, inverse.reshape(-1)].reshape(raw.shape[0], 2, *left_ids.shape).sum(axis=3)
        return bt_prob(rets[:, 0], rets[:, 1])

    def _ingest_answers(self) -> None:
        """Add every new live answer to the dataset; drop those retracted (a person's undo)."""
        answers = self.store.current_answers()
        live = {a.id for a in answers}
        gone = [aid for aid in self.ingested if aid not in live]
        if gone:
            by_id = {a.id: a for a in self.store.all_answers()}
            for aid in gone:
                self.dataset.remove(by_id[aid].query_id)
            self.ingested = [aid for aid in self.ingested if aid in live]
        have = set(self.ingested)
        for a in answers:
            if a.id not in have:
                self._add_answer(a)

    def _labels_posted(self) -> int:
        return self.store.num_queries()

    def _update_normalization(self, fit: dict | None) -> None:
        """Rescale r̂ on recent states after a fit (``fit``: its metrics, for the chance test)."""
        n = self.buffer.filled
        k = 1024
        if n == 0:  # resumed between the initial labels and training: the buffer is not checkpointed
            obs, actions = self.dataset.normalization_sample(k, self.rng)
        else:
            rows = self.rng.integers(self.buffer.steps_written - n, self.buffer.steps_written, size=k) % self.buffer.capacity
            envs = self.rng.integers(0, self.cfg.num_envs, size=k)
            obs, actions = self.buffer.obs[rows, envs], self.buffer.actions[rows, envs]
        self.ensemble.update_normalization(obs, actions, segment_length=self.cfg.segment_length, fit_metrics=fit)
        self.reward_metrics["reward/raw_std"] = float(np.mean(self.ensemble.raw_std))
        self.reward_metrics["reward/members_learnt"] = float(np.sum(self.ensemble.norm_weight))

    def _fit_reward(self, steps_since_fit: int, final: bool) -> None:
        """Train r̂ on the answers so far if the fit schedule asks for it (rlhp_core/fit_schedule.py):
        here and now ('sync'), or on the second thread ('background'), to be installed at the next
        refit (rlhp_core/background_fit.py)."""
        self._ingest_answers()
        if len(self.dataset) == 0:
            return
        keys = set(self.dataset.keys())
        job = self.fit_schedule.refit(steps_since_fit, len(self.fit_keys), len(keys - self.fit_keys), final)
        if job is None:
            return
        self.fit_keys = keys
        if self.cfg.reward_fit == "background":
            if self.fitter is None:
                self.fitter = BackgroundFit.copy_of(self.ensemble)
            self.fitter.start(self.dataset, job)
            return
        fit = job(self.ensemble, self.dataset)
        self.reward_metrics = _reward_metrics(fit)
        self._update_normalization(fit)

    def _install_fit(self) -> None:
        """Background fits: wait for the one started at the last refit and use it from now on."""
        if self.fitter is not None:
            done = self.fitter.install(self.ensemble)
            if done is not None:
                self.reward_metrics = _reward_metrics(done)
                self._update_normalization(done)

    def _reward_quality(self) -> dict[str, float]:
        """How well r̂ tracks the true reward on fresh segments of the current policy.

        pred_true_corr: Pearson correlation of predicted and true segment returns (true return
        minus the episode-end penalty, the quantity the scripted teacher compares).
        true_pref_accuracy: how often r̂ prefers the segment with the higher true return
        (pairs with a true tie left out). Neither is visible to the learner; both are for people.
        """
        L = self.cfg.segment_length
        if not self.buffer.can_sample(L):
            return {}
        envs, starts = self.buffer.sample_starts(128, L, self.rng)
        obs, act = self.buffer.gather(envs, starts, L, "obs"), self.buffer.gather(envs, starts, L, "actions")
        pred = self.ensemble.predict(obs.reshape(-1, *obs.shape[2:]), act.reshape(-1, *act.shape[2:]))
        pred = pred.reshape(len(envs), L).sum(1)
        ends = self.buffer.gather(envs, starts, L, "terminations").sum(1)
        true = self.buffer.gather(envs, starts, L, "true_rewards").sum(1) - self._end_penalty * ends
        out = {}
        if np.std(pred) > 0 and np.std(true) > 0:
            out["reward/pred_true_corr"] = float(np.corrcoef(pred, true)[0, 1])
        a, b = pred[::2], pred[1::2]
        ta, tb = true[::2], true[1::2]
        decided = ta != tb
        if decided.any():
            out["reward/true_pref_accuracy"] = float(np.mean((a > b)[decided] == (ta > tb)[decided]))
        return out

    def _initial_phase(self, obs, frames):
        """Collect the initial labels from the untrained policy, wait for answers, pretrain."""
        cfg = self.cfg
        per_round = max(1, self.cfg.num_envs * self.buffer.capacity // (2 * cfg.segment_length))
        posted = self._labels_posted()
        while self.phase == "initial labels" and posted < cfg.initial_labels:
            _, _, out = self._step_envs(obs, frames)
            obs, frames = out.obs, out.frames
            self._fresh += 1
            if self._fresh >= self.buffer.capacity:
                posted += self._post_queries(min(per_round, cfg.initial_labels - posted), "random",
                                             newer_than=self.buffer.steps_written - self._fresh)
                self._fresh = 0
                self._checkpoint()  # a crash from here on resumes after this round, not from step 0
                self._write_status()
            self._tick()
            if self._stop_requested():
                return obs, frames, False
        # wait for the initial answers (a person may take a while); the envs stay where they are
        last_status = 0.0
        while True:
            counts = self.store.counts()
            if counts["pending"] == 0:
                break
            if time.time() - last_status > 2:
                self._write_status()
                last_status = time.time()
            if self._stop_requested():
                return obs, frames, False
            time.sleep(0.5)
        if self.phase != "pretraining reward model":
            self.phase = "pretraining reward model"
            self._ingest_answers()
            self._checkpoint()
        self.fit_keys = set(self.dataset.keys())
        fit = self._pretrain() if len(self.dataset) else None
        if fit is not None:
            self.reward_metrics = _reward_metrics(fit)
        self._update_normalization(fit)
        self.phase = "training"
        self.last_reward_fit = self.env_steps
        return obs, frames, True

    def _pretrain(self) -> dict:
        """Pretraining on the initial labels (paper: 200 epochs on Atari, hours on a CPU; the
        'labels' fit schedule stops it where the validation loss stops improving), checkpointed
        every ``PRETRAIN_CHECKPOINT_EPOCHS`` so a crash loses at most those; the progress bar and
        status.json show the epoch."""
        fit: dict = {}
        plateau = self.pretraining
        self._write_status()
        while not plateau.done:
            fit = plateau.run(self.ensemble, self.dataset, until_epoch=plateau.epoch + PRETRAIN_CHECKPOINT_EPOCHS)
            self._checkpoint()
            self._write_status()
            if self._bar is not None:
                self._bar.set_postfix({"pretraining": f"epoch {plateau.epoch}/{plateau.max_epochs}",
                                       "val_acc": f"{fit.get('val_accuracy', float('nan')):.2f}"})
        return fit

    # -- the loop --------------------------------------------------------------------------------------
    def _stop_requested(self) -> bool:
        return self.should_stop is not None and self.should_stop()

    def _tick(self) -> None:
        if self._bar is not None:
            self._bar.update(self.env_steps - self._bar.n)

    def run(self) -> dict:
        cfg = self.cfg
        self._bar = None
        if cfg.progress:
            from tqdm import tqdm

            self._bar = tqdm(total=cfg.total_steps, initial=self.env_steps, unit="step", dynamic_ncols=True,
                             smoothing=0.05, desc=f"{cfg.env_id} {cfg.algo} {cfg.reward}")
        t_start = time.time()
        steps_at_start = self.env_steps
        if self._env_restored:
            obs, frames = self._obs, self._frames
        else:  # a new run, or a resume whose envs could not be saved: fresh episodes, a new seed per resume
            obs, frames = self._obs, self._frames = self.env.reset(seed=cfg.seed + 7919 * self.resume_count)
        last_log = self.env_steps - self.env_steps % cfg.log_every
        last_ckpt = self.env_steps
        last_status = 0.0
        sps_t, sps_steps = time.time(), self.env_steps
        stopped = False
        try:
            if self.prefs and self.phase != "training":
                obs, frames, ok = self._initial_phase(obs, frames)
                stopped = not ok
            T, N = cfg.n_steps, cfg.num_envs
            obs_buf = np.zeros((T, N, *self.env.obs_shape), dtype=self.env.obs_dtype)
            act_buf = np.zeros((T, N, *self.action_shape), dtype=self.action_dtype)
            rew_buf = np.zeros((T, N), dtype=np.float32)
            done_buf = np.zeros((T, N), dtype=bool)
            timeout_buf = np.zeros((T, N), dtype=bool)
            final_buf = np.zeros_like(obs_buf)
            while not stopped and self.env_steps < cfg.total_steps:
                extras_list = []
                for t in range(T):
                    obs_buf[t] = obs
                    actions, extras, out = self._step_envs(obs, frames)
                    act_buf[t] = actions
                    extras_list.append(extras)
                    rew_buf[t] = out.reward
                    # Time-limit ends are always bootstrapped from the final obs (as if the episode
                    # went on: no information about the reward leaks); terminations are shown to the
                    # agent only with episode_signal.
                    timeout_buf[t] = out.truncated & ~out.terminated
                    done_buf[t] = timeout_buf[t] | (out.terminated if cfg.episode_signal else False)
                    final_buf[t] = out.final_obs
                    obs, frames = out.obs, out.frames
                if self.prefs:
                    rew_buf[:] = self.ensemble.predict(
                        obs_buf.reshape(T * N, *obs_buf.shape[2:]), act_buf.reshape(T * N, *act_buf.shape[2:])
                    ).reshape(T, N)
                elif self.env.is_atari:
                    np.clip(rew_buf, -1.0, 1.0, out=rew_buf)
                extras = {k: np.stack([e[k] for e in extras_list]) for k in extras_list[0]}
                rl_metrics = self.algo.update(Rollout(
                    obs=obs_buf, actions=act_buf, rewards=rew_buf, dones=done_buf, timeouts=timeout_buf,
                    final_values_obs=final_buf, last_obs=obs, extras=extras,
                ))
                self.iteration += 1

                # the last update is a refit point too, so the run asks for exactly its label budget
                if self.prefs and (self.env_steps - self.last_reward_fit >= cfg.reward_update_every
                                   or self.env_steps >= cfg.total_steps):
                    self._install_fit()
                    due = self.schedule.due(self.env_steps * self.frames_per_step)
                    self._post_queries(due - self._labels_posted(), cfg.query_selection,
                                       newer_than=max(0, self.buffer.steps_written - self.buffer.capacity))
                    self._fit_reward(self.env_steps - self.last_reward_fit, final=self.env_steps >= cfg.total_steps)
                    self.last_reward_fit = self.env_steps

                if self.env_steps - last_log >= cfg.log_every:
                    last_log = self.env_steps - self.env_steps % cfg.log_every
                    now = time.time()
                    finished = self.episodes.window_episodes()
                    metrics = {**rl_metrics, **self.episodes.pop_window(),
                               "charts/SPS": (self.env_steps - sps_steps) / max(now - sps_t, 1e-9)}
                    sps_t, sps_steps = now, self.env_steps
                    if self.prefs:
                        counts = self.store.counts()
                        metrics["labels/posted"] = self._labels_posted()
                        metrics["labels/answered"] = sum(counts[k] for k in ("left", "right", "equal", "incomparable"))
                        metrics["labels/trainable"] = len(self.dataset)
                        metrics["reward/comparisons_trained"] = self.ensemble.comparisons_seen
                        answered = sum(counts[k] for k in ("left", "right", "equal"))
                        if answered:
                            metrics["labels/equal_share"] = counts["equal"] / answered
                        metrics.update({k: v for k, v in self.reward_metrics.items() if v is not None})
                        metrics.update(self._reward_quality())
                    metrics = {k: float(v) for k, v in metrics.items() if v is not None and k in METRIC_KEYS}
                    self._log(metrics, finished)
                    if self._bar is not None:
                        post = {"sps": f"{metrics['charts/SPS']:.0f}"}
                        if self.episodes.recent:
                            post["return"] = f"{np.mean(self.episodes.recent):.1f}"
                        # below Enduro's floored score: reward gained and lost (cars passed / passed
                        # back) per 1k steps, and driving progress per step, of this log window
                        post["+/-1k"] = (f"{metrics.get('charts/gained_per_1k_steps', 0):.1f}/"
                                         f"{metrics.get('charts/lost_per_1k_steps', 0):.1f}")
                        if "charts/progress_per_step" in metrics:
                            post[self.env.progress_name or "progress"] = f"{metrics['charts/progress_per_step']:.4f}"
                        if self.prefs:
                            post["labels"] = int(metrics["labels/answered"])
                            if "reward/true_pref_accuracy" in metrics:
                                post["acc"] = f"{metrics['reward/true_pref_accuracy']:.2f}"
                        self._bar.set_postfix(post, refresh=False)
                if self.env_steps - last_ckpt >= cfg.checkpoint_every:
                    self._checkpoint()
                    last_ckpt = self.env_steps
                if time.time() - last_status > 2:
                    self._write_status()
                    last_status = time.time()
                self._tick()
                if self._stop_requested():
                    stopped = True
        except KeyboardInterrupt:
            self._checkpoint()
            raise
        finally:
            if self._bar is not None:
                self._bar.close()
        if self.env_steps >= cfg.total_steps:
            self._install_fit()  # the last background fit is part of the final model
        self._checkpoint()
        if self.env_steps >= cfg.total_steps:
            self.phase = "finished"
        self._write_status()
        if self.prefs:
            torch.save(self.ensemble.state_dict(), self.run_dir / "reward_model.pt.tmp")
            os.replace(self.run_dir / "reward_model.pt.tmp", self.run_dir / "reward_model.pt")
        wall = time.time() - t_start
        return {
            "final_return": float(np.mean(self.episodes.recent)) if self.episodes.recent else math.nan,
            "episodes": self.episodes.count,
            "env_steps": self.env_steps,
            "labels": len(self.store.current_answers()) if self.prefs else 0,
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
            fitter, env = getattr(self, "fitter", None), getattr(self, "env", None)
            labeler, store = getattr(self, "labeler", None), getattr(self, "store", None)
            if fitter is not None and fitter.running:  # after an error: let the thread end
                try:
                    fitter.wait()
                except Exception:  # noqa: BLE001 - the loop's own error is the one being raised
                    pass
            if env is not None:
                env.close()
            if labeler is not None and self._owns_labeler:
                labeler.close()
            if store is not None:
                store.close()
        finally:
            self._lock.release()  # only now may another learner take the run directory


def run_training(cfg: TrainConfig, *, labeler: Labeler | None = None,
                 on_metrics: Callable[[int, dict[str, float]], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> dict:
    """Train (or resume) the run described by ``cfg``; returns a summary (see Learner.run)."""
    learner = Learner(cfg, labeler=labeler, on_metrics=on_metrics, should_stop=should_stop)
    try:
        return learner.run()
    finally:
        learner.close()


# -- command line: rlhp_core/cli.py (python -m rlhp_core.train runs it) --------------------------------
from .cli import cli, main  # noqa: E402,F401 - re-exported: the command's historical home

if __name__ == "__main__":
    sys.exit(cli())

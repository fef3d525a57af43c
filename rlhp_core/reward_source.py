"""What the policy is trained on: the env's reward (the baseline) or r̂ learned from preferences.

The learner's loop (rlhp_core/train.py) is the same for both; it calls its reward source at
five points: ``warm_up`` before RL, ``rewards`` on each rollout, ``after_update`` after each
policy update, ``metrics``/``status`` when it records, and ``save``/``load`` with its
checkpoints. :class:`TrueReward` is the env's reward (clipped to [-1, 1] on Atari, as the
baselines do). :class:`LearnedReward` is the paper's other two activities (section 2.2):

1. Every ``reward_update_every`` steps, pairs of recent segments are chosen (ensemble
   disagreement, rlhp_core/queries.py) and posted to the labeler, as many as the label schedule
   allows.
2. Whatever answers exist by then are read back from the label store and the ensemble is
   refitted on the most recent ``label_buffer`` of them, when and as much as the fit schedule
   says (rlhp_core/fit_schedule.py), in place or on a second thread (background_fit.py).

Before RL (``warm_up``) the untrained policy collects the initial batch of queries, the loop
waits for their answers, and the ensemble is pretrained on them.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from .background_fit import BackgroundFit
from .buffer import SegmentBuffer
from .config import TrainConfig
from .fit_schedule import Plateau, make_fit_schedule
from .label_store import LabelStore
from .labeler import LabelerFactory
from .queries import ensemble_disagreement, select_pairs
from .reward import PreferenceDataset, RewardEnsemble
from .schedule import LabelSchedule
from .segments import ANSWER_MU, Query

if TYPE_CHECKING:
    from .train import Learner

PRETRAIN_CHECKPOINT_EPOCHS = 10
"""Reward-model pretraining writes a checkpoint every this many epochs."""


class RewardSource(Protocol):
    """What the learner's loop asks of the reward its policy is trained on (see module docstring)."""

    start_phase: str
    """The run's phase before RL starts: 'training' when there is nothing to do before it."""

    def warm_up(self, loop: Learner) -> bool:
        """Whatever must happen before RL (from ``loop.phase`` on); False: stopped on request."""

    def rewards(self, obs: np.ndarray, actions: np.ndarray, env_rewards: np.ndarray) -> None:
        """Replace a rollout's (T, N) ``env_rewards`` in place by the rewards the policy learns from."""

    def after_update(self, env_steps: int, final: bool) -> None:
        """After each policy update (``final``: the run's last)."""

    def finish(self, completed: bool) -> None:
        """Before the run's last checkpoint (``completed``: it reached total_steps)."""

    def metrics(self) -> dict[str, float]:
        """The source's columns of a metrics.csv row (labels/, reward/)."""

    def status(self) -> dict:
        """The source's part of status.json."""

    def labels_used(self) -> int:
        """Answers the run learnt from (the summary's 'labels')."""

    def save(self, state: dict) -> None:
        """Add the source's state to a checkpoint's ``state`` (its ``counters`` included)."""

    def load(self, state: dict) -> None:
        """Restore it from a checkpoint's ``state``."""

    def start_fresh(self) -> None:
        """A run with no checkpoint is starting."""

    def export(self, run_dir: Path) -> None:
        """Write what the run leaves for later use (the reward model) into ``run_dir``."""

    def close(self) -> None:
        """Release what the source holds."""


class TrueReward:
    """The env's own reward: the baseline, trained by the same RL on the same loop."""

    start_phase = "training"

    def __init__(self, clip: bool):
        self.clip = clip

    def warm_up(self, loop: Learner) -> bool:
        return True

    def rewards(self, obs, actions, env_rewards: np.ndarray) -> None:
        if self.clip:
            np.clip(env_rewards, -1.0, 1.0, out=env_rewards)

    def after_update(self, env_steps: int, final: bool) -> None:
        pass

    def finish(self, completed: bool) -> None:
        pass

    def metrics(self) -> dict[str, float]:
        return {}

    def status(self) -> dict:
        return {"labels_answered": 0, "labels_pending": 0, "label_budget": 0, "pretrain_epoch": 0,
                "pretrain_epochs": 0}

    def labels_used(self) -> int:
        return 0

    def save(self, state: dict) -> None:
        state["counters"].update(last_reward_fit=0, pretraining=None)

    def load(self, state: dict) -> None:
        pass

    def start_fresh(self) -> None:
        pass

    def export(self, run_dir: Path) -> None:
        pass

    def close(self) -> None:
        pass


def query_id(seed: int, index: int) -> str:
    """The id of a run's ``index``-th query (counting every query in its store, imported ones
    too): a function of the seed and the count, not of a random stream, so a run that crashed
    before its first checkpoint and starts again never reuses an id the store already holds."""
    return hashlib.blake2b(f"rlhp-query:{seed}:{index}".encode(), digest_size=8).hexdigest()


def _fit_metrics(m: dict) -> dict[str, float]:
    """A fit's metrics as metrics.csv columns (val_accuracy: on decisive held-out pairs only)."""
    return {"losses/reward_train": m.get("train_loss"), "losses/reward_val": m.get("val_loss"),
            "reward/val_accuracy": m.get("val_accuracy"), "reward/l2": m.get("l2_mean"),
            "reward/val_decisive": float(np.mean(m.get("val_decisive_members", [np.nan]))),
            "reward/fit_epochs": m.get("epoch")}


class LearnedReward:
    """r̂ from preferences: queries, answers, the ensemble and its fitting (see module docstring)."""

    start_phase = "initial labels"

    def __init__(self, cfg: TrainConfig, *, env, buffer: SegmentBuffer, rng: np.random.Generator,
                 device: torch.device, labeler: LabelerFactory, store_path: Path, status_path: Path,
                 frames_per_step: int):
        self.cfg, self.buffer, self.rng = cfg, buffer, rng
        self.store = LabelStore(store_path, env_id=cfg.env_id, obs_shape=env.obs_shape)
        self.labeler = labeler(cfg, self.store, status_path)
        self.end_penalty = labeler.episode_end_penalty(cfg)
        self.ensemble = RewardEnsemble.from_config(cfg, env.obs_shape, env.action_space, device=device)
        self.fit_schedule = make_fit_schedule(cfg)
        self.pretraining: Plateau = self.fit_schedule.pretraining()
        self.dataset = PreferenceDataset.from_config(cfg)
        self.schedule = LabelSchedule(cfg.label_budget, cfg.initial_labels, cfg.total_steps * frames_per_step,
                                      cfg.label_schedule_constant)
        self.frames_per_step = frames_per_step
        self.fitter: BackgroundFit | None = None  # reward_fit='background' only, from its first fit
        self.last_reward_fit = 0
        self.ingested: list[int] = []  # answer ids in the dataset, in order
        self.in_memory: dict[str, tuple] = {}  # query id -> (left obs, left act, right obs, right act)
        self.fit_keys: set = set()  # the dataset's labels (query ids) at the last fit: how much it has grown since
        self.reward_metrics: dict[str, float] = {}

    # -- before RL: the initial labels and pretraining ---------------------------------------------------
    def warm_up(self, loop: Learner) -> bool:
        """Collect the initial labels from the untrained policy, wait for answers, pretrain.

        Drives ``loop``'s envs (``loop.step_envs``) and writes its checkpoints and status, so a
        crash in any part of it resumes where it was. False: stopped on request."""
        cfg = self.cfg
        per_round = max(1, cfg.num_envs * self.buffer.capacity // (2 * cfg.segment_length))
        posted = self.store.num_queries()
        while loop.phase == "initial labels" and posted < cfg.initial_labels:
            loop.step_envs()
            loop.fresh += 1
            if loop.fresh >= self.buffer.capacity:
                posted += self.post_queries(min(per_round, cfg.initial_labels - posted), "random",
                                            newer_than=self.buffer.steps_written - loop.fresh, env_steps=loop.env_steps)
                loop.fresh = 0
                loop.checkpoint()  # a crash from here on resumes after this round, not from step 0
                loop.write_status()
            loop.tick()
            if loop.stop_requested():
                return False
        # wait for the initial answers (a person may take a while); the envs stay where they are
        last_status = 0.0
        while self.store.counts()["pending"]:
            if time.time() - last_status > 2:
                loop.write_status()
                last_status = time.time()
            if loop.stop_requested():
                return False
            time.sleep(0.5)
        if loop.phase != "pretraining reward model":
            loop.phase = "pretraining reward model"
            self._ingest_answers()
            loop.checkpoint()
        self.fit_keys = set(self.dataset.keys())
        fit = self._pretrain(loop) if len(self.dataset) else None
        if fit is not None:
            self.reward_metrics = _fit_metrics(fit)
        self._update_normalization(fit)
        loop.phase = "training"
        self.last_reward_fit = loop.env_steps
        return True

    def _pretrain(self, loop: Learner) -> dict:
        """Pretraining on the initial labels (paper: 200 epochs on Atari, hours on a CPU; the
        'labels' fit schedule stops it where the validation loss stops improving), checkpointed
        every ``PRETRAIN_CHECKPOINT_EPOCHS`` so a crash loses at most those; the progress bar and
        status.json show the epoch."""
        fit: dict = {}
        plateau = self.pretraining
        loop.write_status()
        while not plateau.done:
            fit = plateau.run(self.ensemble, self.dataset, until_epoch=plateau.epoch + PRETRAIN_CHECKPOINT_EPOCHS)
            loop.checkpoint()
            loop.write_status()
            loop.recorder.show_pretraining(plateau.epoch, plateau.max_epochs, fit)
        return fit

    # -- during RL -------------------------------------------------------------------------------------
    def rewards(self, obs: np.ndarray, actions: np.ndarray, env_rewards: np.ndarray) -> None:
        T, N = env_rewards.shape
        env_rewards[:] = self.ensemble.predict(obs.reshape(T * N, *obs.shape[2:]),
                                               actions.reshape(T * N, *actions.shape[2:])).reshape(T, N)

    def after_update(self, env_steps: int, final: bool) -> None:
        """A refit point every ``reward_update_every`` steps, and at the last update, so the run
        asks for exactly its label budget: install the last background fit, post the queries
        the label schedule has due, read the answers and fit as the fit schedule says."""
        if env_steps - self.last_reward_fit < self.cfg.reward_update_every and not final:
            return
        self._install_fit()
        due = self.schedule.due(env_steps * self.frames_per_step)
        self.post_queries(due - self.store.num_queries(), self.cfg.query_selection,
                          newer_than=max(0, self.buffer.steps_written - self.buffer.capacity), env_steps=env_steps)
        self._fit(env_steps - self.last_reward_fit, final=final)
        self.last_reward_fit = env_steps

    def finish(self, completed: bool) -> None:
        if completed:
            self._install_fit()  # the last background fit is part of the final model

    # -- queries and answers ---------------------------------------------------------------------------
    def post_queries(self, count: int, mode: str, newer_than: int, env_steps: int) -> int:
        L = self.cfg.segment_length
        if count <= 0 or not self.buffer.can_sample(L):
            return 0
        score = ensemble_disagreement(self.buffer, self.ensemble.raw_rewards)
        pairs = select_pairs(self.buffer, count, L, self.rng, mode=mode, factor=self.cfg.candidate_factor,
                             score=score, newer_than=newer_than)
        queries = []
        first = self.store.num_queries()
        for i, (le, ls, re_, rs) in enumerate(pairs):
            left, right = self.buffer.segment(le, ls, L), self.buffer.segment(re_, rs, L)
            qid = query_id(self.cfg.seed, first + i)
            queries.append(Query(qid, left, right))
            self.in_memory[qid] = (left.obs, left.actions, right.obs, right.actions)
        self.labeler.post(self.store, queries, env_steps)
        return len(queries)

    def _add_answer(self, a) -> None:
        self.ingested.append(a.id)
        seg = self.in_memory.pop(a.query_id, None)
        if a.answer not in ANSWER_MU:  # incomparable: kept in the store, never trained on
            return
        if seg is None:
            q = self.store.query(a.query_id)
            seg = (q.left.obs, q.left.actions, q.right.obs, q.right.actions)
        self.dataset.add(*seg, a.answer, key=a.query_id)

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

    # -- fitting -------------------------------------------------------------------------------------
    def _fit(self, steps_since_fit: int, final: bool) -> None:
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
        self.reward_metrics = _fit_metrics(fit)
        self._update_normalization(fit)

    def _install_fit(self) -> None:
        """Background fits: wait for the one started at the last refit and use it from now on."""
        if self.fitter is not None:
            done = self.fitter.install(self.ensemble)
            if done is not None:
                self.reward_metrics = _fit_metrics(done)
                self._update_normalization(done)

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

    # -- what the run records --------------------------------------------------------------------------
    def metrics(self) -> dict[str, float]:
        counts = self.store.counts()
        m = {"labels/posted": self.store.num_queries(),
             "labels/answered": sum(counts[k] for k in ("left", "right", "equal", "incomparable")),
             "labels/trainable": len(self.dataset), "reward/comparisons_trained": self.ensemble.comparisons_seen}
        answered = sum(counts[k] for k in ("left", "right", "equal"))
        if answered:
            m["labels/equal_share"] = counts["equal"] / answered
        m.update({k: v for k, v in self.reward_metrics.items() if v is not None})
        m.update(self._reward_quality())
        return m

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
        true = self.buffer.gather(envs, starts, L, "true_rewards").sum(1) - self.end_penalty * ends
        out = {}
        if np.std(pred) > 0 and np.std(true) > 0:
            out["reward/pred_true_corr"] = float(np.corrcoef(pred, true)[0, 1])
        a, b = pred[::2], pred[1::2]
        ta, tb = true[::2], true[1::2]
        decided = ta != tb
        if decided.any():
            out["reward/true_pref_accuracy"] = float(np.mean((a > b)[decided] == (ta > tb)[decided]))
        return out

    def status(self) -> dict:
        counts = self.store.counts()
        return {"labels_answered": sum(counts.get(k, 0) for k in ("left", "right", "equal", "incomparable")),
                "labels_pending": counts.get("pending", 0), "label_budget": self.cfg.label_budget,
                "pretrain_epoch": self.pretraining.epoch, "pretrain_epochs": self.cfg.pretrain_epochs}

    def labels_used(self) -> int:
        return len(self.store.current_answers())

    # -- checkpoints -----------------------------------------------------------------------------------
    def save(self, state: dict) -> None:
        state["counters"].update(last_reward_fit=self.last_reward_fit, pretraining=self.pretraining.state_dict())
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

    def load(self, state: dict) -> None:
        c = state["counters"]
        self.last_reward_fit = c["last_reward_fit"]
        if "pretraining" in c:
            self.pretraining = Plateau(**c["pretraining"])
        else:  # checkpoints from before fit schedules: a count of fixed epochs
            trained = c["phase"] == "training"
            self.pretraining.epoch = c.get("pretrain_epoch", self.cfg.pretrain_epochs if trained else 0)
        self.ensemble.load_state_dict(state["ensemble"])
        self.reward_metrics = dict(state.get("reward_metrics", {}))
        if "reward_trainer" in state:
            self.fitter = BackgroundFit.copy_of(self.ensemble)
            self.fitter.trainer.load_state_dict(state["reward_trainer"])
            self.fitter.pending = state["reward_fit_pending"]
        # Re-add the checkpoint's comparisons from the store, in the same order: bootstrap and
        # validation splits are seeded by query id, so the rebuilt dataset is the one the
        # checkpoint had, without storing gigabytes of frames in the checkpoint.
        by_id = {a.id: a for a in self.store.all_answers()}
        self.ingested = []
        for aid in state["ingested"]:
            self._add_answer(by_id[aid])
        self.fit_keys = set(state["fit_keys"]) if "fit_keys" in state else set(self.dataset.keys())
        if "labeler" in state and hasattr(self.labeler, "set_state"):
            self.labeler.set_state(state["labeler"])

    def start_fresh(self) -> None:
        if self.cfg.seed_labels:
            copied = self.store.import_from(LabelStore(self.cfg.seed_labels))
            print(f"seeded {copied} labels from {self.cfg.seed_labels}", flush=True)

    def export(self, run_dir: Path) -> None:
        torch.save(self.ensemble.state_dict(), run_dir / "reward_model.pt.tmp")
        os.replace(run_dir / "reward_model.pt.tmp", run_dir / "reward_model.pt")

    def close(self) -> None:
        if self.fitter is not None and self.fitter.running:  # after an error: let the thread end
            try:
                self.fitter.wait()
            except Exception:  # noqa: BLE001 - the loop's own error is the one being raised
                pass
        self.labeler.close()
        self.store.close()

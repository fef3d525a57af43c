"""A tiny learner on CartPole and reading what a run wrote: the learner's integration tests share these."""

from __future__ import annotations

import csv

from rlhp_core.cli import labeler_for
from rlhp_core.config import TrainConfig
from rlhp_core.label_store import LabelStore
from rlhp_core.train import Learner


def make_learner(cfg: TrainConfig, **kw) -> Learner:
    """A Learner with the labeler ``cfg`` names, as the command line builds it."""
    return Learner(cfg, labeler=labeler_for(cfg), **kw)


def tiny(run_dir, **kw) -> TrainConfig:
    base = dict(env_id="CartPole-v1", algo="ppo", num_envs=2, n_steps=64, total_steps=1_536, label_budget=24,
                pretrain_epochs=3, reward_update_every=256, log_every=256, checkpoint_every=512,
                segment_length=10, run_dir=str(run_dir), progress=False)
    base.update(kw)
    return TrainConfig(**base)


def episode_rows(run_dir):
    with open(run_dir / "episodes.csv", newline="") as f:
        return list(csv.DictReader(f))


def metrics_rows(run_dir):
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def answers(run_dir):
    store = LabelStore(run_dir / "labels.sqlite")
    out = []
    for a in store.current_answers():
        q = store.query(a.query_id)
        out.append((a.query_id, a.answer, q.left.obs.tobytes(), q.right.obs.tobytes()))
    return out

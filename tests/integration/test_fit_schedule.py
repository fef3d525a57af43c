"""The reward model's fit schedules (rlhp_core/fit_schedule.py): when it trains and how much."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from rlhp_core.config import DEFAULT_FIT_SCHEDULE, TrainConfig, resolve
from rlhp_core.fit_schedule import LabelFit, Plateau, RatioFit, make_fit_schedule, parse_fit_schedule
from rlhp_core.cli import train


class LossSequence:
    """A stand-in ensemble whose train() returns the given validation losses, one per call."""

    n_members = 1

    def __init__(self, losses):
        self.losses = list(losses)
        self.calls = []

    def train(self, dataset, comparisons):
        self.calls.append(comparisons)
        return {"train_loss_eval": 0.5}

    def validation_loss(self, dataset):
        return self.losses[len(self.calls) - 1]

    def evaluate(self, dataset, max_items):
        assert max_items is None  # the final metrics are on every held-out comparison
        return {"val_loss": self.losses[len(self.calls) - 1], "evaluated": True}


class Labels:
    def __init__(self, n):
        self.n = n

    def train_multiset(self, member):
        return list(range(self.n))


def test_plateau_stops_after_patience_epochs_without_improvement():
    ens = LossSequence([0.69, 0.60, 0.55, 0.5501, 0.56, 0.40, 0.30])
    fit = Plateau(patience=2, min_epochs=1, max_epochs=50).run(ens, Labels(40))
    assert len(ens.calls) == 5 and fit["epoch"] == 5  # best at epoch 3; epochs 4 and 5 did not beat it
    assert fit["evaluated"]
    assert ens.calls == [40] * 5  # whole epochs over the labels


def test_plateau_keeps_to_its_minimum_and_maximum_and_without_patience_runs_all_epochs():
    flat = [0.69] * 30
    ens = LossSequence(flat)
    Plateau(patience=1, min_epochs=6, max_epochs=50).run(ens, Labels(8))
    assert len(ens.calls) == 6
    ens = LossSequence([1.0 / (k + 1) for k in range(30)])  # always improving
    Plateau(patience=1, min_epochs=1, max_epochs=7).run(ens, Labels(8))
    assert len(ens.calls) == 7
    ens = LossSequence(flat)
    Plateau(patience=None, min_epochs=12, max_epochs=12).run(ens, Labels(8))
    assert len(ens.calls) == 12


def test_plateau_resumes_where_it_stopped():
    losses = [0.69, 0.60, 0.55, 0.5501, 0.56, 0.40]
    whole = LossSequence(losses)
    Plateau(2, 1, 50).run(whole, Labels(10))
    first = LossSequence(losses)
    p = Plateau(2, 1, 50)
    p.run(first, Labels(10), until_epoch=2)
    assert len(first.calls) == 2 and not p.done
    rest = LossSequence(losses[2:])
    Plateau(**p.state_dict()).run(rest, Labels(10))
    assert len(first.calls) + len(rest.calls) == len(whole.calls)


def test_label_fit_trains_only_when_the_labels_have_grown_and_at_the_end_on_any_new_label():
    s = LabelFit(pretrain_epochs=200, growth=0.1)
    assert LabelFit(pretrain_epochs=4).pretraining() == Plateau(2, 4, 4)
    assert s.refit(1000, labels_at_fit=100, new_labels=9) is None
    assert s.refit(1000, labels_at_fit=100, new_labels=10) is not None
    assert s.refit(1000, labels_at_fit=100, new_labels=0, final=True) is None
    assert s.refit(1000, labels_at_fit=100, new_labels=1, final=True) is not None
    assert s.pretraining() == Plateau(2, 10, 200)


def test_ratio_fit_trains_the_papers_comparisons_per_step_new_labels_or_not():
    s = RatioFit(pretrain_epochs=50, ratio=0.1)
    ens = LossSequence([0.5])
    s.refit(1234, labels_at_fit=100, new_labels=0)(ens, Labels(100))
    assert ens.calls == [123]
    assert s.pretraining() == Plateau(None, 50, 50)


@pytest.mark.parametrize("spec, message", [
    ("weekly", "'weekly' is not one of"),
    ("ratio:0.2", "is not KNOB=VALUE"),
    ("ratio:per_label=0", "per_label must be >= 1"),
    ("ratio:growth=0.1", "is not KNOB=VALUE"),
    ("labels:speed=3", "is not KNOB=VALUE"),
    ("labels:patience", "is not KNOB=VALUE"),
    ("labels:patience=two", "patience must be a int, got 'two'"),
    ("labels:growth=nan", "growth must be a finite number"),
    ("labels:min_epochs=-1", "min_epochs must be >= 0"),
    ("labels:min_epochs=5,max_epochs=3", "max_epochs must be >= 1 and >= min_epochs"),
])
def test_bad_schedule_specs_are_refused_by_name(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_fit_schedule(spec)
    with pytest.raises(ValueError, match="reward_fit_schedule"):
        resolve(TrainConfig(reward_fit_schedule=spec))


def test_specs_with_knobs_reach_the_schedule():
    cfg = resolve(TrainConfig(reward_fit_schedule="labels:growth=0.25, patience=3,max_epochs=40", pretrain_epochs=7))
    assert make_fit_schedule(cfg) == LabelFit(7, growth=0.25, patience=3, max_epochs=40)
    assert resolve(TrainConfig()).reward_fit_schedule == DEFAULT_FIT_SCHEDULE == "ratio"
    full = resolve(TrainConfig(reward_fit_schedule="labels")).reward_fit_schedule
    assert parse_fit_schedule(full)[1] == {
        "growth": LabelFit.growth, "patience": LabelFit.patience, "min_epochs": 1, "max_epochs": LabelFit.max_epochs,
        "pretrain_min_epochs": LabelFit.pretrain_min_epochs}
    assert cfg.reward_fit_schedule == \
        "labels:growth=0.25,patience=3,min_epochs=1,max_epochs=40,pretrain_min_epochs=10"  # as recorded
    assert make_fit_schedule(resolve(TrainConfig(reward_fit_schedule="ratio", reward_train_ratio=0.3))) == RatioFit(200, 0.3)


def _pendulum(run_dir, schedule, **kw):
    kw = {"total_steps": 6144, **kw}
    return TrainConfig(env_id="Pendulum-v1", algo="ppo", num_envs=2, n_steps=256, label_budget=40,
                       pretrain_epochs=30, reward_fit_schedule=schedule, log_every=1024, progress=False,
                       run_dir=str(run_dir), **kw)


def _last(run_dir, key):
    with open(run_dir / "metrics.csv", newline="") as f:
        return [float(r[key]) for r in csv.DictReader(f) if r[key]][-1]


@pytest.mark.slow  # real learner runs
def test_with_few_labels_the_label_schedule_trains_far_fewer_comparisons_than_the_ratio(tmp_path):
    """40 labels over 6k steps: the ratio (here 1 comparison a step) keeps training on the same
    labels; the label schedule trains when labels came, and every label is in the final model."""
    trained = {}
    for schedule in ("ratio", "labels"):
        d = tmp_path / schedule
        summary = train(_pendulum(d, schedule, reward_train_ratio=1.0))
        assert summary["labels"] == 40
        trained[schedule] = torch.load(d / "reward_model.pt", weights_only=True)["comparisons_seen"]
    assert trained["ratio"] >= 0.5 * 6144  # minibatches are smaller than 32 while the labels are few
    assert trained["labels"] < 0.5 * trained["ratio"], trained


@pytest.mark.slow  # real learner runs
def test_a_run_from_before_fit_schedules_resumes_with_the_ratio(tmp_path):
    d = tmp_path / "old"
    train(_pendulum(d, "ratio", reward_train_ratio=0.05, total_steps=4096))
    recorded = json.loads((d / "config.json").read_text())
    assert recorded["reward_fit_schedule"] == "ratio"
    del recorded["reward_fit_schedule"]  # as written by the code before the field existed
    (d / "config.json").write_text(json.dumps(recorded))
    summary = train(_pendulum(d, None, reward_train_ratio=0.05, total_steps=6144))
    assert summary["env_steps"] == 6144
    assert json.loads((d / "config.json").read_text())["reward_fit_schedule"] == "ratio"
    assert _last(d, "reward/comparisons_trained") >= 0.05 * 6144


def test_a_true_reward_run_resumes_whatever_fit_schedule_is_asked(tmp_path):
    """A sweep may pin the schedule for its label-using cells; the baseline trains no reward model."""
    cfg = dict(env_id="CartPole-v1", reward="true", num_envs=2, n_steps=64, log_every=256, progress=False,
               run_dir=str(tmp_path / "base"))
    train(TrainConfig(reward_fit_schedule="ratio", total_steps=512, **cfg))
    assert train(TrainConfig(reward_fit_schedule="labels", total_steps=1024, **cfg))["env_steps"] == 1024
    with pytest.raises(ValueError, match="different configuration.*gamma"):
        train(TrainConfig(reward_fit_schedule="labels", total_steps=2048, gamma=0.9, **cfg))


def test_ratio_with_a_per_label_cap_stops_passes_over_unchanged_labels():
    s = make_fit_schedule(resolve(TrainConfig(reward_fit_schedule="ratio:per_label=20", reward_train_ratio=0.1)))
    assert s == RatioFit(200, 0.1, per_label=20)
    assert s.refit(1000, labels_at_fit=100, new_labels=0) is None  # nothing new: no pass over the same labels
    slow, fast = LossSequence([0.5]), LossSequence([0.5])
    s.refit(1000, labels_at_fit=100, new_labels=2)(slow, Labels(102))
    s.refit(1000, labels_at_fit=100, new_labels=9)(fast, Labels(109))
    assert slow.calls == [40] and fast.calls == [100]  # labels slow: 20 a label; fast: the paper's ratio

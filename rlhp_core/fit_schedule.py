"""When the reward model trains, and how much: at the paper's fixed ratio, or as the labels need.

The paper trained its predictor asynchronously on its own GPU; how many passes it made over the
labels followed from that hardware, about 0.1 comparisons per agent step. On a CPU that ratio
is most of the learner's work, and when labels come slowly most of it goes to passes over
unchanged labels: 290 labels over 1M agent steps at 0.1 are some 350 epochs over the same
pairs. Two schedules, one interface (``pretraining()`` and ``refit()``):

- ``ratio`` (:class:`RatioFit`, the default): the paper's, ``reward_train_ratio`` comparisons
  per agent step at every refit and ``pretrain_epochs`` epochs of pretraining. Its knob
  ``per_label=N`` caps each refit at N comparisons per label new since the last fit (and skips
  refits with no new label): identical to the paper's while labels come fast, no passes over
  unchanged labels while they come slowly (the Enduro comparison's setting, 20).
- ``labels`` (:class:`LabelFit`): a refit trains only when the label set has grown by a
  fraction ``growth`` (0.25) since the last fit (or, at the run's end, by any label, so no label
  goes untrained). Each fit runs whole epochs over the current labels, warm-started, until the
  mean validation loss of the members has not improved for ``patience`` epochs (2; at least
  ``min_epochs`` 1, at most ``max_epochs`` 20). Pretraining on the initial labels is the same
  rule from scratch, so it runs at least ``pretrain_min_epochs`` (10: a fresh CNN's loss can sit
  at ln 2 for a few epochs) and at most ``pretrain_epochs``. Adaptive L2 acts after every
  epoch, as before. On Pendulum at a sparse label rate it was clearly worse per label than the
  paper's ratio (results/speed/fit_schedule.md), so it is an option, not the default.

Both are deterministic given the labels (epochs draw from the ensemble's own generators), so
same seed, same numbers, resumed or not: a refit's fit runs whole between checkpoints, and
pretraining's progress (:class:`Plateau`) is checkpointed with the run.

Spec strings (``TrainConfig.reward_fit_schedule``): ``ratio``, ``ratio:per_label=20``,
``labels``, or ``labels`` with knobs, e.g. ``labels:growth=0.25,patience=3,max_epochs=40``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable

FIT_SCHEDULES = ("labels", "ratio")
_RATIO_KNOBS = {"per_label": int}
_LABEL_KNOBS = {"growth": float, "patience": int, "min_epochs": int, "max_epochs": int, "pretrain_min_epochs": int}

# A fit job: train ``ensemble`` on ``dataset`` and return the last train() call's metrics.
FitJob = Callable[["RewardEnsemble", "PreferenceDataset"], dict]  # noqa: F821 - names for the reader


def epoch_size(ensemble, dataset) -> int:
    """Comparisons per member in one pass over its bootstrap multiset."""
    return max(1, round(sum(len(dataset.train_multiset(j)) for j in range(ensemble.n_members)) / ensemble.n_members))


@dataclass
class Plateau:
    """Epochs over the labels until the validation loss stops improving (resumable: its fields are its state).

    ``patience`` None never stops early: exactly ``max_epochs`` epochs. An improvement is a mean
    validation loss (eval mode, on every held-out comparison: ``RewardEnsemble.validation_loss``)
    below 0.999 x the best so far; where no member has validation pairs yet, the eval-mode
    training loss of the epoch's metrics stands in.
    """

    patience: int | None
    min_epochs: int
    max_epochs: int
    epoch: int = 0
    best: float = math.inf
    since_best: int = 0

    @property
    def done(self) -> bool:
        if self.epoch >= self.max_epochs:
            return True
        return self.patience is not None and self.epoch >= self.min_epochs and self.since_best >= self.patience

    def record(self, metrics: dict, val_loss: float = math.nan) -> None:
        self.epoch += 1
        loss = val_loss
        if math.isnan(loss):
            loss = metrics.get("train_loss_eval", math.nan)
        if not math.isnan(loss) and loss < 0.999 * self.best:
            self.best, self.since_best = loss, 0
        else:
            self.since_best += 1

    def run(self, ensemble, dataset, until_epoch: int | None = None) -> dict:
        """Train epoch by epoch until done (or until ``until_epoch``, to checkpoint in between).
        Returns the last epoch's metrics with ``epoch`` (epochs of this fit so far)."""
        per_epoch = epoch_size(ensemble, dataset)
        fit: dict = {}
        while not self.done and (until_epoch is None or self.epoch < until_epoch):
            fit = ensemble.train(dataset, per_epoch)
            self.record(fit, ensemble.validation_loss(dataset) if self.patience is not None else math.nan)
            fit["epoch"] = self.epoch
        if fit and self.done and self.patience is not None:
            # the fit's metrics (and the chance gate of rlhp_core/reward/normalization.py) on every held-out
            # comparison, not on the per-epoch sample
            fit.update(ensemble.evaluate(dataset, max_items=None))
        return fit

    def state_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class LabelFit:
    """Train when the labels have grown; each fit runs until the validation loss plateaus (module docstring)."""

    pretrain_epochs: int
    growth: float = 0.25
    patience: int = 2
    min_epochs: int = 1
    max_epochs: int = 20
    pretrain_min_epochs: int = 10

    def pretraining(self) -> Plateau:
        return Plateau(self.patience, min(self.pretrain_min_epochs, self.pretrain_epochs), self.pretrain_epochs)

    def refit(self, steps_since_fit: int, labels_at_fit: int, new_labels: int, final: bool = False) -> FitJob | None:
        if new_labels < 1 or (not final and new_labels < self.growth * labels_at_fit):
            return None
        plateau = Plateau(self.patience, self.min_epochs, self.max_epochs)
        return lambda ensemble, dataset: plateau.run(ensemble, dataset)


@dataclass(frozen=True)
class RatioFit:
    """The paper's schedule: ``ratio`` comparisons per agent step since the last refit, new labels or
    not. With ``per_label``: at most that many comparisons per label new since the last fit, and no
    fit without one, so passes over unchanged labels stop when labels come slowly (while they come
    fast, the ratio is the smaller and this is the paper's schedule)."""

    pretrain_epochs: int
    ratio: float
    per_label: int | None = None

    def pretraining(self) -> Plateau:
        return Plateau(None, self.pretrain_epochs, self.pretrain_epochs)

    def refit(self, steps_since_fit: int, labels_at_fit: int, new_labels: int, final: bool = False) -> FitJob | None:
        comparisons = max(1, int(round(self.ratio * steps_since_fit)))
        if self.per_label is not None:
            comparisons = min(comparisons, self.per_label * new_labels)
            if comparisons < 1:
                return None
        return lambda ensemble, dataset: ensemble.train(dataset, comparisons)


def parse_fit_schedule(spec: str) -> tuple[str, dict]:
    """``'labels:growth=0.2,patience=3'`` -> ``('labels', {'growth': 0.2, 'patience': 3})``; ValueError naming
    the bad part and what is allowed."""
    name, _, knobs = spec.strip().partition(":")
    if name not in FIT_SCHEDULES:
        raise ValueError(f"reward_fit_schedule {spec!r}: {name!r} is not one of {FIT_SCHEDULES}")
    allowed = _RATIO_KNOBS if name == "ratio" else _LABEL_KNOBS
    out: dict = {}
    for part in filter(None, (p.strip() for p in knobs.split(","))):
        key, eq, value = part.partition("=")
        key = key.strip()
        if key not in allowed or not eq:
            raise ValueError(f"reward_fit_schedule {spec!r}: {part!r} is not KNOB=VALUE with a knob of {tuple(allowed)} "
                             f"({name!r}'s; the ratio itself is reward_train_ratio)")
        try:
            out[key] = allowed[key](value.strip())
        except ValueError:
            raise ValueError(f"reward_fit_schedule {spec!r}: {key} must be a {allowed[key].__name__}, "
                             f"got {value.strip()!r}") from None
    if name == "ratio":
        if out.get("per_label", 1) < 1:
            raise ValueError(f"reward_fit_schedule {spec!r}: per_label must be >= 1, got {out['per_label']}")
        return name, out
    growth = out.get("growth", LabelFit.growth)
    if not (math.isfinite(growth) and growth >= 0):
        raise ValueError(f"reward_fit_schedule {spec!r}: growth must be a finite number >= 0, got {growth}")
    for key in ("patience", "min_epochs", "pretrain_min_epochs"):
        if out.get(key, 0) < 0:
            raise ValueError(f"reward_fit_schedule {spec!r}: {key} must be >= 0, got {out[key]}")
    if out.get("max_epochs", LabelFit.max_epochs) < max(1, out.get("min_epochs", LabelFit.min_epochs)):
        raise ValueError(f"reward_fit_schedule {spec!r}: max_epochs must be >= 1 and >= min_epochs")
    return name, out


def canonical_fit_schedule(spec: str) -> str:
    """The spec with every knob written out (``'labels'`` -> ``'labels:growth=0.25,patience=2,...'``), as a
    run records it: a later change of the defaults then never changes a run in flight."""
    name, knobs = parse_fit_schedule(spec)
    if name == "ratio":
        return "ratio" + (f":per_label={knobs['per_label']}" if "per_label" in knobs else "")
    full = {k: knobs.get(k, getattr(LabelFit, k)) for k in _LABEL_KNOBS}
    return "labels:" + ",".join(f"{k}={v}" for k, v in full.items())


def make_fit_schedule(cfg) -> LabelFit | RatioFit:
    """The schedule a resolved TrainConfig asks for."""
    name, knobs = parse_fit_schedule(cfg.reward_fit_schedule)
    if name == "ratio":
        return RatioFit(cfg.pretrain_epochs, cfg.reward_train_ratio, **knobs)
    return LabelFit(cfg.pretrain_epochs, **knobs)

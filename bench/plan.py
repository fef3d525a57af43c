"""The two kinds of sweep behind one interface: which trials a grid or a search runs, and when it is done.

A **grid** (:class:`GridSweep`) runs every method x budget x teacher x seed cell once: each cell
is queued as a trial carrying the cell's parameters, and the study is done when every cell has a
finished trial. A **search** (:class:`SearchSweep`) lets TPE sample the hyperparameters of a
number of trials at one budget, and is done when that many have finished. Everything that
differs between the two lives here, behind :class:`SweepKind`: which flags apply, what the study
records of them, what is queued, the sampler, what one trial runs, how far the study is, and what
the plan (``--dry-run``) and the closing summary say. The rest of the sweep (bench.sweep,
bench.study, bench.worker, bench.trial) asks ``settings.plan`` and never which kind it is.
"""

from __future__ import annotations

import argparse
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import optuna
from optuna.trial import TrialState

from rlhp_core.config import TrainConfig, is_atari, resolve

from .presets import MEASURED_SPS, METHOD_NAMES, METHODS, SEARCHED, Preset, hparams_to_config, suggest_hparams
from .settings import MAX_TRIALS, Settings, UsageError, teacher_slug

DONE = (TrialState.COMPLETE, TrialState.PRUNED)
ACTIVE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
AXES = ("method", "label_budget", "seed")
"""Trial parameters of a grid cell."""


@dataclass(frozen=True)
class Cell:
    """One cell of a grid: a method at a budget (and teacher, on a teacher axis) and seed."""

    method: str
    budget: int
    seed: int
    teacher: str = ""
    """The cell's teacher spec on a sweep with a teacher axis (--teachers); "" = the sweep's one teacher."""

    @property
    def key(self) -> str:
        """The cell's name: its trial's ``cell`` and ``run_key`` user attributes and its run directory."""
        if not METHODS[self.method].uses_labels:
            return f"{self.method}-s{self.seed}"
        if self.teacher:
            return f"{self.method}-{teacher_slug(self.teacher)}-b{self.budget}-s{self.seed}"
        return f"{self.method}-b{self.budget}-s{self.seed}"

    @property
    def params(self) -> dict:
        return {"method": self.method, "label_budget": self.budget, "seed": self.seed}


@dataclass(frozen=True)
class TrialSpec:
    """What one trial runs, as its sweep kind reads it off the Optuna trial (:meth:`SweepKind.describe`)."""

    method: str
    budget: int
    seed: int
    run_key: str
    """The trial's run directory under trials/ (a retried trial keeps its original's)."""
    label: str
    """Its name in MLflow and on the console: the grid cell, or ``trial-NNNN``."""
    cell: str = ""
    teacher: str = ""
    """The trial's own teacher spec (a teacher axis); "" = the sweep's."""
    searched: dict = field(default_factory=dict)
    """TrainConfig fields a search sampled for it."""


def _requeue(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Queue a copy of a failed trial (same params and user attrs: same run directory and MLflow run)."""
    history = list(trial.system_attrs.get("retry_history", [])) + [trial.number]
    system_attrs = {**trial.system_attrs, "failed_trial": trial.system_attrs.get("failed_trial", trial.number),
                    "retry_history": history}
    user_attrs = {k: v for k, v in trial.user_attrs.items() if k not in ("interrupted", "error")}
    study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, params=trial.params,
                                              distributions=trial.distributions, user_attrs=user_attrs,
                                              system_attrs=system_attrs))


def _not_retried(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """The failed trials no copy has been queued for yet."""
    retried: set[int] = set()
    for t in trials:
        retried.update(t.system_attrs.get("retry_history", []))
    return [t for t in trials if t.state == TrialState.FAIL and t.number not in retried]


class SweepKind(ABC):
    """How one kind of sweep plans, queues, describes and counts its trials (a grid or a search)."""

    name: ClassVar[str]
    """The kind as presets, the study's fingerprint and sweep.json name it."""
    unit: ClassVar[str]
    """What its progress counts: 'cells' or 'trials'."""

    def __init__(self, settings: Settings):
        self.settings = settings

    # -- the command line (before there are settings) ------------------------------------------------
    @classmethod
    @abstractmethod
    def check_flags(cls, preset: Preset, args: argparse.Namespace, *, budgets: tuple[int, ...],
                    methods: tuple[str, ...], seeds: int, trials: int, teachers: tuple[str, ...]) -> tuple[str, ...]:
        """Refuse (UsageError) the flags this kind does not take or sizes it cannot run; returns the methods."""

    @classmethod
    @abstractmethod
    def axes(cls, preset: Preset) -> str:
        """The preset's size in ``--help``."""

    # -- what the study records --------------------------------------------------------------------------
    def study_settings(self) -> dict:
        """Settings of this kind beside the shared ones in the study's fingerprint and the sweep run's params."""
        return {}

    # -- the plan ----------------------------------------------------------------------------------------
    @abstractmethod
    def configs(self) -> list[tuple[str, TrainConfig]]:
        """(where, config) of the trials to check before anything runs."""

    @abstractmethod
    def label_use(self) -> list[bool]:
        """Per planned trial: whether it uses labels (its steps/s, for the wall-time estimate)."""

    @abstractmethod
    def plan_lines(self) -> list[str]:
        """What the plan says after its heading: the cells, or what the search searches."""

    @abstractmethod
    def sampler(self) -> optuna.samplers.BaseSampler:
        """The study's sampler."""

    @abstractmethod
    def enqueue_missing(self, study: optuna.Study) -> tuple[int, int]:
        """Queue what this sweep still needs (under the sweep lock). Returns (new trials, re-queued failed ones)."""

    # -- one trial ---------------------------------------------------------------------------------------
    @abstractmethod
    def describe(self, trial: optuna.Trial, system_attrs: dict) -> TrialSpec:
        """What ``trial`` runs (its parameters are suggested here, in a fixed order)."""

    # -- how far the study is ------------------------------------------------------------------------
    def has_work(self, counts: dict[TrialState, int]) -> bool:
        """Whether a worker has a trial to run, given the study's trials by state."""
        return bool(counts[TrialState.WAITING]) or self._wants_more(counts)

    @abstractmethod
    def _wants_more(self, counts: dict[TrialState, int]) -> bool:
        """Whether the sampler should add a trial, none being queued."""

    @abstractmethod
    def progress(self, study: optuna.Study) -> tuple[int, int]:
        """(done, total) in :attr:`unit`."""

    @abstractmethod
    def summary_lines(self, study: optuna.Study) -> list[str]:
        """The outcome so far, after the sweep's closing counts."""


def _cells_per_seed(methods: tuple[str, ...], budgets: tuple[int, ...], teachers: tuple[str, ...]) -> int:
    """Cells of a grid per seed (as GridSweep.cells() would list them), without listing them."""
    return sum(len(budgets) * max(1, len(teachers)) if METHODS[m].uses_labels else 1 for m in methods)


class GridSweep(SweepKind):
    """Every method x budget x teacher x seed cell once, each a queued trial with the cell's parameters."""

    name, unit = "grid", "cells"

    @classmethod
    def check_flags(cls, preset, args, *, budgets, methods, seeds, trials, teachers):
        if args.trials is not None:
            raise UsageError(f"--trials applies to search presets; preset {preset.name!r} runs every "
                             f"budget x method x seed cell once (size it with --budgets/--methods/--seeds)")
        per_seed = _cells_per_seed(methods, budgets, teachers)
        if per_seed * seeds > MAX_TRIALS:
            raise UsageError(f"--seeds {seeds}/--budgets/--methods/--teachers: the grid would have {per_seed} cells "
                             f"per seed x {seeds} seeds; allowed: at most {MAX_TRIALS} cells per study")
        return methods

    @classmethod
    def axes(cls, preset):
        return f"budgets {','.join(map(str, preset.budgets))}; methods {','.join(preset.methods)}; {preset.seeds} seed(s)"

    def cells(self) -> list[Cell]:
        """The grid's cells in run order: every method's, budget's and teacher's seed 0 first, so that a
        partial sweep already compares them."""
        s = self.settings
        out: list[Cell] = []
        for method in s.methods:
            uses_labels = METHODS[method].uses_labels
            budgets = s.budgets if uses_labels else (0,)
            teachers = s.teachers if (uses_labels and s.teachers) else ("",)
            for teacher in teachers:
                for budget in budgets:
                    for seed in s.seeds:
                        out.append(Cell(method, budget, seed, teacher))
        out.sort(key=lambda c: c.seed)  # stable: cells keep their order within a seed
        return out

    def _config(self, cell: Cell) -> TrainConfig:
        return self.settings.config(run_key=cell.key, method=cell.method, budget=cell.budget, seed=cell.seed,
                                    teacher=cell.teacher)

    def configs(self):
        return [(f"cell {c.key}", self._config(c)) for c in self.cells()]

    def label_use(self):
        return [METHODS[c.method].uses_labels for c in self.cells()]

    def plan_lines(self):
        cells = self.cells()
        lines = [f"{len(cells)} cells:"]
        for cell in cells:
            c = resolve(self._config(cell))
            what = "no labels" if c.reward == "true" else (
                f"{c.label_budget} labels, {c.initial_labels} up front, {c.query_selection} queries, "
                f"ensemble {c.ensemble_size}")
            lines.append(f"  {cell.key:28s} {what}" + (f", teacher {c.labeler}" if cell.teacher else ""))
        return lines

    def sampler(self):
        return optuna.samplers.RandomSampler(seed=0)  # never used: every grid trial is enqueued

    def enqueue_missing(self, study):
        """Every cell without a complete, pruned, waiting or running trial (a failed one is re-queued as a copy)."""
        trials = study.get_trials(deepcopy=False)
        unretried = {t.number for t in _not_retried(trials)}
        by_cell: dict[str, list] = {}
        for t in trials:
            if "cell" in t.user_attrs:
                by_cell.setdefault(t.user_attrs["cell"], []).append(t)
        new = requeued = 0
        for cell in self.cells():
            mine = by_cell.get(cell.key, [])
            if any(t.state in ACTIVE for t in mine):
                continue
            failed = [t for t in mine if t.number in unretried]
            if failed:
                _requeue(study, failed[-1])
                requeued += 1
            else:
                attrs = {"cell": cell.key, "run_key": cell.key}
                if cell.teacher:  # not an Optuna parameter: a categorical's choices could not grow
                    attrs["teacher"] = cell.teacher
                # skip_if_exists compares params only, which cells of different teachers share (this
                # check, under the sweep lock, is the one that counts)
                study.enqueue_trial(cell.params, user_attrs=attrs, skip_if_exists=not cell.teacher)
                new += 1
        return new, requeued

    def describe(self, trial, system_attrs):
        if isinstance(trial, optuna.trial.Trial) and "fixed_params" not in system_attrs:
            raise RuntimeError(f"trial {trial.number} was not enqueued; grid sweeps only run queued cells")
        method = trial.suggest_categorical("method", METHOD_NAMES)
        budget = trial.suggest_int("label_budget", 0, 10**9)
        seed = trial.suggest_int("seed", 0, 10**9)
        teacher = trial.user_attrs.get("teacher", "")
        cell = Cell(method, budget, seed, teacher).key
        return TrialSpec(method, budget, seed, run_key=trial.user_attrs.get("run_key", cell), label=cell, cell=cell,
                         teacher=teacher)

    def _wants_more(self, counts):
        return False

    def progress(self, study):
        wanted = {c.key for c in self.cells()}
        done = {t.user_attrs.get("cell") for t in study.get_trials(deepcopy=False) if t.state in DONE} & wanted
        return len(done), len(wanted)

    def summary_lines(self, study):
        """Per method, budget and teacher: the mean return of its complete cells."""
        rows: dict[tuple, list[float]] = {}
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            rows.setdefault((t.params.get("method"), t.params.get("label_budget"), t.user_attrs.get("teacher", "")),
                            []).append(t.value)
        lines = []
        for (method, budget, teacher), values in sorted(rows.items(),
                                                        key=lambda kv: (str(kv[0][0]), kv[0][1] or 0, kv[0][2])):
            b = "-" if not budget else f"{budget}"
            mean = sum(values) / len(values)
            who = f" teacher {teacher:26s}" if teacher else ""
            lines.append(f"  {method:18s}{who} budget {b:>6s}: mean return {mean:9.2f} over {len(values)} seed(s)")
        return lines


class SearchSweep(SweepKind):
    """TPE samples the hyperparameters (presets.SEARCHED) of a number of 'rlhp' trials at one budget, seed 0."""

    name, unit = "search", "trials"

    @classmethod
    def check_flags(cls, preset, args, *, budgets, methods, seeds, trials, teachers):
        if args.seeds is not None:
            raise UsageError(f"--seeds applies to grid presets; preset {preset.name!r} runs seed 0 in every trial "
                             f"(its trials differ in hyperparameters, not seeds)")
        if len(budgets) != 1:
            raise UsageError(f"--budgets: preset {preset.name!r} searches at one budget, got {len(budgets)}")
        if args.methods and methods != ("rlhp",):
            raise UsageError(f"--methods: preset {preset.name!r} searches the 'rlhp' method only")
        if not 1 <= trials <= MAX_TRIALS:
            raise UsageError(f"--trials {trials}: must be in 1-{MAX_TRIALS}")
        if teachers:
            raise UsageError(f"--teachers applies to grid presets; preset {preset.name!r} searches with one teacher "
                             f"(--teacher)")
        return ("rlhp",)

    @classmethod
    def axes(cls, preset):
        return f"budget {preset.budgets[0]}; {preset.trials} trials; pruner {preset.pruner}"

    @property
    def budget(self) -> int:
        return self.settings.budgets[0]

    def fixed_fields(self) -> set[str]:
        """Search-space names the user fixed with --set (initial_labels fixes initial_fraction)."""
        fixed = set(self.settings.user_overrides)
        if "initial_labels" in fixed:
            fixed.add("initial_fraction")
        return fixed

    def study_settings(self):
        return {"budget": self.budget}

    def _config(self, run_key: str) -> TrainConfig:
        """A trial's config before the search samples it."""
        return self.settings.config(run_key=run_key, method="rlhp", budget=self.budget, seed=0)

    def configs(self):
        return [(f"budget {self.budget}", self._config("check"))]

    def label_use(self):
        return [True] * self.settings.trials

    def plan_lines(self):
        c = resolve(self._config("plan"))
        fixed = self.fixed_fields()
        return [f"{self.settings.trials} trials at {c.label_budget} labels; TPE searches "
                f"{', '.join(k for k in SEARCHED if k not in fixed)}; pruner {self.settings.pruner}"]

    def sampler(self):
        # constant_liar: workers running in parallel do not all sample the same point
        startup = min(10, max(2, self.settings.trials // 3))
        return optuna.samplers.TPESampler(constant_liar=True, n_startup_trials=startup)

    def enqueue_missing(self, study):
        """Trials that were interrupted (Ctrl-C) are re-queued; TPE samples the rest."""
        requeued = 0
        for t in _not_retried(study.get_trials(deepcopy=False)):
            if t.user_attrs.get("interrupted"):
                _requeue(study, t)
                requeued += 1
        return 0, requeued

    def describe(self, trial, system_attrs):
        s = self.settings
        frames = s.env_steps * (s.overrides.get("frameskip", 4) if is_atari(s.env_id) else 1)
        searched = suggest_hparams(trial, total_frames=frames, fixed=self.fixed_fields())
        origin = system_attrs.get("failed_trial", trial.number)
        return TrialSpec("rlhp", self.budget, 0, run_key=trial.user_attrs.get("run_key", f"{origin:04d}"),
                         label=f"trial-{trial.number:04d}", searched=hparams_to_config(searched, self.budget))

    def _wants_more(self, counts):
        return sum(counts[s] for s in ACTIVE) < self.settings.trials

    def progress(self, study):
        return sum(t.state in DONE for t in study.get_trials(deepcopy=False)), self.settings.trials

    def summary_lines(self, study):
        """The best complete trial so far."""
        if not any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
            return []
        best = study.best_trial
        return [f"Best trial {best.number}: return {best.value:.2f} with {best.params}"]


KINDS: dict[str, type[SweepKind]] = {k.name: k for k in (GridSweep, SearchSweep)}
"""The sweep kinds by the name presets give (Preset.kind)."""


# ================================================================================================
# The plan as printed (--dry-run, and before a sweep starts)
# ================================================================================================
def estimate_wall_s(settings: Settings, measured: dict[bool, float] | None = None) -> tuple[float | None, str]:
    """Single-worker wall time of the whole plan (seconds, or None when no speed is known), and
    where the steps/s came from: ``measured`` (uses labels -> the median steps/s of this
    study's finished trials) where given, else :data:`MEASURED_SPS` for the env family."""
    family = "ALE" if is_atari(settings.env_id) else settings.env_id
    total, sources = 0.0, set()
    for uses_labels in settings.plan.label_use():
        if measured and uses_labels in measured:
            sps, source = measured[uses_labels], "this study's finished trials"
        elif (family, settings.algo, uses_labels) in MEASURED_SPS:
            sps, source = MEASURED_SPS[(family, settings.algo, uses_labels)]
        else:
            return None, f"no measured steps/s for {settings.env_id} {'with' if uses_labels else 'without'} labels"
        total += settings.env_steps / sps
        sources.add(f"{sps:.0f} steps/s {'with' if uses_labels else 'without'} labels ({source})")
    return total, "; ".join(sorted(sources))


def print_plan(settings: Settings, measured: dict[bool, float] | None = None) -> None:
    """What a sweep would run: one line per grid cell (or the search's fixed settings), and how long."""
    teacher = f"teachers {' '.join(settings.teachers)}" if settings.teachers else f"teacher {settings.teacher}"
    print(f"Sweep {settings.study!r} ({settings.preset.name}, {settings.kind}): {settings.env_id}, {settings.algo}, "
          f"{teacher}, {settings.env_steps:,} env steps per trial; results in {settings.sweep_dir}")
    for line in settings.plan.plan_lines():
        print(line)
    wall, source = estimate_wall_s(settings, measured)
    if wall is None:
        print(f"Estimated wall time: unknown ({source}); run one cell to measure it.")
    else:
        print(f"Estimated wall time: {wall / 3600:.1f} h with one worker (on a 2-core machine a second worker "
              f"shares the cores the first one's background fit uses); from {source}.")

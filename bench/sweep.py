"""python -m bench.sweep: Optuna sweeps over label budgets and hyperparameters, tracked in MLflow.

With no arguments it runs the ``quick`` preset on embedded storage, nothing to start first:

    sweeps/<study>/optuna.db      the Optuna study (SQLite)
    sweeps/<study>/mlflow.db      MLflow runs (SQLite); artifacts in sweeps/<study>/mlartifacts/
    sweeps/<study>/trials/<key>/  each trial's run directory (the learner resumes from it)
    sweeps/<study>/sweep.json     where everything is, for ``python -m bench.report``

Rerunning the same command resumes the study: finished cells are kept, cells whose trial
failed or was interrupted run again (resuming their run directory), and a trial left RUNNING
by a killed worker is failed after its heartbeat goes stale and retried. Several workers (on
several machines) share one study with ``--storage postgresql://...`` and
``--tracking-uri http://...`` (an ``mlflow server``): start the same command on each.

Exit status: 0 done, 1 some trial failed, 2 bad input (nothing ran), 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import math
import os
import shlex
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import optuna
from optuna.trial import TrialState

from rlhp_core.cli import ArgumentParser, check_environment
from rlhp_core.config import ALGOS, ConfigError, TrainConfig, is_atari, parse_field, parse_int, resolve
from rlhp_core.paths import check_writable_dir

from .presets import MEASURED_SPS, METHOD_NAMES, METHODS, PRESETS, SEARCHED, Preset, hparams_to_config, suggest_hparams
from .provenance import machine
from .storage import (StorageError, SweepLock, TrackingError, check_storage_url, check_tracking_uri, mask_url,
                      open_storage, scheme_of, this_worker)

if TYPE_CHECKING:
    from .tracking import Tracker

TrainFn = Callable[..., dict]
DONE = (TrialState.COMPLETE, TrialState.PRUNED)
ACTIVE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
AXES = ("method", "label_budget", "seed")
"""Trial parameters of a grid cell."""
MAX_CONSECUTIVE_FAILURES = 3
"""A worker stops after this many failed trials in a row (a bug, not bad luck)."""
MAX_TRIALS = 10_000
"""Most grid cells or search trials one study may ask for. Each is a learner run (minutes to
days) and a row the sweep reads on every step of its loop; more is a typo (e.g. ``--seeds 1e9``,
which would also have to be enumerated before anything runs), not a plan."""
MAX_HEARTBEAT_S = 86_400
"""Longest --heartbeat-interval / --grace-period: a killed worker's trial waits a grace period
before it is retried, and a day is already far beyond any trial's silence."""
LOG_POINTS = 200
"""Metric rows a trial logs over its run (log_every = env_steps / this), unless the preset or --set
gives log_every; the learner logs at most once per RL update, so a run of fewer updates logs fewer."""


class UsageError(Exception):
    """Bad input, found before any trial starts (exit status 2)."""


# ================================================================================================
# Settings: the preset, resized by flags
# ================================================================================================
def teacher_slug(spec: str) -> str:
    """A teacher spec as it appears in cell keys and run directories: ``stoc:beta=0.1`` -> ``stoc_beta=0.1``."""
    return "".join(ch if ch.isalnum() or ch in "=.+-" else "_" for ch in spec.strip())


@dataclass(frozen=True)
class Cell:
    method: str
    budget: int
    seed: int
    teacher: str = ""
    """The cell's teacher spec on a sweep with a teacher axis (--teachers); "" = the sweep's one teacher."""

    @property
    def key(self) -> str:
        if not METHODS[self.method].uses_labels:
            return f"{self.method}-s{self.seed}"
        if self.teacher:
            return f"{self.method}-{teacher_slug(self.teacher)}-b{self.budget}-s{self.seed}"
        return f"{self.method}-b{self.budget}-s{self.seed}"

    @property
    def params(self) -> dict:
        return {"method": self.method, "label_budget": self.budget, "seed": self.seed}


@dataclass
class Settings:
    preset: Preset
    study: str
    sweep_dir: Path
    storage: str
    tracking_uri: str
    env_id: str
    algo: str
    teacher: str
    env_steps: int
    budgets: tuple[int, ...]
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    trials: int
    pruner: str
    overrides: dict
    """TrainConfig fields: the preset's, then --set's."""
    user_overrides: dict
    heartbeat_interval: int
    grace_period: int
    max_artifact_mb: float
    command: str
    teachers: tuple[str, ...] = ()
    """Teacher axis (canonical specs): one cell per teacher for label-using methods. Empty: ``teacher`` only."""

    @property
    def kind(self) -> str:
        return self.preset.kind

    def fingerprint(self) -> dict:
        """What a finished cell's result depends on. A rerun must match it; budgets/methods/seeds may grow."""
        fp = {"kind": self.kind, "preset": self.preset.name, "env_id": self.env_id, "algo": self.algo,
              "teacher": TEACHER_AXIS if self.teachers else self.teacher, "env_steps": self.env_steps,
              "overrides": json.loads(json.dumps(self.overrides, sort_keys=True, default=str))}
        if self.kind == "search":
            fp["budget"] = self.budgets[0]
        return fp

    def cells(self) -> list[Cell]:
        out: list[Cell] = []
        for method in self.methods:
            uses_labels = METHODS[method].uses_labels
            budgets = self.budgets if uses_labels else (0,)
            teachers = self.teachers if (uses_labels and self.teachers) else ("",)
            for teacher in teachers:
                for budget in budgets:
                    for seed in self.seeds:
                        out.append(Cell(method, budget, seed, teacher))
        # run order = this order: every method's, budget's and teacher's seed 0 first, so a partial sweep
        # already compares them (stable sort: they keep their order within a seed)
        out.sort(key=lambda c: c.seed)
        return out

    def config(self, *, run_key: str, method: str, budget: int, seed: int, searched: dict | None = None,
               teacher: str = "") -> TrainConfig:
        """The learner's config for one trial (unresolved: the learner resolves it)."""
        fields = {
            "env_id": self.env_id, "algo": self.algo, "labeler": teacher or self.teacher, "total_steps": self.env_steps,
            "log_every": max(1, self.env_steps // LOG_POINTS),
            "checkpoint_every": max(1, min(100_000, self.env_steps // 4)),
            **self.overrides,
            **METHODS[method].overrides(budget),
            **(searched or {}),
            "seed": seed, "label_budget": budget,
            "run_dir": str(self.sweep_dir / "trials" / run_key), "progress": False,
        }
        extra = dict(fields.get("extra") or {})
        extra.update({"sweep": self.study, "run_key": run_key})
        fields["extra"] = extra
        return TrainConfig(**fields)


TEACHER_AXIS = "per cell (--teachers)"
"""The fingerprint's teacher on a sweep with a teacher axis (the axis itself may grow, like budgets)."""

SWEEP_OWNED = {"env_id": "--env", "algo": "--algo", "labeler": "--teacher", "total_steps": "--env-steps",
               "seed": "--seeds", "label_budget": "--budgets", "run_dir": "--dir", "progress": None,
               "reward": "--methods"}


def parse_overrides(items: list[str]) -> dict:
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    out = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"--set {item!r}: expected KEY=VALUE")
        name, text = item.split("=", 1)
        name = name.strip().replace("-", "_")
        if name not in known:
            raise UsageError(f"--set {name}: unknown parameter; allowed: {', '.join(sorted(known - set(SWEEP_OWNED)))}")
        if name in SWEEP_OWNED:
            hint = f"use {SWEEP_OWNED[name]}" if SWEEP_OWNED[name] else "the sweep sets it"
            raise UsageError(f"--set {name}: the sweep owns this parameter ({hint})")
        try:
            out[name] = parse_field(name, text)
        except ValueError as exc:
            raise UsageError(f"--set {name}={text}: {exc}") from None
    return out


def _int_list(flag: str, text: str) -> tuple[int, ...]:
    try:
        values = tuple(parse_int(v.strip()) for v in text.split(",") if v.strip())
    except ValueError:
        raise UsageError(f"{flag} {text!r}: expected comma-separated integers, e.g. 290,1400,5500") from None
    if not values:
        raise UsageError(f"{flag} {text!r}: no values given")
    return values


def _check_teacher(teacher: str, env_id: str, segment_length: int, flag: str = "--teacher") -> str:
    """Build the teacher once (oracles.teacher): an unknown preset or knob is a UsageError.

    Returns the teacher's canonical spec (``stoc:beta=0.10`` -> ``stoc:beta=0.1``), or the spec as given
    when oracles is not importable.
    """
    if teacher == "human" or teacher.endswith("+human"):
        raise UsageError(f"{flag} {teacher!r}: a sweep needs a scripted teacher (nobody answers a human "
                         f"labeler's queries in a sweep); e.g. rational, stoc, mistake, skip, equal, myopic")
    try:
        import numpy as np

        from oracles.teacher import teacher_for_env
    except ImportError:
        return teacher
    try:
        return teacher_for_env(teacher, np.random.default_rng(0), env_id=env_id, segment_length=segment_length).name
    except ValueError as exc:
        raise UsageError(f"{flag} {teacher!r}: {exc}") from None


def _teacher_axis(specs: tuple[str, ...], env_id: str, segment_length: int) -> tuple[str, ...]:
    """Check and canonicalise the --teachers specs; duplicates (after canonicalising) are dropped."""
    out: list[str] = []
    slugs: dict[str, str] = {}
    for spec in specs:
        canon = _check_teacher(spec, env_id, segment_length, flag="--teachers")
        if canon in out:
            continue
        slug = teacher_slug(canon)
        if slug in slugs:
            raise UsageError(f"--teachers: {slugs[slug]!r} and {canon!r} would share the cell name {slug!r}")
        slugs[slug] = canon
        out.append(canon)
    return tuple(out)


def _int_arg(text: str) -> int:
    """argparse ``type`` of the count flags: 8, 8_000 or 8e3 (rlhp_core.config.parse_int)."""
    try:
        return parse_int(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _cells_per_seed(methods: tuple[str, ...], budgets: tuple[int, ...], teachers: tuple[str, ...]) -> int:
    """Cells of a grid per seed (as Settings.cells() would list them), without listing them."""
    return sum(len(budgets) * max(1, len(teachers)) if METHODS[m].uses_labels else 1 for m in methods)


def settings_from_args(args: argparse.Namespace, argv: list[str]) -> Settings:
    preset = PRESETS[args.preset]
    for name in ("study", "dir", "env", "teacher", "methods", "budgets", "storage", "tracking_uri"):
        if getattr(args, name) is not None and not getattr(args, name).strip():
            raise UsageError(f"--{name.replace('_', '-')} '': empty; leave the flag out for the preset's default")
    study = args.study or preset.name
    if not study.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise UsageError(f"--study {study!r}: use letters, digits, '-', '_' and '.'")
    sweep_dir = Path(args.dir or Path("sweeps") / study).resolve()
    user = parse_overrides(args.set or [])
    budgets = _int_list("--budgets", args.budgets) if args.budgets else preset.budgets
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip()) if args.methods else preset.methods
    for m in methods:
        if m not in METHODS:
            raise UsageError(f"--methods: unknown method {m!r}; allowed: {', '.join(METHOD_NAMES)}")
    if not methods:
        raise UsageError("--methods: no method given")
    if any(b < 1 for b in budgets):
        raise UsageError(f"--budgets {','.join(map(str, budgets))}: budgets must be >= 1 label")
    if preset.kind == "search":
        if args.seeds is not None:
            raise UsageError(f"--seeds applies to grid presets; preset {preset.name!r} runs seed 0 in every trial "
                             f"(its trials differ in hyperparameters, not seeds)")
        if len(budgets) != 1:
            raise UsageError(f"--budgets: preset {preset.name!r} searches at one budget, got {len(budgets)}")
        if args.methods and methods != ("rlhp",):
            raise UsageError(f"--methods: preset {preset.name!r} searches the 'rlhp' method only")
        methods = ("rlhp",)
    seeds = args.seeds if args.seeds is not None else preset.seeds
    if seeds < 1:
        raise UsageError(f"--seeds {seeds}: must be >= 1")
    trials = args.trials if args.trials is not None else preset.trials
    if preset.kind == "grid" and args.trials is not None:
        raise UsageError(f"--trials applies to search presets; preset {preset.name!r} runs every "
                         f"budget x method x seed cell once (size it with --budgets/--methods/--seeds)")
    if preset.kind == "search" and not 1 <= trials <= MAX_TRIALS:
        raise UsageError(f"--trials {trials}: must be in 1-{MAX_TRIALS}")
    env_steps = args.env_steps if args.env_steps is not None else preset.env_steps
    if env_steps < 1:
        raise UsageError(f"--env-steps {env_steps}: must be >= 1")
    if not 1 <= args.heartbeat_interval < args.grace_period <= MAX_HEARTBEAT_S:
        raise UsageError(f"--heartbeat-interval {args.heartbeat_interval} / --grace-period {args.grace_period}: "
                         f"need 1 <= heartbeat interval < grace period <= {MAX_HEARTBEAT_S} seconds")
    if not args.max_artifact_mb >= 0:  # NaN too
        raise UsageError(f"--max-artifact-mb {args.max_artifact_mb}: must be a size in MB >= 0 (inf: no limit)")
    storage = args.storage or f"sqlite:///{sweep_dir / 'optuna.db'}"
    tracking = args.tracking_uri or f"sqlite:///{sweep_dir / 'mlflow.db'}"
    if args.teachers is not None:
        teachers = tuple(t.strip() for item in args.teachers for t in item.split(";") if t.strip())
        if not teachers:
            raise UsageError("--teachers: no teacher spec given")
    else:
        teachers = preset.teachers
    if teachers and preset.kind == "search":
        raise UsageError(f"--teachers applies to grid presets; preset {preset.name!r} searches with one teacher "
                         f"(--teacher)")
    if teachers and args.teacher:
        raise UsageError(f"--teacher {args.teacher!r}: this sweep has a teacher axis ({' '.join(teachers)}); "
                         f"give the teachers with --teachers")
    if preset.kind == "grid" and _cells_per_seed(methods, budgets, teachers) * seeds > MAX_TRIALS:
        raise UsageError(f"--seeds {seeds}/--budgets/--methods/--teachers: the grid would have "
                         f"{_cells_per_seed(methods, budgets, teachers)} cells per seed x {seeds} seeds; allowed: "
                         f"at most {MAX_TRIALS} cells per study")
    return Settings(
        preset=preset, study=study, sweep_dir=sweep_dir, storage=storage, tracking_uri=tracking,
        env_id=args.env or preset.env_id, algo=args.algo or preset.algo, teacher=args.teacher or preset.teacher,
        env_steps=env_steps, budgets=tuple(budgets), methods=methods, seeds=tuple(range(seeds)), trials=trials,
        pruner=args.pruner or preset.pruner, overrides={**preset.overrides, **user}, user_overrides=user,
        heartbeat_interval=args.heartbeat_interval, grace_period=args.grace_period,
        max_artifact_mb=args.max_artifact_mb,
        command="python -m bench.sweep" + ("" if not argv else " " + shlex.join(argv)),
        teachers=teachers,
    )


def fixed_search_fields(settings: Settings) -> set[str]:
    """Search-space names the user fixed with --set (initial_labels fixes initial_fraction)."""
    fixed = set(settings.user_overrides)
    if "initial_labels" in fixed:
        fixed.add("initial_fraction")
    return fixed


def _blame(settings: Settings, fields: tuple[str, ...]) -> str:
    """The flags of this command behind TrainConfig ``fields``, for a ConfigError's message."""
    flags = [SWEEP_OWNED.get(f) or (f"--set {f}={settings.user_overrides[f]}" if f in settings.user_overrides
                                     else f"--set {f}") for f in fields]
    return "/".join(dict.fromkeys(flags))


def validate(settings: Settings) -> None:
    """Refuse, before anything is written (``--dry-run`` too), a sweep that cannot run: its folder,
    its storage and tracking URLs (their syntax: servers are reached later), the env and
    teachers, and every cell's config (budget >= initial labels, ...)."""
    try:
        check_writable_dir(settings.sweep_dir)
    except ValueError as exc:
        raise UsageError(f"--dir {str(settings.sweep_dir)!r}: {exc}") from None
    own_storage = settings.storage == f"sqlite:///{settings.sweep_dir / 'optuna.db'}"
    if not own_storage or settings.sweep_dir.is_dir():
        try:
            check_storage_url(settings.storage, create=True)
        except StorageError as exc:
            raise UsageError(f"--storage: {exc}" if not own_storage else str(exc)) from None
    if settings.tracking_uri != f"sqlite:///{settings.sweep_dir / 'mlflow.db'}":
        try:
            check_tracking_uri(settings.tracking_uri, reach=False)
        except TrackingError as exc:
            raise UsageError(f"--tracking-uri: {exc}") from None
    if settings.kind == "grid":
        cells = [(f"cell {c.key}", settings.config(run_key=c.key, method=c.method, budget=c.budget, seed=c.seed,
                                                   teacher=c.teacher)) for c in settings.cells()]
    else:
        cells = [(f"budget {settings.budgets[0]}",
                  settings.config(run_key="check", method="rlhp", budget=settings.budgets[0], seed=0))]
    # the env, the device and the seed labels once, on a cell that asks for labels if any does
    cfg = next((c for _, c in cells if c.reward == "preferences"), cells[0][1])
    try:
        check_environment(resolve(cfg), labeler=False)  # the teachers are checked next, as sweeps need them
    except ConfigError as exc:
        raise UsageError(f"{_blame(settings, exc.fields)}: {exc}") from None
    segment = settings.overrides.get("segment_length") or 25
    _check_teacher(settings.teacher, settings.env_id, segment)
    if settings.teachers:
        settings.teachers = _teacher_axis(settings.teachers, settings.env_id, segment)
    for where, cfg in cells:
        try:
            resolve(cfg)
        except ConfigError as exc:
            raise UsageError(f"{_blame(settings, exc.fields)}: {exc} ({where})") from None


# ================================================================================================
# Study set-up (under the sweep lock): create or resume, check settings, enqueue grid cells
# ================================================================================================
def _sampler(settings: Settings) -> optuna.samplers.BaseSampler:
    if settings.kind == "grid":
        return optuna.samplers.RandomSampler(seed=0)  # never used: every grid trial is enqueued
    # constant_liar: workers running in parallel do not all sample the same point
    startup = min(10, max(2, settings.trials // 3))
    return optuna.samplers.TPESampler(constant_liar=True, n_startup_trials=startup)


def _pruner(settings: Settings) -> optuna.pruners.BasePruner:
    if settings.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=settings.env_steps // 4)
    return optuna.pruners.NopPruner()


def _retried_numbers(trials: list[optuna.trial.FrozenTrial]) -> set[int]:
    out: set[int] = set()
    for t in trials:
        out.update(t.system_attrs.get("retry_history", []))
    return out


def _requeue(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Queue a copy of a failed trial (same params and user attrs: same run directory and MLflow run)."""
    history = list(trial.system_attrs.get("retry_history", [])) + [trial.number]
    system_attrs = {**trial.system_attrs, "failed_trial": trial.system_attrs.get("failed_trial", trial.number),
                    "retry_history": history}
    user_attrs = {k: v for k, v in trial.user_attrs.items() if k not in ("interrupted", "error")}
    study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, params=trial.params,
                                              distributions=trial.distributions, user_attrs=user_attrs,
                                              system_attrs=system_attrs))


def enqueue_missing(study: optuna.Study, settings: Settings) -> tuple[int, int]:
    """Queue what this sweep still needs. Returns (new cells, re-queued failed trials).

    Grid: every cell without a complete, pruned, waiting or running trial (a failed one is
    re-queued as a copy). Search: trials that were interrupted (Ctrl-C) are re-queued; TPE
    samples the rest.
    """
    trials = study.get_trials(deepcopy=False)
    retried = _retried_numbers(trials)
    new = requeued = 0
    if settings.kind == "grid":
        by_cell: dict[str, list] = {}
        for t in trials:
            if "cell" in t.user_attrs:
                by_cell.setdefault(t.user_attrs["cell"], []).append(t)
        for cell in settings.cells():
            mine = by_cell.get(cell.key, [])
            if any(t.state in ACTIVE for t in mine):
                continue
            failed = [t for t in mine if t.state == TrialState.FAIL and t.number not in retried]
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
    else:
        for t in trials:
            if t.state == TrialState.FAIL and t.user_attrs.get("interrupted") and t.number not in retried:
                _requeue(study, t)
                requeued += 1
    return new, requeued


def open_study(settings: Settings, storage, tracker: Tracker) -> tuple[optuna.Study, str]:
    """Create or load the study, check it matches these settings, find or start the parent run."""
    study = optuna.create_study(study_name=settings.study, storage=storage, direction="maximize",
                                sampler=_sampler(settings), pruner=_pruner(settings), load_if_exists=True)
    fp = settings.fingerprint()
    old = study.user_attrs.get("sweep_settings")
    if old is not None and old != fp:
        diffs = ", ".join(f"{k}: study has {old.get(k)!r}, asked {fp.get(k)!r}"
                          for k in sorted(set(old) | set(fp)) if old.get(k) != fp.get(k))
        raise UsageError(f"study {settings.study!r} in {mask_url(settings.storage)} was run with other settings "
                         f"({diffs}); repeat the original command ({study.user_attrs.get('command')}) to resume it, "
                         f"or pass --study NAME for a new sweep")
    if old is None:
        study.set_user_attr("sweep_settings", fp)
        study.set_user_attr("command", settings.command)
        study.set_user_attr("created_at", dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
        study.set_user_attr("preset", settings.preset.name)
    study.set_user_attr("last_command", settings.command)
    study.set_user_attr("mlflow_tracking_uri", mask_url(settings.tracking_uri))
    study.set_user_attr("mlflow_experiment_id", tracker.experiment_id)

    parent = study.user_attrs.get("mlflow_parent_run_id")
    tags = {"rlhp.role": "sweep", "optuna.study_name": settings.study, "optuna.storage": mask_url(settings.storage),
            "rlhp.command": settings.command, "rlhp.sweep_dir": str(settings.sweep_dir)}
    params = {"preset": settings.preset.name, "kind": settings.kind, "env_id": settings.env_id, "algo": settings.algo,
              "teacher": TEACHER_AXIS if settings.teachers else settings.teacher, "env_steps": settings.env_steps,
              "pruner": settings.pruner,
              **{f"override.{k}": v for k, v in sorted(settings.overrides.items())}}
    if settings.kind == "search":
        params["budget"] = settings.budgets[0]
    run_id, _ = tracker.start_run(f"{settings.study} (sweep)", tags=tags, params=params, reuse=parent)
    if run_id != parent:
        study.set_user_attr("mlflow_parent_run_id", run_id)
    # the grid may have grown: record its current axes on the run (tags: params are immutable)
    tracker.set_tags(run_id, {"rlhp.budgets": ",".join(map(str, settings.budgets)),
                              "rlhp.methods": ",".join(settings.methods), "rlhp.seeds": len(settings.seeds),
                              "rlhp.trials": settings.trials,
                              **({"rlhp.teachers": " ".join(settings.teachers)} if settings.teachers else {})})
    return study, run_id


def write_sweep_json(settings: Settings, study: optuna.Study, tracker: Tracker, parent: str) -> None:
    info = {
        "study": settings.study, "preset": settings.preset.name, "kind": settings.kind,
        "storage": mask_url(settings.storage), "tracking_uri": mask_url(settings.tracking_uri),
        "mlflow_experiment_id": tracker.experiment_id, "mlflow_parent_run_id": parent,
        "settings": settings.fingerprint(), "budgets": list(settings.budgets), "methods": list(settings.methods),
        "seeds": len(settings.seeds), "trials": settings.trials, "command": study.user_attrs.get("command"),
        "last_command": settings.command,
    }
    if settings.teachers:
        info["teachers"] = list(settings.teachers)
    path = settings.sweep_dir / "sweep.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    tmp.replace(path)


# ================================================================================================
# The objective: one trial = one learner run = one nested MLflow run
# ================================================================================================
class _Held:
    """The sweep lock, entered by the worker loop and released by the objective once ask() popped its trial."""

    def __init__(self, lock: SweepLock):
        self._cm = lock.hold()
        self._cm.__enter__()
        self._open = True

    def release(self) -> None:
        if self._open:
            self._open = False
            self._cm.__exit__(None, None, None)


def _default_train_fn() -> TrainFn:
    import torch

    from rlhp_core.train import run_training

    torch.set_num_threads(int(os.environ.get("RLHP_TORCH_THREADS", "1")))
    return run_training


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))


class Objective:
    def __init__(self, settings: Settings, tracker: Tracker, parent_run: str, train_fn: TrainFn | None = None,
                 *, progress: bool | None = None):
        self.settings = settings
        self.tracker = tracker
        self.parent_run = parent_run
        self._train_fn = train_fn
        self.progress = progress
        self.held: _Held | None = None
        self.last_state: TrialState | None = None
        """How the last trial ended, as this objective decided it (the worker loop counts them)."""
        self.worker = this_worker()

    @property
    def train_fn(self) -> TrainFn:
        if self._train_fn is None:
            self._train_fn = _default_train_fn()
        return self._train_fn

    # -- what this trial runs ------------------------------------------------------------------------
    @staticmethod
    def _system_attrs(trial) -> dict:
        """A study trial's system attrs (Optuna 5 keeps them off ``Trial``); {} for a FixedTrial."""
        if not isinstance(trial, optuna.trial.Trial):
            return {}
        for t in trial.study.get_trials(deepcopy=False):
            if t.number == trial.number:
                return dict(t.system_attrs)
        return {}

    def _describe(self, trial: optuna.Trial, system_attrs: dict) -> tuple[str, str, int, int, dict, str]:
        """(cell or '', method, budget, seed, searched params, run_key)."""
        s = self.settings
        origin = system_attrs.get("failed_trial", trial.number)
        if s.kind == "grid":
            if isinstance(trial, optuna.trial.Trial) and "fixed_params" not in system_attrs:
                raise RuntimeError(f"trial {trial.number} was not enqueued; grid sweeps only run queued cells")
            method = trial.suggest_categorical("method", METHOD_NAMES)
            budget = trial.suggest_int("label_budget", 0, 10**9)
            seed = trial.suggest_int("seed", 0, 10**9)
            cell = Cell(method, budget, seed, trial.user_attrs.get("teacher", "")).key
            return cell, method, budget, seed, {}, trial.user_attrs.get("run_key", cell)
        fixed = fixed_search_fields(s)
        frames = s.env_steps * (s.overrides.get("frameskip", 4) if is_atari(s.env_id) else 1)
        searched = suggest_hparams(trial, total_frames=frames, fixed=fixed)
        budget = s.budgets[0]
        run_key = trial.user_attrs.get("run_key", f"{origin:04d}")
        return "", "rlhp", budget, 0, hparams_to_config(searched, budget), run_key

    def __call__(self, trial: optuna.Trial) -> float:
        # who runs it, recorded under the sweep lock: a worker holding the lock sees no RUNNING
        # trial without its worker (run_worker tells a dead worker's trials from a live one's)
        trial.set_user_attr("worker", self.worker)
        if self.held is not None:  # ask() has popped this trial: let other workers pop theirs
            self.held.release()
        self.last_state = TrialState.FAIL
        value = self._run(trial)
        self.last_state = TrialState.COMPLETE
        return value

    def _run(self, trial: optuna.Trial) -> float:
        s = self.settings
        system_attrs = self._system_attrs(trial)
        cell, method, budget, seed, searched, run_key = self._describe(trial, system_attrs)
        trial.set_user_attr("run_key", run_key)
        if cell:
            trial.set_user_attr("cell", cell)
        teacher = trial.user_attrs.get("teacher", "")
        cfg = s.config(run_key=run_key, method=method, budget=budget, seed=seed, searched=searched, teacher=teacher)
        resolved = resolve(cfg)
        origin = system_attrs.get("failed_trial")
        label = cell or f"trial-{trial.number:04d}"
        tags = {"rlhp.role": "trial", "optuna.study_name": s.study, "optuna.trial_number": trial.number,
                "optuna.storage": mask_url(s.storage), "rlhp.method": method, "rlhp.run_key": run_key,
                "rlhp.worker": self.worker, "rlhp.run_dir": cfg.run_dir}
        if cell:
            tags["rlhp.cell"] = cell
        if teacher:
            tags["rlhp.teacher"] = teacher
        if origin is not None:
            tags["optuna.retry_of"] = origin
        params = {**dataclasses.asdict(resolved), "method": method, "sweep.preset": s.preset.name}
        run_id, _ = self.tracker.start_run(label, tags=tags, params=params, parent=self.parent_run,
                                                  reuse=trial.user_attrs.get("mlflow_run_id"))
        trial.set_user_attr("mlflow_run_id", run_id)

        state = {"prune": False, "last_return": math.nan, "step": 0}
        bar = self._bar(trial.number, label)

        def on_metrics(step: int, metrics: dict[str, float]) -> None:
            state["step"] = step
            self.tracker.log_step(run_id, Path(cfg.run_dir), step, metrics)
            ret = metrics.get("charts/episodic_return")
            if ret is not None and math.isfinite(ret):
                state["last_return"] = ret
                trial.report(float(ret), step)
                if trial.should_prune():
                    state["prune"] = True
            if bar is not None:
                bar.update(max(0, min(step, s.env_steps) - bar.n))
                post = {}
                if math.isfinite(state["last_return"]):
                    post["return"] = f"{state['last_return']:.1f}"
                if "labels/answered" in metrics:
                    post["labels"] = int(metrics["labels/answered"])
                bar.set_postfix(post, refresh=False)

        t0 = time.time()
        try:
            summary = self.train_fn(cfg, on_metrics=on_metrics, should_stop=lambda: state["prune"])
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            self.tracker.set_tags(run_id, {"rlhp.stop_reason": "interrupted (Ctrl-C); rerun the sweep to resume"})
            self.tracker.end(run_id, "KILLED")
            self._close_bar(bar)
            raise
        except BaseException as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:1000])
            with contextlib.suppress(Exception):
                self._log_artifacts(run_id, Path(cfg.run_dir), label)
            with contextlib.suppress(Exception):
                self.tracker.set_tags(run_id, {"rlhp.error": f"{type(exc).__name__}: {exc}"})
            self.tracker.end(run_id, "FAILED")
            self._close_bar(bar)
            self._say(f"[trial {trial.number}] {label}: FAILED after {time.time() - t0:.0f} s: "
                      f"{type(exc).__name__}: {exc}")
            raise
        self._close_bar(bar)

        # -- record the outcome ---------------------------------------------------------------------
        env_info = _jsonable(summary.get("env_info") or {})
        steps = int(summary.get("env_steps", state["step"]))
        final = summary.get("final_return", math.nan)
        value = final if final is not None and math.isfinite(final) else state["last_return"]
        outcome = {"final_return": value, "labels": summary.get("labels"), "env_steps": steps,
                   "sps": summary.get("sps"), "wall_time_s": summary.get("wall_time_s")}
        for k, v in outcome.items():
            if v is not None:
                trial.set_user_attr(k, v)
        trial.set_user_attr("env_info", env_info)
        trial.set_user_attr("machine", machine())
        self.tracker.log_params(run_id, {f"env/{k}": v for k, v in env_info.items()})
        self.tracker.log_metrics(run_id, steps, {f"trial/{k}": v for k, v in outcome.items() if v is not None})
        self.tracker.log_metrics(self.parent_run, trial.number, {"trial_value": value})
        self._log_artifacts(run_id, Path(cfg.run_dir), label, summary)

        if state["prune"]:
            self.tracker.set_tags(run_id, {"rlhp.stop_reason": f"pruned at step {state['step']}"})
            self.tracker.end(run_id, "KILLED")
            self.last_state = TrialState.PRUNED
            self._say(f"[trial {trial.number}] {label}: PRUNED at {state['step']} steps "
                      f"(return {state['last_return']:.1f})")
            raise optuna.TrialPruned(f"pruned at env step {state['step']} with return {state['last_return']:.2f}")
        if not math.isfinite(value):
            self.tracker.set_tags(run_id, {"rlhp.error": "no episode ended"})
            self.tracker.end(run_id, "FAILED")
            raise RuntimeError(f"no episode ended in {steps} env steps, so there is no return to optimise; "
                               f"raise --env-steps")
        self.tracker.end(run_id, "FINISHED")
        labels = summary.get("labels")
        searched_text = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items()
                                 if k not in AXES)
        self._say(f"[trial {trial.number}] {label}: return {value:.1f}"
                  + (f", {labels} labels" if labels else "")
                  + f" ({time.time() - t0:.0f} s, {summary.get('sps', 0):.0f} steps/s)"
                  + (f" [{searched_text}]" if searched_text else ""))
        return float(value)

    # -- artifacts ------------------------------------------------------------------------------------
    def _log_artifacts(self, run_id: str, run_dir: Path, label: str, summary: dict | None = None) -> None:
        """The trial's run directory (plots, run files, reward model, policy, labels: Tracker.log_run_dir)."""
        self.tracker.log_run_dir(run_id, run_dir, max_mb=self.settings.max_artifact_mb,
                                 title=f"{self.settings.study} / {label}", summary=summary)

    # -- progress -------------------------------------------------------------------------------------
    def _bar(self, number: int, label: str):
        if self.progress is False:
            return None
        from tqdm import tqdm

        return tqdm(total=self.settings.env_steps, desc=f"trial {number} {label}", unit="step", position=1,
                    leave=False, dynamic_ncols=True, disable=None if self.progress is None else False)

    @staticmethod
    def _close_bar(bar) -> None:
        if bar is not None:
            bar.close()

    def _say(self, line: str) -> None:
        from tqdm import tqdm

        tqdm.write(line, file=sys.stdout)


# ================================================================================================
# The worker loop
# ================================================================================================
def _counts(study: optuna.Study) -> dict[TrialState, int]:
    out = {s: 0 for s in TrialState}
    for t in study.get_trials(deepcopy=False):
        out[t.state] += 1
    return out


def _has_work(study: optuna.Study, settings: Settings) -> bool:
    c = _counts(study)
    if c[TrialState.WAITING]:
        return True
    if settings.kind == "search":
        return sum(c[s] for s in ACTIVE) < settings.trials
    return False


def _target(study: optuna.Study, settings: Settings) -> tuple[int, int]:
    """(done, total) for the sweep's progress bar."""
    trials = study.get_trials(deepcopy=False)
    if settings.kind == "grid":
        wanted = {c.key for c in settings.cells()}
        done = {t.user_attrs.get("cell") for t in trials if t.state in DONE} & wanted
        return len(done), len(wanted)
    return sum(t.state in DONE for t in trials), settings.trials


def _trial_name(t: optuna.trial.FrozenTrial) -> str:
    return f"trial {t.number}" + (f" (cell {t.user_attrs['cell']})" if "cell" in t.user_attrs else "")


class _Orphans:
    """RUNNING trials whose worker is gone, which this worker waits for before it may stop.

    A killed worker's trial stays RUNNING until its heartbeat is ``grace_period`` old; only then
    does Optuna fail it (and the retry callback queue a copy, which this worker then runs). A
    worker with nothing else to do would otherwise stop and report "other workers are running"
    when there are none. Its worker is known gone when it holds no liveness lock
    (:meth:`SweepLock.alive`). A trial still RUNNING well past the grace period is being
    heartbeated, so its worker lives after all (one that takes no liveness lock: an older
    version of this code): it is no longer waited for.
    """

    def __init__(self, settings: Settings, lock: SweepLock, say: Callable[[str], None]):
        self.settings, self.lock, self.say = settings, lock, say
        self.first_seen: dict[int, float] = {}
        self.poll_s = max(1, min(5, settings.heartbeat_interval))

    def pending(self, study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
        """The orphaned RUNNING trials still worth waiting for (call under the sweep lock)."""
        s, now = self.settings, time.monotonic()
        out = []
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker = t.user_attrs.get("worker")
            if worker is not None and self.lock.alive(worker):
                continue
            first = self.first_seen.setdefault(t.number, now)
            if first == now:
                self.say(f"{_trial_name(t)} is RUNNING, but its worker {worker or '(unrecorded)'} is gone (it holds "
                         f"no lock: killed?); waiting until its heartbeat is {s.grace_period} s old, when it is "
                         f"failed and retried here (--grace-period)")
            if now - first <= s.grace_period + s.heartbeat_interval + 2 * self.poll_s:
                out.append(t)
        return out

    def wait(self) -> None:
        time.sleep(self.poll_s)


def running_elsewhere(study: optuna.Study, lock: SweepLock) -> list[str]:
    """What the study's RUNNING trials are, one line each, naming their workers (under the sweep lock)."""
    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = t.user_attrs.get("worker")
        state = ("runs" if worker is not None and lock.alive(worker) else
                 "holds no lock, but the trial's heartbeat is fresh (a worker of an older version?)")
        out.append(f"{_trial_name(t)}: worker {worker or '(unrecorded)'} {state}")
    return out


def run_worker(study: optuna.Study, settings: Settings, lock: SweepLock, objective: Objective) -> dict:
    """Run trials until the sweep has none left for this worker, nor any a dead worker left
    RUNNING (:class:`_Orphans`). Returns counts of this worker's trials."""
    ran = {"complete": 0, "pruned": 0, "failed": 0}
    orphans = _Orphans(settings, lock, objective._say)
    failures_in_a_row = 0
    done, total = _target(study, settings)
    from tqdm import tqdm

    bar = None
    if objective.progress is not False:
        bar = tqdm(total=total, initial=done, desc=f"sweep {settings.study}", unit="trial", position=0,
                   dynamic_ncols=True, disable=None if objective.progress is None else False)
    try:
        while True:
            held = _Held(lock)
            waiting = False
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    optuna.storages.fail_stale_trials(study)
                if not _has_work(study, settings):
                    if not orphans.pending(study):
                        break
                    waiting = True
                    continue  # (finally: the sweep lock is released before the wait)
                objective.held = held
                objective.last_state = None
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    study.optimize(objective, n_trials=1, catch=(Exception,))
            finally:
                held.release()
                objective.held = None
                if waiting:
                    orphans.wait()
            outcome = objective.last_state
            if outcome == TrialState.FAIL:
                ran["failed"] += 1
                failures_in_a_row += 1
                if failures_in_a_row >= MAX_CONSECUTIVE_FAILURES:
                    objective._say(f"stopping this worker: {failures_in_a_row} trials failed in a row")
                    break
            elif outcome is not None:
                ran["complete" if outcome == TrialState.COMPLETE else "pruned"] += 1
                failures_in_a_row = 0
            if bar is not None:
                done, total = _target(study, settings)
                bar.total = total
                bar.update(done - bar.n)
    finally:
        if bar is not None:
            bar.close()
    return ran


# ================================================================================================
# Command line
# ================================================================================================
def _epilog() -> str:
    lines = ["presets:"]
    for p in PRESETS.values():
        axes = (f"budgets {','.join(map(str, p.budgets))}; methods {','.join(p.methods)}; {p.seeds} seed(s)"
                if p.kind == "grid" else f"budget {p.budgets[0]}; {p.trials} trials; pruner {p.pruner}")
        lines.append(f"  {p.name:15s} {p.summary}")
        teacher = f"teachers {' '.join(p.teachers)}" if p.teachers else f"teacher {p.teacher}"
        lines.append(f"  {'':15s} [{p.env_id}, {p.algo}, {teacher}, {p.env_steps:,} env steps; {axes}]")
    lines.append("")
    lines.append("methods (--methods):")
    for name, m in METHODS.items():
        lines.append(f"  {name:18s} {m.summary}")
    lines += [
        "",
        "initial labels: a preference run first asks initial_labels comparisons about the untrained policy.",
        "  Unless set (--set initial_labels=N), it is min(500, ceil(25% of the budget)) on Atari (the paper: 500",
        "  of 5,500) and ceil(25% of the budget) elsewhere (the paper's MuJoCo rule); so a 290-label Enduro",
        "  budget starts with 73. A budget below initial_labels is an error (exit status 2).",
        "",
        "several workers: --storage postgresql://USER:PASS@HOST/DB --tracking-uri http://HOST:5000, the same",
        "  command (same --study) on every machine; see bench/README.md.",
        "",
        "exit status: 0 done, 1 a trial failed, 2 bad input (nothing ran), 130 interrupted (rerun to resume).",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m bench.sweep",
        description="Optuna sweeps over label budgets and hyperparameters of RL from human preferences, "
                    "tracked in MLflow. Rerunning the same command resumes the sweep.",
        epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--preset", default="quick", choices=tuple(PRESETS), help="what to run (default: quick)")
    p.add_argument("--study", help="study name (default: the preset's name); also the MLflow experiment")
    p.add_argument("--dir", help="results directory (default: sweeps/STUDY)")
    g = p.add_argument_group("size and setting (default: the preset's)")
    g.add_argument("--env", help="gymnasium env id, e.g. CartPole-v1, Pendulum-v1, ALE/Enduro-v5")
    g.add_argument("--algo", choices=ALGOS, help="RL algorithm")
    g.add_argument("--teacher", help="scripted teacher preset answering the queries (TrainConfig.labeler)")
    g.add_argument("--teachers", nargs="+", action="extend", metavar="SPEC",
                   help="a teacher axis (grid presets): one cell per teacher spec for each label-using method, "
                        "e.g. --teachers rational stoc:beta=0.1 'mistake:eps_mistake=0.2,gamma=0.9' (specs separated "
                        "by spaces or ';': a spec's own knobs are comma-separated); cells are named "
                        "METHOD-TEACHER-bBUDGET-sSEED. The noise preset's default: its 10 teachers")
    g.add_argument("--env-steps", type=_int_arg, help="agent steps per trial (frames = 4x on Atari)")
    g.add_argument("--budgets", help="label budgets, comma-separated (grid: one cell each; search: one value)")
    g.add_argument("--methods", help=f"comma-separated: {', '.join(METHOD_NAMES)}")
    g.add_argument("--seeds", type=_int_arg, help="seeds per cell (grid presets): 0..N-1")
    g.add_argument("--trials", type=_int_arg, help=f"trials to complete (search presets), at most {MAX_TRIALS}")
    g.add_argument("--pruner", choices=("none", "median"), help="prune unpromising trials (search presets)")
    g.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="any other TrainConfig field, e.g. --set num_envs=8 --set sticky_actions=0.25 (repeatable)")
    g = p.add_argument_group("storage")
    g.add_argument("--storage", help="Optuna storage URL (default: sqlite:///DIR/optuna.db); "
                                     "postgresql://... for several workers")
    g.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///DIR/mlflow.db); "
                                          "http://HOST:PORT (an mlflow server) for several workers")
    g.add_argument("--heartbeat-interval", type=_int_arg, default=60,
                   help="seconds between a running trial's heartbeats (default: 60)")
    g.add_argument("--grace-period", type=_int_arg, default=180,
                   help="a RUNNING trial without a heartbeat for this long is failed and retried (default: 180; "
                        f"at most {MAX_HEARTBEAT_S})")
    g.add_argument("--max-artifact-mb", type=float, default=1024,
                   help="skip logging artifacts larger than this (e.g. a big label store; default: 1024; inf: "
                        "no limit)")
    p.add_argument("--dry-run", action="store_true",
                   help="check the settings and list what would run (resolved per cell), touching nothing")
    return p


def estimate_wall_s(settings: Settings, measured: dict[bool, float] | None = None) -> tuple[float | None, str]:
    """Single-worker wall time of the whole plan (seconds, or None when no speed is known), and
    where the steps/s came from: ``measured`` (uses labels -> the median steps/s of this
    study's finished trials) where given, else :data:`MEASURED_SPS` for the env family."""
    family = "ALE" if is_atari(settings.env_id) else settings.env_id
    kinds = ([METHODS[c.method].uses_labels for c in settings.cells()] if settings.kind == "grid"
             else [True] * settings.trials)
    total, sources = 0.0, set()
    for uses_labels in kinds:
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
    if settings.kind == "grid":
        cells = settings.cells()
        print(f"{len(cells)} cells:")
        for cell in cells:
            c = resolve(settings.config(run_key=cell.key, method=cell.method, budget=cell.budget, seed=cell.seed,
                                        teacher=cell.teacher))
            what = "no labels" if c.reward == "true" else (
                f"{c.label_budget} labels, {c.initial_labels} up front, {c.query_selection} queries, "
                f"ensemble {c.ensemble_size}")
            print(f"  {cell.key:28s} {what}" + (f", teacher {c.labeler}" if cell.teacher else ""))
    else:
        c = resolve(settings.config(run_key="plan", method="rlhp", budget=settings.budgets[0], seed=0))
        fixed = fixed_search_fields(settings)
        print(f"{settings.trials} trials at {c.label_budget} labels; TPE searches "
              f"{', '.join(k for k in SEARCHED if k not in fixed)}; pruner {settings.pruner}")
    wall, source = estimate_wall_s(settings, measured)
    if wall is None:
        print(f"Estimated wall time: unknown ({source}); run one cell to measure it.")
    else:
        print(f"Estimated wall time: {wall / 3600:.1f} h with one worker (on a 2-core machine a second worker "
              f"shares the cores the first one's background fit uses); from {source}.")


def _finish_parent(study: optuna.Study, settings: Settings, tracker: Tracker, parent: str, interrupted: bool) -> str:
    """End the sweep's parent run when no trial is left running or waiting (the last worker does it)."""
    c = _counts(study)
    if c[TrialState.RUNNING] or c[TrialState.WAITING]:
        return "RUNNING"
    done, total = _target(study, settings)
    if interrupted:
        status = "KILLED"
    else:
        status = "FINISHED" if done >= total else "FAILED"
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        df = study.trials_dataframe(attrs=("number", "state", "value", "params", "user_attrs", "duration"))
        path = Path(tmp) / "trials.csv"
        df.to_csv(path, index=False)
        tracker.client.log_artifact(parent, str(path))
        tracker.client.log_artifact(parent, str(settings.sweep_dir / "sweep.json"))
    tracker.log_metrics(parent, done, {"trials_done": done})
    tracker.end(parent, status)
    return status


def _print_summary(study: optuna.Study, settings: Settings, ran: dict, elsewhere: list[str]) -> None:
    """The outcome; ``elsewhere``: the trials other workers are still running (running_elsewhere)."""
    c = _counts(study)
    done, total = _target(study, settings)
    print()
    print(f"Sweep {settings.study!r} ({settings.preset.name}): {done}/{total} "
          f"{'cells' if settings.kind == 'grid' else 'trials'} done; this worker: {ran['complete']} complete, "
          f"{ran['pruned']} pruned, {ran['failed']} failed; study: {c[TrialState.RUNNING]} running, "
          f"{c[TrialState.FAIL]} failed trial(s) in total.")
    if settings.kind == "search" and any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        best = study.best_trial
        print(f"Best trial {best.number}: return {best.value:.2f} with {best.params}")
    elif settings.kind == "grid":
        rows: dict[tuple, list[float]] = {}
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            rows.setdefault((t.params.get("method"), t.params.get("label_budget"), t.user_attrs.get("teacher", "")),
                            []).append(t.value)
        for (method, budget, teacher), values in sorted(rows.items(),
                                                        key=lambda kv: (str(kv[0][0]), kv[0][1] or 0, kv[0][2])):
            b = "-" if not budget else f"{budget}"
            mean = sum(values) / len(values)
            who = f" teacher {teacher:26s}" if teacher else ""
            print(f"  {method:18s}{who} budget {b:>6s}: mean return {mean:9.2f} over {len(values)} seed(s)")
    d = settings.sweep_dir
    print()
    print(f"Results:      {d}")
    print(f"Optuna:       {mask_url(settings.storage)}  (study {settings.study!r})")
    # MLflow 3's UI opens in its GenAI view unless told otherwise: the URL says machine learning
    page = f"#/experiments/{study.user_attrs.get('mlflow_experiment_id', '')}?workflowType=machine_learning"
    if scheme_of(settings.tracking_uri) == "sqlite":
        print(f"MLflow UI:    mlflow ui --backend-store-uri {settings.tracking_uri}")
        print(f"              then open http://127.0.0.1:5000/{page}")
    elif scheme_of(settings.tracking_uri) in ("http", "https"):
        print(f"MLflow:       {mask_url(settings.tracking_uri).rstrip('/')}/{page} (experiment {settings.study!r})")
    else:
        print(f"MLflow:       {mask_url(settings.tracking_uri)} (experiment {settings.study!r})")
    if scheme_of(settings.storage) == "sqlite":
        print(f"Dashboard:    optuna-dashboard {settings.storage}   (the extra: pip install -e '.[dashboard]'; "
              f"then http://127.0.0.1:8080)")
    report = f"python -m bench.report {shlex.quote(os.path.relpath(d))}"
    if settings.storage != f"sqlite:///{d / 'optuna.db'}":
        report += f" --storage {shlex.quote(mask_url(settings.storage))}"
    if settings.tracking_uri != f"sqlite:///{d / 'mlflow.db'}":
        report += f" --tracking-uri {shlex.quote(mask_url(settings.tracking_uri))}"
    print(f"Report:       {report}")
    if elsewhere:
        print("This worker is done; the study's other RUNNING trials (whichever worker ends last finishes the "
              "sweep's MLflow run):")
        for line in elsewhere:
            print(f"  {line}")


def main(argv: list[str] | None = None, *, train_fn: TrainFn | None = None, progress: bool | None = None) -> int:
    """Entry point. ``train_fn`` replaces rlhp_core.train.run_training (tests); ``progress``: None = when a TTY."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    lock = None
    try:
        settings = settings_from_args(args, argv)
        validate(settings)
        if args.dry_run:
            print_plan(settings)
            return 0
        # the servers answer (before anything is written here)
        lock = SweepLock(settings.storage, settings.study)
        lock.check()
        if scheme_of(settings.tracking_uri) in ("http", "https"):
            check_tracking_uri(settings.tracking_uri)
        settings.sweep_dir.mkdir(parents=True, exist_ok=True)
        lock.register(this_worker())
        with lock.hold():
            storage = open_storage(settings.storage, heartbeat_interval=settings.heartbeat_interval,
                                   grace_period=settings.grace_period)
            from .tracking import Tracker  # MLflow takes seconds to import: not before the input is checked

            artifacts = None
            if scheme_of(settings.tracking_uri) in ("sqlite", "file"):
                artifacts = (settings.sweep_dir / "mlartifacts").as_uri()
            tracker = Tracker(settings.tracking_uri, settings.study, artifacts, program="python -m bench.sweep",
                              command=settings.command)
            study, parent = open_study(settings, storage, tracker)
            new, requeued = enqueue_missing(study, settings)
            write_sweep_json(settings, study, tracker, parent)
    except (UsageError, StorageError, TrackingError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        if lock is not None:
            lock.close()
        return 2
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if type(exc).__module__.startswith(("sqlalchemy", "psycopg2", "mlflow")):
            print(f"{parser.prog}: error: storage or tracking server failed: {type(exc).__name__}: {first}",
                  file=sys.stderr)
            if lock is not None:
                lock.close()
            return 2
        raise
    measured: dict[bool, list[float]] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.user_attrs.get("sps"):
            measured.setdefault(METHODS[t.params.get("method", "rlhp")].uses_labels, []).append(t.user_attrs["sps"])
    print_plan(settings, {k: float(sorted(v)[len(v) // 2]) for k, v in measured.items()})
    done, total = _target(study, settings)
    print(f"Sweep {settings.study!r}: {done}/{total} {'cells' if settings.kind == 'grid' else 'trials'} done"
          + (f", {new} queued" if new else "") + (f", {requeued} re-queued to resume" if requeued else "")
          + f"; results in {settings.sweep_dir}", flush=True)
    objective = Objective(settings, tracker, parent, train_fn, progress=progress)
    ran = {"complete": 0, "pruned": 0, "failed": 0}
    interrupted = False
    elsewhere: list[str] = []
    try:
        ran = run_worker(study, settings, lock, objective)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        with contextlib.suppress(Exception), lock.hold():
            status = _finish_parent(study, settings, tracker, parent, interrupted)
            if status == "RUNNING":
                elsewhere = running_elsewhere(study, lock)
        lock.close()
    if interrupted:
        print("\ninterrupted: the trial's checkpoint is written; rerun the same command to resume the sweep",
              file=sys.stderr)
        return 130
    _print_summary(study, settings, ran, elsewhere)
    return 1 if ran["failed"] else 0


def cli() -> int:
    """The ``rlhp-sweep`` console script: ``main`` under tcmalloc (before anything allocates: 1.7x on
    the Enduro loop, rlhp_core/allocator.py)."""
    from rlhp_core.allocator import reexec_with_tcmalloc

    reexec_with_tcmalloc()
    return main()


if __name__ == "__main__":
    sys.exit(cli())

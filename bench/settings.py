"""What one sweep is set to, and the checks that it can run before anything is written.

:class:`Settings` is a preset resized by the command line (bench.sweep parses it): the env,
algorithm, teacher(s), size and storage of a sweep, and the learner's config for any one of its
trials (:meth:`Settings.config`). Which trials a sweep runs depends on its kind (a grid or a
search): :attr:`Settings.plan` hands that to bench.plan. :func:`validate` refuses, with a
:class:`UsageError` naming the flag and the value, a sweep that cannot run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rlhp_core.cli import check_environment
from rlhp_core.config import ConfigError, TrainConfig, resolve
from rlhp_core.paths import check_writable_dir

from .presets import METHODS, Preset
from .storage import StorageError, TrackingError, check_storage_url, check_tracking_uri

if TYPE_CHECKING:
    from .plan import SweepKind

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
TEACHER_AXIS = "per cell (--teachers)"
"""The fingerprint's teacher on a sweep with a teacher axis (the axis itself may grow, like budgets)."""
SWEEP_OWNED = {"env_id": "--env", "algo": "--algo", "labeler": "--teacher", "total_steps": "--env-steps",
               "seed": "--seeds", "label_budget": "--budgets", "run_dir": "--dir", "progress": None,
               "reward": "--methods"}
"""TrainConfig fields the sweep sets itself, and the flag that sets each (None: nobody)."""


class UsageError(Exception):
    """Bad input, found before any trial starts (exit status 2)."""


def teacher_slug(spec: str) -> str:
    """A teacher spec as it appears in cell keys and run directories: ``stoc:beta=0.1`` -> ``stoc_beta=0.1``."""
    return "".join(ch if ch.isalnum() or ch in "=.+-" else "_" for ch in spec.strip())


@dataclass
class Settings:
    """A preset resized by the command line: what every trial of the sweep shares, and where it all goes."""

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
        """'grid' or 'search' (the preset's), as the study and sweep.json record it."""
        return self.preset.kind

    @property
    def plan(self) -> SweepKind:
        """What this kind of sweep runs and when it is done (bench.plan: a grid or a search)."""
        from .plan import KINDS  # bench.plan builds on this module

        return KINDS[self.kind](self)

    def fingerprint(self) -> dict:
        """What a finished cell's result depends on. A rerun must match it; budgets/methods/seeds may grow."""
        fp = {"kind": self.kind, "preset": self.preset.name, "env_id": self.env_id, "algo": self.algo,
              "teacher": TEACHER_AXIS if self.teachers else self.teacher, "env_steps": self.env_steps,
              "overrides": json.loads(json.dumps(self.overrides, sort_keys=True, default=str))}
        return {**fp, **self.plan.study_settings()}

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

    @property
    def own_storage(self) -> str:
        """The storage URL of a sweep that keeps its study in its own folder (the default)."""
        return f"sqlite:///{self.sweep_dir / 'optuna.db'}"

    @property
    def own_tracking_uri(self) -> str:
        """The tracking URI of a sweep that keeps its MLflow runs in its own folder (the default)."""
        return f"sqlite:///{self.sweep_dir / 'mlflow.db'}"


# ================================================================================================
# Checks before anything runs
# ================================================================================================
def check_teacher(teacher: str, env_id: str, segment_length: int, flag: str = "--teacher") -> str:
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


def teacher_axis(specs: tuple[str, ...], env_id: str, segment_length: int) -> tuple[str, ...]:
    """Check and canonicalise the --teachers specs; duplicates (after canonicalising) are dropped."""
    out: list[str] = []
    slugs: dict[str, str] = {}
    for spec in specs:
        canon = check_teacher(spec, env_id, segment_length, flag="--teachers")
        if canon in out:
            continue
        slug = teacher_slug(canon)
        if slug in slugs:
            raise UsageError(f"--teachers: {slugs[slug]!r} and {canon!r} would share the cell name {slug!r}")
        slugs[slug] = canon
        out.append(canon)
    return tuple(out)


def _blame(settings: Settings, fields: tuple[str, ...]) -> str:
    """The flags of this command behind TrainConfig ``fields``, for a ConfigError's message."""
    flags = [SWEEP_OWNED.get(f) or (f"--set {f}={settings.user_overrides[f]}" if f in settings.user_overrides
                                     else f"--set {f}") for f in fields]
    return "/".join(dict.fromkeys(flags))


def validate(settings: Settings) -> None:
    """Refuse, before anything is written (``--dry-run`` too), a sweep that cannot run: its folder,
    its storage and tracking URLs (their syntax: servers are reached later), the env and
    teachers, and every planned trial's config (budget >= initial labels, ...)."""
    try:
        check_writable_dir(settings.sweep_dir)
    except ValueError as exc:
        raise UsageError(f"--dir {str(settings.sweep_dir)!r}: {exc}") from None
    own_storage = settings.storage == settings.own_storage
    if not own_storage or settings.sweep_dir.is_dir():
        try:
            check_storage_url(settings.storage, create=True)
        except StorageError as exc:
            raise UsageError(f"--storage: {exc}" if not own_storage else str(exc)) from None
    if settings.tracking_uri != settings.own_tracking_uri:
        try:
            check_tracking_uri(settings.tracking_uri, reach=False)
        except TrackingError as exc:
            raise UsageError(f"--tracking-uri: {exc}") from None
    configs = settings.plan.configs()
    # the env, the device and the seed labels once, on a trial that asks for labels if any does
    cfg = next((c for _, c in configs if c.reward == "preferences"), configs[0][1])
    try:
        check_environment(resolve(cfg), labeler=False)  # the teachers are checked next, as sweeps need them
    except ConfigError as exc:
        raise UsageError(f"{_blame(settings, exc.fields)}: {exc}") from None
    segment = settings.overrides.get("segment_length") or 25
    check_teacher(settings.teacher, settings.env_id, segment)
    if settings.teachers:
        settings.teachers = teacher_axis(settings.teachers, settings.env_id, segment)
    for where, cfg in configs:
        try:
            resolve(cfg)
        except ConfigError as exc:
            raise UsageError(f"{_blame(settings, exc.fields)}: {exc} ({where})") from None

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

This module is the command line and the order of events; the parts have a module each:
bench.settings (what a sweep is set to, and its checks), bench.plan (a grid or a search: which
trials, when done), bench.study (the study and its MLflow parent run), bench.worker (the loop
that pops trials), bench.trial (one trial: the learner as a nested MLflow run).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.trial import TrialState

from rlhp_core.cli import ArgumentParser
from rlhp_core.config import ALGOS, TrainConfig, parse_field, parse_int

from .plan import KINDS, print_plan
from .presets import METHOD_NAMES, METHODS, PRESETS
from .settings import MAX_HEARTBEAT_S, MAX_TRIALS, SWEEP_OWNED, Settings, UsageError, validate
from .storage import (StorageError, SweepLock, TrackingError, check_tracking_uri, mask_url, open_storage, scheme_of,
                      this_worker)
from .study import counts, finish_parent, open_study, write_sweep_json
from .trial import Objective, TrainFn
from .worker import running_elsewhere, run_worker

if TYPE_CHECKING:
    from .tracking import Tracker

__all__ = ["Objective", "Settings", "UsageError", "build_parser", "cli", "main", "settings_from_args"]


# ================================================================================================
# Command line -> Settings
# ================================================================================================
def parse_overrides(items: list[str]) -> dict:
    """--set KEY=VALUE items -> TrainConfig fields (UsageError naming an unknown or sweep-owned field)."""
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


def _int_arg(text: str) -> int:
    """argparse ``type`` of the count flags: 8, 8_000 or 8e3 (rlhp_core.config.parse_int)."""
    try:
        return parse_int(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None



def settings_from_args(args: argparse.Namespace, argv: list[str]) -> Settings:
    """The preset resized by the flags; a flag that is malformed, out of range or does not apply to the
    preset's kind is a UsageError naming it (the rest is checked by settings.validate)."""
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
    if args.teachers is not None:
        teachers = tuple(t.strip() for item in args.teachers for t in item.split(";") if t.strip())
        if not teachers:
            raise UsageError("--teachers: no teacher spec given")
    else:
        teachers = preset.teachers
    seeds = args.seeds if args.seeds is not None else preset.seeds
    trials = args.trials if args.trials is not None else preset.trials
    methods = KINDS[preset.kind].check_flags(preset, args, budgets=budgets, methods=methods, seeds=seeds,
                                             trials=trials, teachers=teachers)
    if seeds < 1:
        raise UsageError(f"--seeds {seeds}: must be >= 1")
    env_steps = args.env_steps if args.env_steps is not None else preset.env_steps
    if env_steps < 1:
        raise UsageError(f"--env-steps {env_steps}: must be >= 1")
    if not 1 <= args.heartbeat_interval < args.grace_period <= MAX_HEARTBEAT_S:
        raise UsageError(f"--heartbeat-interval {args.heartbeat_interval} / --grace-period {args.grace_period}: "
                         f"need 1 <= heartbeat interval < grace period <= {MAX_HEARTBEAT_S} seconds")
    if not args.max_artifact_mb >= 0:  # NaN too
        raise UsageError(f"--max-artifact-mb {args.max_artifact_mb}: must be a size in MB >= 0 (inf: no limit)")
    if teachers and args.teacher:
        raise UsageError(f"--teacher {args.teacher!r}: this sweep has a teacher axis ({' '.join(teachers)}); "
                         f"give the teachers with --teachers")
    storage = args.storage or f"sqlite:///{sweep_dir / 'optuna.db'}"
    tracking = args.tracking_uri or f"sqlite:///{sweep_dir / 'mlflow.db'}"
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



def _epilog() -> str:
    lines = ["presets:"]
    for p in PRESETS.values():
        axes = KINDS[p.kind].axes(p)
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



# ================================================================================================
# The run
# ================================================================================================
def _print_summary(study: optuna.Study, settings: Settings, ran: dict, elsewhere: list[str]) -> None:
    """The outcome; ``elsewhere``: the trials other workers are still running (running_elsewhere)."""
    c = counts(study)
    plan = settings.plan
    done, total = plan.progress(study)
    print()
    print(f"Sweep {settings.study!r} ({settings.preset.name}): {done}/{total} {plan.unit} done; this worker: "
          f"{ran['complete']} complete, {ran['pruned']} pruned, {ran['failed']} failed; study: "
          f"{c[TrialState.RUNNING]} running, {c[TrialState.FAIL]} failed trial(s) in total.")
    for line in plan.summary_lines(study):
        print(line)
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
    if settings.storage != settings.own_storage:
        report += f" --storage {shlex.quote(mask_url(settings.storage))}"
    if settings.tracking_uri != settings.own_tracking_uri:
        report += f" --tracking-uri {shlex.quote(mask_url(settings.tracking_uri))}"
    print(f"Report:       {report}")
    if elsewhere:
        print("This worker is done; the study's other RUNNING trials (whichever worker ends last finishes the "
              "sweep's MLflow run):")
        for line in elsewhere:
            print(f"  {line}")


@dataclass
class _Opened:
    """A sweep ready to run: its lock (this worker registered), tracker, study and parent run."""

    lock: SweepLock
    tracker: Tracker
    study: optuna.Study
    parent: str
    new: int
    """Trials queued by this start."""
    requeued: int
    """Failed trials queued again to resume."""


def _open(settings: Settings) -> _Opened:
    """Reach the servers (before anything is written here), then, under the sweep lock: create or
    resume the study and its parent run, queue what the sweep still needs, write sweep.json."""
    lock = SweepLock(settings.storage, settings.study)
    try:
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
            new, requeued = settings.plan.enqueue_missing(study)
            write_sweep_json(settings, study, tracker, parent)
    except BaseException:
        lock.close()
        raise
    return _Opened(lock, tracker, study, parent, new, requeued)


def _existing_measured_sps(settings: Settings) -> dict[bool, float] | None:
    """What a dry run can measure without creating anything: the finished trials' steps/s of the study
    if it already exists (a rerun's plan then says how long from this machine's own numbers), else None."""
    url = settings.storage
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).is_file():
        return None
    try:
        study = optuna.load_study(study_name=settings.study, storage=url)
    except Exception:  # noqa: BLE001 - no such study, or a server that is not up: the table's guesses
        return None
    return _measured_sps(study)


def _measured_sps(study: optuna.Study) -> dict[bool, float]:
    """The median steps/s of the study's complete trials, by whether they use labels."""
    measured: dict[bool, list[float]] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.user_attrs.get("sps"):
            measured.setdefault(METHODS[t.params.get("method", "rlhp")].uses_labels, []).append(t.user_attrs["sps"])
    return {k: float(sorted(v)[len(v) // 2]) for k, v in measured.items()}


def _work(settings: Settings, sweep: _Opened, objective: Objective) -> int:
    """Run this worker's trials, finish the parent run if this worker is the last, print the outcome."""
    ran = {"complete": 0, "pruned": 0, "failed": 0}
    interrupted = False
    elsewhere: list[str] = []
    try:
        ran = run_worker(sweep.study, settings, sweep.lock, objective)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        with contextlib.suppress(Exception), sweep.lock.hold():
            status = finish_parent(sweep.study, settings, sweep.tracker, sweep.parent, interrupted)
            if status == "RUNNING":
                elsewhere = running_elsewhere(sweep.study, sweep.lock)
        sweep.lock.close()
    if interrupted:
        print("\ninterrupted: the trial's checkpoint is written; rerun the same command to resume the sweep",
              file=sys.stderr)
        return 130
    _print_summary(sweep.study, settings, ran, elsewhere)
    return 1 if ran["failed"] else 0


def main(argv: list[str] | None = None, *, train_fn: TrainFn | None = None, progress: bool | None = None) -> int:
    """Entry point. ``train_fn`` replaces rlhp_core.cli.train (tests); ``progress``: None = when a TTY."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        settings = settings_from_args(args, argv)
        validate(settings)
        if args.dry_run:
            print_plan(settings, _existing_measured_sps(settings))
            return 0
        sweep = _open(settings)
    except (UsageError, StorageError, TrackingError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if type(exc).__module__.startswith(("sqlalchemy", "psycopg2", "mlflow")):
            print(f"{parser.prog}: error: storage or tracking server failed: {type(exc).__name__}: {first}",
                  file=sys.stderr)
            return 2
        raise
    print_plan(settings, _measured_sps(sweep.study))
    done, total = settings.plan.progress(sweep.study)
    print(f"Sweep {settings.study!r}: {done}/{total} {settings.plan.unit} done"
          + (f", {sweep.new} queued" if sweep.new else "")
          + (f", {sweep.requeued} re-queued to resume" if sweep.requeued else "")
          + f"; results in {settings.sweep_dir}", flush=True)
    return _work(settings, sweep, Objective(settings, sweep.tracker, sweep.parent, train_fn, progress=progress))


def cli() -> int:
    """The ``rlhp-sweep`` console script: ``main`` under tcmalloc (before anything allocates: 1.7x on
    the Enduro loop, rlhp_core/allocator.py)."""
    from rlhp_core.allocator import reexec_with_tcmalloc

    reexec_with_tcmalloc()
    return main()


if __name__ == "__main__":
    sys.exit(cli())

"""The sweep's Optuna study and its MLflow parent run: created or resumed, checked, recorded, finished.

A rerun of the same command resumes the study: :func:`open_study` refuses settings a finished
cell's result does not match (the fingerprint) and reopens the sweep's MLflow run, whose trial
runs nest under it; :func:`write_sweep_json` tells ``python -m bench.report`` where everything is;
:func:`finish_parent` ends the sweep run when the last worker is done. Attribute and tag names
written here are read back by resumed sweeps and by bench.report: they do not change.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.trial import TrialState

from rlhp_core.paths import write_atomic

from .settings import TEACHER_AXIS, Settings, UsageError
from .storage import mask_url

if TYPE_CHECKING:
    from .tracking import Tracker


def counts(study: optuna.Study) -> dict[TrialState, int]:
    """The study's trials by state (every state present, 0 where none)."""
    out = {s: 0 for s in TrialState}
    for t in study.get_trials(deepcopy=False):
        out[t.state] += 1
    return out


def _pruner(settings: Settings) -> optuna.pruners.BasePruner:
    if settings.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=settings.env_steps // 4)
    return optuna.pruners.NopPruner()


def open_study(settings: Settings, storage, tracker: Tracker) -> tuple[optuna.Study, str]:
    """Create or load the study, check it matches these settings, find or start the parent run."""
    study = optuna.create_study(study_name=settings.study, storage=storage, direction="maximize",
                                sampler=settings.plan.sampler(), pruner=_pruner(settings), load_if_exists=True)
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
              **{f"override.{k}": v for k, v in sorted(settings.overrides.items())},
              **settings.plan.study_settings()}
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
    """SWEEP_DIR/sweep.json: the study, its storage and tracking URI and the settings, for bench.report."""
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
    write_atomic(settings.sweep_dir / "sweep.json", json.dumps(info, indent=2) + "\n")


def finish_parent(study: optuna.Study, settings: Settings, tracker: Tracker, parent: str, interrupted: bool) -> str:
    """End the sweep's parent run when no trial is left running or waiting (the last worker does it).
    Returns the run's status, or RUNNING where other workers still have trials."""
    c = counts(study)
    if c[TrialState.RUNNING] or c[TrialState.WAITING]:
        return "RUNNING"
    done, total = settings.plan.progress(study)
    if interrupted:
        status = "KILLED"
    else:
        status = "FINISHED" if done >= total else "FAILED"
    with tempfile.TemporaryDirectory() as tmp:
        df = study.trials_dataframe(attrs=("number", "state", "value", "params", "user_attrs", "duration"))
        path = Path(tmp) / "trials.csv"
        df.to_csv(path, index=False)
        tracker.client.log_artifact(parent, str(path))
        tracker.client.log_artifact(parent, str(settings.sweep_dir / "sweep.json"))
    tracker.log_metrics(parent, done, {"trials_done": done})
    tracker.end(parent, status)
    return status

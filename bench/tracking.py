"""MLflow bookkeeping for sweeps: one parent run per study, one nested run per trial.

Everything goes through an explicit ``MlflowClient`` (no fluent "active run" state), so a
trial's run can be reopened when its trial is retried, and several workers can share one
parent run (nesting is the ``mlflow.parentRunId`` tag, which does not need the parent active).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from .storage import normalize_url

MAX_PARAM_CHARS = 6000
"""MLflow 3's limit on a param value."""


def quiet_mlflow_logs() -> None:
    for name in ("alembic", "mlflow.store.db.utils", "mlflow.tracking.fluent", "mlflow.store.sql_alchemy_store"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _params(d: dict) -> list[Param]:
    out = []
    for k, v in d.items():
        text = v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
        out.append(Param(k, text[:MAX_PARAM_CHARS]))
    return out


class Tracker:
    def __init__(self, tracking_uri: str, experiment: str, artifact_location: str | None):
        quiet_mlflow_logs()
        self.uri = tracking_uri = normalize_url(tracking_uri)
        self.client = MlflowClient(tracking_uri=tracking_uri)
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            try:
                self.experiment_id = self.client.create_experiment(experiment, artifact_location=artifact_location)
            except MlflowException:  # another worker created it meanwhile
                exp = self.client.get_experiment_by_name(experiment)
                if exp is None:
                    raise
                self.experiment_id = exp.experiment_id
        else:
            if exp.lifecycle_stage == "deleted":
                self.client.restore_experiment(exp.experiment_id)
            self.experiment_id = exp.experiment_id

    # -- runs ----------------------------------------------------------------------------------
    def run_exists(self, run_id: str | None) -> bool:
        if not run_id:
            return False
        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            return False
        return run.info.experiment_id == self.experiment_id and run.info.lifecycle_stage == "active"

    def start_run(self, name: str, *, tags: dict, params: dict | None = None, parent: str | None = None,
                  reuse: str | None = None) -> tuple[str, bool]:
        """Create a run, or reopen ``reuse`` (a retried trial's run). Returns (run_id, reopened)."""
        tags = {k: str(v) for k, v in tags.items()}
        if parent:
            tags["mlflow.parentRunId"] = parent
        if self.run_exists(reuse):
            self.client.update_run(reuse, status="RUNNING")
            self.client.log_batch(reuse, tags=[RunTag(k, v) for k, v in tags.items()])
            run_id, reopened = reuse, True
        else:
            run_id = self.client.create_run(self.experiment_id, tags=tags, run_name=name).info.run_id
            reopened = False
        if params:
            self.log_params(run_id, params)
        return run_id, reopened

    def log_params(self, run_id: str, params: dict) -> None:
        items = _params(params)
        for i in range(0, len(items), 100):
            try:
                self.client.log_batch(run_id, params=items[i:i + 100])
            except MlflowException:
                # a reopened run may hold an older value of a param MLflow will not overwrite:
                # log one by one so every other param still lands
                for p in items[i:i + 100]:
                    try:
                        self.client.log_param(run_id, p.key, p.value)
                    except MlflowException:
                        self.set_tags(run_id, {f"rlhp.param_conflict.{p.key}": p.value})

    def set_tags(self, run_id: str, tags: dict) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)[:MAX_PARAM_CHARS]) for k, v in tags.items()])

    def log_metrics(self, run_id: str, step: int, metrics: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, int(step)) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and math.isfinite(v)]
        for i in range(0, len(batch), 1000):
            self.client.log_batch(run_id, metrics=batch[i:i + 1000])

    def end(self, run_id: str, status: str) -> None:
        """status: FINISHED, FAILED or KILLED (pruned or interrupted)."""
        self.client.set_terminated(run_id, status=status)

    # -- artifacts -------------------------------------------------------------------------------
    def log_file(self, run_id: str, path: Path, artifact_dir: str | None = None, *, max_mb: float) -> str | None:
        """Log one file; returns a reason when it was skipped."""
        if not path.is_file():
            return None
        size_mb = path.stat().st_size / 2**20
        if size_mb > max_mb:
            return f"{path.name}: {size_mb:.0f} MB > --max-artifact-mb {max_mb:g}"
        self.client.log_artifact(run_id, str(path), artifact_dir)
        return None

    def log_sqlite_snapshot(self, run_id: str, path: Path, artifact_dir: str, *, max_mb: float) -> str | None:
        """A consistent copy of a live SQLite database (the label store may be in WAL mode)."""
        if not path.is_file():
            return None
        with tempfile.TemporaryDirectory() as tmp:
            dest = Path(tmp) / path.name
            try:
                src = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
                dst = sqlite3.connect(dest)
                with dst:
                    src.backup(dst)
                src.close()
                dst.close()
            except sqlite3.Error:
                shutil.copy2(path, dest)
            return self.log_file(run_id, dest, artifact_dir, max_mb=max_mb)

    def log_figure(self, run_id: str, fig, artifact_file: str) -> None:
        self.client.log_figure(run_id, fig, artifact_file)

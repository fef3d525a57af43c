"""MLflow bookkeeping: one parent run per study and one nested run per trial (``bench.sweep``),
or one run per ``python -m rlhp_core.train --tracking-uri ...`` (:func:`track_training`).

Everything goes through an explicit ``MlflowClient`` (no fluent "active run" state), so a
trial's run can be reopened when its trial is retried, and several workers can share one
parent run (nesting is the ``mlflow.parentRunId`` tag, which does not need the parent active).

Every experiment this module creates is tagged ``mlflow.experimentKind =
custom_model_development``: MLflow 3's record of an experiment's kind ("training", not GenAI),
which its UI's experiment-type selector writes and its tools read. MLflow 3.17's UI itself picks
its view from a sidebar switch (default GenAI) or ``?workflowType=machine_learning`` in the URL,
so the links this code prints carry that (:func:`ui_page`). Every run carries MLflow's standard
source tags (``mlflow.source.name``, ``mlflow.source.type``, ``mlflow.user``,
``mlflow.source.git.commit`` / ``.branch`` / ``.dirty``), which an ``MlflowClient`` does not add
by itself (only the fluent ``mlflow.start_run`` does).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import getpass
import json
import logging
import math
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from rlhp_core.paths import write_atomic

from .storage import mask_url, normalize_url, scheme_of, sqlite_path

MAX_PARAM_CHARS = 6000
"""MLflow 3's limit on a param value."""
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
"""MLflow 3's experiment kinds are ``genai_development`` and ``custom_model_development`` (the
values its UI's experiment-type selector writes into this tag)."""
POLICY_FORMAT = "rlhp-policy"
"""``policy.pt``: the policy network of a run's newest checkpoint (see :func:`write_policy`)."""


def quiet_mlflow_logs() -> None:
    for name in ("alembic", "mlflow.store.db.utils", "mlflow.tracking.fluent", "mlflow.store.sql_alchemy_store"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _params(d: dict) -> list[Param]:
    out = []
    for k, v in d.items():
        text = v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
        out.append(Param(k, text[:MAX_PARAM_CHARS]))
    return out


# -- where a run comes from: MLflow's standard source tags ------------------------------------------
def _git(*args: str) -> str | None:
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # read-only: status must not refresh the index
    try:
        r = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, env=env)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


@functools.lru_cache(maxsize=1)
def git_tags() -> dict[str, str]:
    """``mlflow.source.git.*`` of the checkout this code runs from ({} outside one, e.g. a wheel).

    Read once per process: a long sweep worker keeps running the code it imported at start."""
    root = Path(__file__).resolve().parents[1]
    top = _git("rev-parse", "--show-toplevel")
    if not top or Path(top).resolve() != root:  # installed into site-packages inside some other repo
        return {}
    commit = _git("rev-parse", "HEAD")
    if not commit:
        return {}
    tags = {"mlflow.source.git.commit": commit}
    branch = _git("rev-parse", "--abbrev-ref", "HEAD")
    if branch and branch != "HEAD":
        tags["mlflow.source.git.branch"] = branch
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    if dirty is not None:
        tags["mlflow.source.git.dirty"] = "true" if dirty else "false"
    remote = _git("remote", "get-url", "origin")
    if remote:
        tags["mlflow.source.git.repoURL"] = mask_url(remote)
    return tags


def _user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no $USER and no passwd entry (some containers)
        return "unknown"


def source_tags(program: str | None = None, command: str | None = None) -> dict[str, str]:
    """MLflow's source tags of a run started by ``program`` (e.g. ``python -m bench.sweep``).

    ``mlflow.source.name`` is the program, not the whole command line: the UI's Source column
    shows only what follows the last '/' of it (a command with ``--dir /x/y`` would read "y").
    The command line goes into ``rlhp.command``."""
    program = program or Path(sys.argv[0]).name or "python"
    tags = {"mlflow.source.name": program, "mlflow.source.type": "LOCAL", "mlflow.user": _user(), **git_tags()}
    if command:
        tags["rlhp.command"] = command[:MAX_PARAM_CHARS]
    return tags


class Tracker:
    def __init__(self, tracking_uri: str, experiment: str, artifact_location: str | None, *,
                 program: str | None = None, command: str | None = None):
        """``program`` / ``command``: what started the runs (their source tags, :func:`source_tags`).
        ``artifact_location`` of an experiment created here; None: :func:`default_artifact_location`."""
        quiet_mlflow_logs()
        if artifact_location is None:
            artifact_location = default_artifact_location(tracking_uri)
        self.uri = tracking_uri = normalize_url(tracking_uri)
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self._episodes_read: dict[Path, tuple] = {}  # episodes.csv -> (inode, header, offset read to)
        self.source_tags = source_tags(program, command)
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            try:
                self.experiment_id = self.client.create_experiment(
                    experiment, artifact_location=artifact_location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
            except MlflowException:  # another worker created it meanwhile
                exp = self.client.get_experiment_by_name(experiment)
                if exp is None:
                    raise
                self.experiment_id = exp.experiment_id
        else:
            if exp.lifecycle_stage == "deleted":
                self.client.restore_experiment(exp.experiment_id)
            self.experiment_id = exp.experiment_id
        if exp is not None and EXPERIMENT_KIND_TAG not in exp.tags:
            # made by an older version of this code: tag it now (a kind someone chose in the UI is kept)
            self.client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)

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
        """Create a run, or reopen ``reuse`` (a retried trial's run). Returns (run_id, reopened).

        The run gets this tracker's source tags (git commit, user...) under ``tags``."""
        tags = {**self.source_tags, **{k: str(v) for k, v in tags.items()}}
        if parent:
            tags["mlflow.parentRunId"] = parent
        if self.run_exists(reuse):
            tags["mlflow.runName"] = name  # the reopened run is renamed too, when the naming changed
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

    def _log_batch(self, run_id: str, batch: list) -> None:
        for i in range(0, len(batch), 1000):
            self.client.log_batch(run_id, metrics=batch[i:i + 1000])

    def log_metrics(self, run_id: str, step: int, metrics: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        self._log_batch(run_id, [Metric(k, float(v), now, int(step)) for k, v in metrics.items()
                                 if isinstance(v, (int, float)) and math.isfinite(v)])

    def log_step(self, run_id: str, run_dir: Path, step: int, metrics: dict[str, float]) -> None:
        """A learner's metrics row at ``step`` (its on_metrics), and the episodes it wrote to
        episodes.csv with that row as ``charts/episode_return`` (and ``_gained`` / ``_lost``) at the
        agent step each ended: a curve with a point per episode, not per log window. episodes.csv is
        read from where the last call stopped; a resume rewrites the file (a new inode), and then it
        is read from the start."""
        self.log_metrics(run_id, step, metrics)
        path = Path(run_dir) / "episodes.csv"
        if not path.is_file():
            return
        with open(path, newline="") as f:
            inode = os.fstat(f.fileno()).st_ino
            seen, header, offset = self._episodes_read.get(path, (None, None, 0))
            if seen != inode:
                header = next(csv.reader([f.readline()]))
            else:
                f.seek(offset)
            lines = f.readlines()
            self._episodes_read[path] = (inode, header, f.tell())
        rows = [dict(zip(header, r)) for r in csv.reader(lines)]
        now = int(time.time() * 1000)
        self._log_batch(run_id, [Metric(f"charts/episode_{k}", float(r[k]), now, int(r["end_step"]))
                                 for r in rows if r.get("env_steps") == str(step)
                                 for k in ("return", "gained", "lost") if r.get(k) not in (None, "")])

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

    def log_run_dir(self, run_id: str, run_dir: Path, *, max_mb: float, title: str,
                    summary: dict | None = None) -> list[str]:
        """Log a learner's run directory: what a user loads or looks at. Returns what was skipped
        (also in the tag ``rlhp.artifacts_skipped``): files over ``max_mb``.

        - ``model/``: what loads the trained agent, a run directory of its own: ``config.json``,
          ``reward_model.pt`` (the reward ensemble's state), ``checkpoints/step-N/`` (the newest
          verified checkpoint, as the learner wrote it: ``rlhp_core.trained.load_policy`` and
          ``python -m rlhp_core.evaluate`` take the downloaded folder) and ``policy.pt`` (that
          checkpoint's policy network alone, :func:`write_policy`);
        - ``run/``: config.json, env_info.json, metrics.csv, status.json, and summary.json from ``summary``;
        - ``plots/learning_curves.png``, ``labels/labels.sqlite`` (a consistent snapshot), up to six clips;
        - when the run has ended (``summary`` given): ``evaluation/agent.gif``, the trained agent
          playing one deterministic episode (up to ``AGENT_VIDEO_FRAMES`` frames), and
          ``evaluation/evaluation.json``, that episode's return, length and counters; its return is
          also the metric ``eval/return`` (:func:`log_agent_video`).
        """
        skipped = []
        metrics_csv = run_dir / "metrics.csv"
        if metrics_csv.is_file():
            import pandas as pd

            from . import plots

            df = pd.read_csv(metrics_csv)
            if len(df):
                plots.save(plots.trial_curves(df, title), run_dir / "learning_curves.png")
                skipped.append(self.log_file(run_id, run_dir / "learning_curves.png", "plots", max_mb=max_mb))
        for name in ("config.json", "env_info.json", "metrics.csv", "status.json"):
            skipped.append(self.log_file(run_id, run_dir / name, "run", max_mb=max_mb))
        if summary is not None:  # (a summary.json already there may be an earlier attempt's)
            (run_dir / "summary.json").write_text(json.dumps(_jsonable(summary), indent=2) + "\n")
            skipped.append(self.log_file(run_id, run_dir / "summary.json", "run", max_mb=max_mb))
        skipped.append(self.log_file(run_id, run_dir / "config.json", "model", max_mb=max_mb))
        skipped.append(self.log_file(run_id, run_dir / "reward_model.pt", "model", max_mb=max_mb))
        found = newest_checkpoint(run_dir)
        if found is not None:
            path, blob = found
            with tempfile.TemporaryDirectory() as tmp:
                policy = write_policy(blob, Path(tmp) / "policy.pt")
                if policy is not None:
                    skipped.append(self.log_file(run_id, policy, "model", max_mb=max_mb))
            where = f"model/checkpoints/{path.name}"
            reason = self.log_file(run_id, path / "state.pt", where, max_mb=max_mb)
            if reason is None:  # COMPLETE without its state.pt would be a damaged checkpoint
                self.log_file(run_id, path / "COMPLETE", where, max_mb=max_mb)
            skipped.append(reason)
        skipped.append(self.log_sqlite_snapshot(run_id, run_dir / "labels.sqlite", "labels", max_mb=max_mb))
        clips = sorted(p for ext in ("mp4", "gif", "webm") for p in run_dir.rglob(f"*.{ext}"))
        for clip in clips[:6]:
            skipped.append(self.log_file(run_id, clip, "clips", max_mb=max_mb))
        if summary is not None:
            skipped.append(self.log_agent_video(run_id, run_dir, max_mb=max_mb))
        skipped = [s for s in skipped if s]
        if skipped:
            self.set_tags(run_id, {"rlhp.artifacts_skipped": "; ".join(skipped)})
        return skipped

    def log_agent_video(self, run_id: str, run_dir: Path, *, max_mb: float) -> str | None:
        """The trained agent on video (rlhp_core.evaluate, one deterministic episode) and its numbers,
        under ``evaluation/``. Returns why not, where it could not be made (no policy yet, an env
        that renders no frames)."""
        from rlhp_core.evaluate import evaluate

        with tempfile.TemporaryDirectory() as tmp:
            try:
                ev = evaluate(run_dir, episodes=1, num_envs=1, video=Path(tmp) / "agent.gif",
                              video_frames=AGENT_VIDEO_FRAMES)
            except Exception as exc:  # noqa: BLE001 - a run without a video is still a run
                return f"evaluation/agent.gif: {type(exc).__name__}: {exc}"
            record = {k: v for k, v in ev.items() if k not in ("env_info", "run_dir", "video")}
            (Path(tmp) / "evaluation.json").write_text(json.dumps(_jsonable(record), indent=2) + "\n")
            self.log_metrics(run_id, int(ev["checkpoint_step"]), {"eval/return": ev["return"]["mean"],
                                                                 "eval/length": ev["length"]["mean"]})
            self.log_file(run_id, Path(tmp) / "evaluation.json", "evaluation", max_mb=max_mb)
            return self.log_file(run_id, Path(tmp) / "agent.gif", "evaluation", max_mb=max_mb)


AGENT_VIDEO_FRAMES = 600
"""Frames of the trained agent's video logged with a finished run (20 s of Atari at 30 fps)."""


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))


def newest_checkpoint(run_dir: Path) -> tuple[Path, dict] | None:
    """(directory, payload) of the run's newest checkpoint that verifies; None when it has none."""
    from rlhp_core.checkpoint import CheckpointError, complete_checkpoints, read_checkpoint

    for path in reversed(complete_checkpoints(Path(run_dir))):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # one from before checksums: loaded, as the learner does
                return path, read_checkpoint(path)
        except CheckpointError:
            continue
    return None


def write_policy(blob: dict, dest: Path) -> Path | None:
    """Write ``policy.pt`` from a checkpoint's payload (:func:`newest_checkpoint`); None without a policy.

    A dict, readable with ``torch.load(path, weights_only=True)``: ``format`` ("rlhp-policy"),
    ``version``, ``env_id``, ``algo`` ('a2c' or 'ppo'), ``env_steps`` (of the checkpoint),
    ``settings`` (the resolved ``RLSettings`` fields) and ``net`` (the policy network's
    ``state_dict``: actor and critic; no optimizer or RNG state, which only resuming needs).
    Rebuild it with ``make_algo(algo, obs_shape, obs_dtype, action_space, RLSettings(**settings),
    device, seed).net.load_state_dict(net)`` (bench/README.md shows it whole).
    """
    state = blob.get("state") or {}
    if "algo" not in state:
        return None
    import torch

    algo = state["algo"]
    torch.save({"format": POLICY_FORMAT, "version": 1, "env_id": state.get("env_id"), "algo": algo["algo"],
                "env_steps": int(blob["step"]), "settings": algo["settings"], "net": algo["net"]}, dest)
    return dest


# -- one tracked training run: python -m rlhp_core.train --tracking-uri URI ------------------------------
TRAIN_EXPERIMENT = "rlhp-train"
"""The experiment of ``python -m rlhp_core.train --tracking-uri`` runs unless ``--experiment`` names one."""
RUN_ID_FILE = "mlflow_run.json"
"""In a tracked run's directory: its MLflow run, reopened when the run is resumed (same URI and experiment)."""


def run_name(cfg) -> str:
    """A single run's MLflow name: ``CartPole-v1-ppo-rlhp-b300-s0`` or ``Enduro-v5-a2c-true-reward-s1``."""
    what = f"rlhp-b{cfg.label_budget}" if cfg.reward == "preferences" else "true-reward"
    return f"{cfg.env_id.split('/')[-1]}-{cfg.algo}-{what}-s{cfg.seed}"


def default_artifact_location(tracking_uri: str) -> str | None:
    """For a SQLite tracking database: ``mlartifacts/`` next to it (as a sweep's), not ./mlruns in
    whatever directory the command ran from. None (the server's or store's default) otherwise."""
    path = sqlite_path(tracking_uri)
    if scheme_of(tracking_uri) == "sqlite" and path is not None:
        return (path.resolve().parent / "mlartifacts").as_uri()
    return None


def track_training(train_fn: Callable[..., dict], cfg, *, tracking_uri: str, experiment: str | None = None,
                   command: str | None = None, program: str = "python -m rlhp_core.train",
                   max_artifact_mb: float = 1024, **train_kw) -> dict:
    """``train_fn(cfg, on_metrics=..., **train_kw)`` (``rlhp_core.train.run_training``) as one MLflow run.

    Params: every resolved TrainConfig field, then the env's description as ``env/...``; metrics
    with ``step = env steps`` as the learner logs them, and ``summary/...`` at the end; the
    artifacts of :meth:`Tracker.log_run_dir`. The run ends FINISHED, FAILED (the learner raised;
    ``rlhp.error`` says what) or KILLED (Ctrl-C: ``rlhp.stop_reason``). Rerunning on the same run
    directory (which resumes it) reopens the same MLflow run. Returns ``train_fn``'s summary.
    """
    from rlhp_core.config import resolve

    resolved = resolve(cfg)
    run_dir = Path(resolved.run_dir)
    experiment = experiment or TRAIN_EXPERIMENT
    tracker = Tracker(tracking_uri, experiment, None, program=program, command=command)
    id_file = run_dir / RUN_ID_FILE
    previous = None
    try:
        old = json.loads(id_file.read_text())
        if old.get("tracking_uri") == mask_url(tracking_uri) and old.get("experiment_id") == tracker.experiment_id:
            previous = old.get("run_id")
    except (OSError, ValueError, AttributeError):
        pass
    name = run_name(resolved)
    tags = {"rlhp.role": "train", "rlhp.run_dir": str(run_dir.resolve()),
            "rlhp.method": "rlhp" if resolved.reward == "preferences" else "true-reward"}
    run_id, _ = tracker.start_run(name, tags=tags, params=dataclasses.asdict(resolved), reuse=previous)
    recorded = {"done": False}

    def record_run_id() -> None:
        # once the learner holds the run directory (its lock): a second learner refused on it
        # must not point the directory at its own, failed, MLflow run
        if not recorded["done"] and run_dir.is_dir():
            write_atomic(id_file, json.dumps({"tracking_uri": mask_url(tracking_uri), "experiment": experiment,
                                              "experiment_id": tracker.experiment_id, "run_id": run_id},
                                             indent=2) + "\n")
            recorded["done"] = True

    def on_metrics(step: int, metrics: dict[str, float]) -> None:
        record_run_id()
        tracker.log_step(run_id, run_dir, step, metrics)

    def log_env_info() -> None:
        try:
            info = json.loads((run_dir / "env_info.json").read_text())
        except (OSError, ValueError):
            return
        if isinstance(info, dict):
            tracker.log_params(run_id, {f"env/{k}": v for k, v in info.items()})

    try:
        summary = train_fn(cfg, on_metrics=on_metrics, **train_kw)
    except KeyboardInterrupt:  # quickly, as a sweep's trial: the artifacts come when the resumed run ends
        tracker.set_tags(run_id, {"rlhp.stop_reason": "interrupted (Ctrl-C); rerun the same command to resume"})
        tracker.end(run_id, "KILLED")
        raise
    except BaseException as exc:
        with contextlib.suppress(Exception):
            log_env_info()
            tracker.log_run_dir(run_id, run_dir, max_mb=max_artifact_mb, title=f"{experiment} / {name}")
        with contextlib.suppress(Exception):
            tracker.set_tags(run_id, {"rlhp.error": f"{type(exc).__name__}: {exc}"})
        tracker.end(run_id, "FAILED")
        raise
    record_run_id()
    log_env_info()
    steps = int(summary.get("env_steps", 0))
    tracker.log_metrics(run_id, steps, {f"summary/{k}": v for k, v in summary.items()
                                        if k in ("final_return", "episodes", "labels", "sps", "wall_time_s")})
    tracker.log_run_dir(run_id, run_dir, max_mb=max_artifact_mb, title=f"{experiment} / {name}", summary=summary)
    tracker.end(run_id, "FINISHED")
    return {**summary, "mlflow_run_id": run_id, "mlflow_experiment": experiment,
            "mlflow_page": ui_page(tracking_uri, tracker.experiment_id, run_id)}


def ui_page(tracking_uri: str, experiment_id: str, run_id: str | None = None) -> str:
    """Where to look at an experiment (or one run) in MLflow's UI, in its machine-learning view.

    MLflow 3's UI opens in its GenAI view: which view is a switch in its sidebar (remembered by the
    browser), or ``workflowType=machine_learning`` in the page's URL; the experiment's
    ``mlflow.experimentKind`` tag is what older 3.x UIs and MLflow's own tools read."""
    page = f"#/experiments/{experiment_id}" + (f"/runs/{run_id}" if run_id else "") + "?workflowType=machine_learning"
    if scheme_of(tracking_uri) in ("http", "https"):
        return f"{mask_url(tracking_uri).rstrip('/')}/{page}"
    if scheme_of(tracking_uri) == "sqlite":
        return f"mlflow ui --backend-store-uri {tracking_uri}, then http://127.0.0.1:5000/{page}"
    return f"mlflow ui --backend-store-uri {mask_url(tracking_uri)}, then http://127.0.0.1:5000/{page}"

"""One trial = one learner run = one nested MLflow run: the sweep's Optuna objective.

:class:`Objective` runs whatever trial the study hands it, grid cell or search trial alike (what
the trial runs is read by the sweep kind, :meth:`bench.plan.SweepKind.describe`), in four steps:
start (the trial's config and its MLflow run), train (the learner, reporting to Optuna's pruner
and MLflow as it goes), record (the outcome in the trial's user attributes and the run) and
conclude (finished, pruned or failed). A retried trial reopens its original's run directory and
MLflow run, so the learner resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import optuna
from optuna.trial import TrialState

from rlhp_core.config import TrainConfig, resolve

from .plan import AXES, TrialSpec
from .provenance import machine
from .settings import Settings
from .storage import mask_url, this_worker

if TYPE_CHECKING:
    from .tracking import Tracker
    from .worker import Held

TrainFn = Callable[..., dict]


def _default_train_fn() -> TrainFn:
    import torch

    from rlhp_core.cli import train

    torch.set_num_threads(int(os.environ.get("RLHP_TORCH_THREADS", "1")))
    return train


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))


def _system_attrs(trial) -> dict:
    """A study trial's system attrs (Optuna 5 keeps them off ``Trial``); {} for a FixedTrial."""
    if not isinstance(trial, optuna.trial.Trial):
        return {}
    for t in trial.study.get_trials(deepcopy=False):
        if t.number == trial.number:
            return dict(t.system_attrs)
    return {}


@dataclass
class _Run:
    """One trial in flight: what it runs, its MLflow run, and what the learner has reported so far."""

    trial: optuna.Trial
    spec: TrialSpec
    cfg: TrainConfig
    run_id: str
    bar: Any = None
    t0: float = 0.0
    step: int = 0
    last_return: float = math.nan
    prune: bool = False


class Objective:
    """The study's objective: runs one trial (see the module docstring), returns its final return."""

    def __init__(self, settings: Settings, tracker: Tracker, parent_run: str, train_fn: TrainFn | None = None,
                 *, progress: bool | None = None):
        self.settings = settings
        self.tracker = tracker
        self.parent_run = parent_run
        self._train_fn = train_fn
        self.progress = progress
        self.held: Held | None = None
        self.last_state: TrialState | None = None
        """How the last trial ended, as this objective decided it (the worker loop counts them)."""
        self.worker = this_worker()

    @property
    def train_fn(self) -> TrainFn:
        if self._train_fn is None:
            self._train_fn = _default_train_fn()
        return self._train_fn

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
        run = self._start(trial)
        summary = self._train(run)
        value = self._record(run, summary)
        return self._conclude(run, summary, value)

    # -- 1. start: what the trial runs, and its MLflow run --------------------------------------------
    def _start(self, trial: optuna.Trial) -> _Run:
        s = self.settings
        system_attrs = _system_attrs(trial)
        spec = s.plan.describe(trial, system_attrs)
        trial.set_user_attr("run_key", spec.run_key)
        if spec.cell:
            trial.set_user_attr("cell", spec.cell)
        cfg = s.config(run_key=spec.run_key, method=spec.method, budget=spec.budget, seed=spec.seed,
                       searched=spec.searched, teacher=spec.teacher)
        resolved = resolve(cfg)
        origin = system_attrs.get("failed_trial")
        tags = {"rlhp.role": "trial", "optuna.study_name": s.study, "optuna.trial_number": trial.number,
                "optuna.storage": mask_url(s.storage), "rlhp.method": spec.method, "rlhp.run_key": spec.run_key,
                "rlhp.worker": self.worker, "rlhp.run_dir": cfg.run_dir}
        if spec.cell:
            tags["rlhp.cell"] = spec.cell
        if spec.teacher:
            tags["rlhp.teacher"] = spec.teacher
        if origin is not None:
            tags["optuna.retry_of"] = origin
        params = {**dataclasses.asdict(resolved), "method": spec.method, "sweep.preset": s.preset.name}
        run_id, _ = self.tracker.start_run(spec.label, tags=tags, params=params, parent=self.parent_run,
                                           reuse=trial.user_attrs.get("mlflow_run_id"))
        trial.set_user_attr("mlflow_run_id", run_id)
        return _Run(trial, spec, cfg, run_id, bar=self._bar(trial.number, spec.label))

    # -- 2. train: the learner, reporting as it goes ----------------------------------------------------
    def _on_metrics(self, run: _Run, step: int, metrics: dict[str, float]) -> None:
        """The learner's log row: to MLflow, to Optuna's pruner (the return), to the progress bar."""
        run.step = step
        self.tracker.log_step(run.run_id, Path(run.cfg.run_dir), step, metrics)
        ret = metrics.get("charts/episodic_return")
        if ret is not None and math.isfinite(ret):
            run.last_return = ret
            run.trial.report(float(ret), step)
            if run.trial.should_prune():
                run.prune = True
        if run.bar is not None:
            run.bar.update(max(0, min(step, self.settings.env_steps) - run.bar.n))
            post = {}
            if math.isfinite(run.last_return):
                post["return"] = f"{run.last_return:.1f}"
            if "labels/answered" in metrics:
                post["labels"] = int(metrics["labels/answered"])
            run.bar.set_postfix(post, refresh=False)

    def _train(self, run: _Run) -> dict:
        """The learner's summary; a failed or interrupted learner ends the MLflow run and re-raises."""
        trial, run_id = run.trial, run.run_id
        run.t0 = time.time()
        try:
            summary = self.train_fn(run.cfg, on_metrics=lambda step, metrics: self._on_metrics(run, step, metrics),
                                    should_stop=lambda: run.prune)
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            self.tracker.set_tags(run_id, {"rlhp.stop_reason": "interrupted (Ctrl-C); rerun the sweep to resume"})
            self.tracker.end(run_id, "KILLED")
            self._close_bar(run.bar)
            raise
        except BaseException as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:1000])
            with contextlib.suppress(Exception):
                self._log_artifacts(run)
            with contextlib.suppress(Exception):
                self.tracker.set_tags(run_id, {"rlhp.error": f"{type(exc).__name__}: {exc}"})
            self.tracker.end(run_id, "FAILED")
            self._close_bar(run.bar)
            self._say(f"[trial {trial.number}] {run.spec.label}: FAILED after {time.time() - run.t0:.0f} s: "
                      f"{type(exc).__name__}: {exc}")
            raise
        self._close_bar(run.bar)
        return summary

    # -- 3. record: the outcome in the trial and its run -----------------------------------------------
    def _record(self, run: _Run, summary: dict) -> float:
        """Write the outcome to the trial's user attributes and the MLflow runs; returns the trial's value
        (the learner's final return, else the last return it reported; NaN when no episode ended)."""
        trial, run_id = run.trial, run.run_id
        env_info = _jsonable(summary.get("env_info") or {})
        steps = int(summary.get("env_steps", run.step))
        final = summary.get("final_return", math.nan)
        value = final if final is not None and math.isfinite(final) else run.last_return
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
        self._log_artifacts(run, summary)
        return value

    # -- 4. conclude: pruned, failed (no return) or finished --------------------------------------------
    def _conclude(self, run: _Run, summary: dict, value: float) -> float:
        trial, run_id, label = run.trial, run.run_id, run.spec.label
        if run.prune:
            self.tracker.set_tags(run_id, {"rlhp.stop_reason": f"pruned at step {run.step}"})
            self.tracker.end(run_id, "KILLED")
            self.last_state = TrialState.PRUNED
            self._say(f"[trial {trial.number}] {label}: PRUNED at {run.step} steps (return {run.last_return:.1f})")
            raise optuna.TrialPruned(f"pruned at env step {run.step} with return {run.last_return:.2f}")
        if not math.isfinite(value):
            self.tracker.set_tags(run_id, {"rlhp.error": "no episode ended"})
            self.tracker.end(run_id, "FAILED")
            raise RuntimeError(f"no episode ended in {int(summary.get('env_steps', run.step))} env steps, so there "
                               f"is no return to optimise; raise --env-steps")
        self.tracker.end(run_id, "FINISHED")
        labels = summary.get("labels")
        searched = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items()
                            if k not in AXES)
        self._say(f"[trial {trial.number}] {label}: return {value:.1f}"
                  + (f", {labels} labels" if labels else "")
                  + f" ({time.time() - run.t0:.0f} s, {summary.get('sps', 0):.0f} steps/s)"
                  + (f" [{searched}]" if searched else ""))
        return float(value)

    # -- artifacts, progress, console --------------------------------------------------------------------
    def _log_artifacts(self, run: _Run, summary: dict | None = None) -> None:
        """The trial's run directory (plots, run files, reward model, policy, labels: Tracker.log_run_dir)."""
        self.tracker.log_run_dir(run.run_id, Path(run.cfg.run_dir), max_mb=self.settings.max_artifact_mb,
                                 title=f"{self.settings.study} / {run.spec.label}", summary=summary)

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

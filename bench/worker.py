"""The worker loop: run the study's trials one at a time until none is left for this worker.

Several workers (processes, machines) share one study. Each turn of the loop holds the sweep lock
(bench.storage.SweepLock) while it fails stale trials and pops the next one, and releases it as
soon as the trial is its own (:class:`Held`), so the others pop theirs meanwhile. A worker stops
when the sweep kind has no trial left for it, after waiting for any trial a killed worker left
RUNNING to be failed and retried (:class:`_Orphans`), or after :data:`MAX_CONSECUTIVE_FAILURES`.
"""

from __future__ import annotations

import time
import warnings
from typing import TYPE_CHECKING, Callable

import optuna
from optuna.trial import TrialState

from .settings import Settings
from .storage import SweepLock
from .study import counts

if TYPE_CHECKING:
    from .trial import Objective

MAX_CONSECUTIVE_FAILURES = 3
"""A worker stops after this many failed trials in a row (a bug, not bad luck)."""


class Held:
    """The sweep lock, entered by the worker loop and released by the objective once ask() popped its trial."""

    def __init__(self, lock: SweepLock):
        self._cm = lock.hold()
        self._cm.__enter__()
        self._open = True

    def release(self) -> None:
        if self._open:
            self._open = False
            self._cm.__exit__(None, None, None)


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
    plan = settings.plan
    orphans = _Orphans(settings, lock, objective._say)
    failures_in_a_row = 0
    done, total = plan.progress(study)
    from tqdm import tqdm

    bar = None
    if objective.progress is not False:
        bar = tqdm(total=total, initial=done, desc=f"sweep {settings.study}", unit="trial", position=0,
                   dynamic_ncols=True, disable=None if objective.progress is None else False)
    try:
        while True:
            held = Held(lock)
            waiting = False
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    optuna.storages.fail_stale_trials(study)
                if not plan.has_work(counts(study)):
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
                done, total = plan.progress(study)
                bar.total = total
                bar.update(done - bar.n)
    finally:
        if bar is not None:
            bar.close()
    return ran

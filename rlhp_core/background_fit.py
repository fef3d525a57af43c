"""Reward-model fits on a second thread, so that the RL loop does not wait for them.

The paper runs its three activities side by side. On a 2-core CPU the loop's torch work uses
one core and leaves the other mostly idle. Reward training is most of the loop's time at the
paper's ratio (results/speed/). This module moves it to the idle core.

The rule, which keeps runs reproducible (same seed, same numbers):

- A fit started at refit k trains a private copy of the ensemble (the *trainer*) on the
  dataset as it was at refit k.
- The RL loop goes on with the *live* copy.
- At refit k+1 the loop waits for that fit. It then copies the trainer's state into the live
  copy, changes the dataset and starts fit k+1.

So r̂ lags one refit interval (``reward_update_every`` steps) behind the synchronous loop. The
dataset is only touched while no fit is running. Nothing depends on how long a fit takes.
PyTorch releases the GIL inside its kernels, so a thread is enough: no second process, no
copying frames between processes. The trainer's dropout masks come from the ensemble's own
generator (rlhp_core/reward/networks.dropout), never from the global one the policy samples from.
"""

from __future__ import annotations

import copy
import threading

from .fit_schedule import FitJob
from .reward import PreferenceDataset, RewardEnsemble


class BackgroundFit:
    """One fit at a time of ``trainer`` on another thread; see the module docstring.

    ``pending`` holds the metrics of a fit that has ended but is not installed yet (a
    checkpoint waits for the running fit and saves the trainer and ``pending``).
    """

    def __init__(self, trainer: RewardEnsemble, pending: dict | None = None):
        self.trainer = trainer
        self.pending = pending
        self._thread: threading.Thread | None = None
        self._result: dict | None = None
        self._error: BaseException | None = None

    @classmethod
    def copy_of(cls, live: RewardEnsemble) -> "BackgroundFit":
        return cls(copy.deepcopy(live))

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self, dataset: PreferenceDataset, job: FitJob) -> None:
        """Run ``job(trainer, dataset)`` (a fit schedule's job, rlhp_core/fit_schedule.py) on
        ``dataset``, which must not change until the fit ends. The fit draws from the trainer's
        own generators only, so its result does not depend on timing."""
        if self.running or self.pending is not None:
            raise RuntimeError("the previous reward-model fit is not installed yet; install() it first")

        def fit() -> None:
            try:
                self._result = job(self.trainer, dataset)
            except BaseException as exc:  # handed to the loop's thread by wait()
                self._error = exc

        self._result = self._error = None
        self._thread = threading.Thread(target=fit, name="rlhp-reward-fit", daemon=True)
        self._thread.start()

    def wait(self) -> None:
        """Block until the running fit (if any) ends; its metrics become ``pending``. An error
        raised by the fit is raised here."""
        if self._thread is None:
            return
        self._thread.join()
        self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        self.pending = self._result

    def install(self, live: RewardEnsemble) -> dict | None:
        """Wait for the fit, copy the trainer's state into ``live`` and return the fit's metrics
        (None: nothing was pending). Normalisation is then up to the caller."""
        self.wait()
        metrics, self.pending = self.pending, None
        if metrics is not None:
            live.load_state_dict(self.trainer.state_dict())
        return metrics

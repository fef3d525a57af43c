"""What a run shows of itself while it learns: metrics.csv, episodes.csv, status.json, a progress bar.

The learner's loop calls a :class:`RunRecorder` at its few recording points and knows nothing
of files or bars: CleanRL's namespaced metrics (``charts/``, ``losses/``, ``labels/``,
``reward/``) go to metrics.csv and to ``on_metrics`` (MLflow, Optuna pruning), every finished
episode to episodes.csv (SB3's Monitor files), the run's phase to status.json (read by the
labeling page and by people), and the same numbers to the progress bar.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Callable

import numpy as np

from .episode_stats import WINDOW_KEYS
from .paths import write_atomic

METRIC_KEYS = (
    *WINDOW_KEYS, "charts/SPS", "labels/posted", "labels/answered", "labels/trainable", "labels/equal_share",
    "reward/val_accuracy", "reward/val_decisive", "reward/fit_epochs", "reward/comparisons_trained", "reward/raw_std",
    "reward/members_learnt", "reward/true_pref_accuracy", "reward/pred_true_corr", "losses/reward_train",
    "losses/reward_val", "reward/l2", "losses/policy", "losses/value", "losses/entropy", "losses/approx_kl",
    "losses/clipfrac", "losses/grad_norm", "losses/explained_variance", "charts/learning_rate",
)
"""Columns of metrics.csv, in order (CleanRL-style namespaces)."""

EPISODE_COLUMNS = ("env_steps", "end_step", "env", "return", "length", "gained", "lost", "progress")
"""Columns of episodes.csv: one row per finished episode (SB3's Monitor files), so a curve can
have a point per episode rather than one per log window. ``end_step``: the run's agent steps when
it ended; ``env_steps``: the metrics row it was written with (a resume drops rows after its
checkpoint by this column, as it does metrics.csv's)."""

OnMetrics = Callable[[int, dict[str, float]], None]


class RunRecorder:
    """metrics.csv, episodes.csv, status.json and the progress bar of one run directory."""

    def __init__(self, run_dir: Path, on_metrics: OnMetrics | None = None):
        self.run_dir = Path(run_dir)
        self.on_metrics = on_metrics
        self.metrics_path = self.run_dir / "metrics.csv"
        self.episodes_path = self.run_dir / "episodes.csv"
        self.status_path = self.run_dir / "status.json"
        self.bar = None

    def truncate(self, up_to_step: int) -> None:
        """Drop rows of metrics.csv and episodes.csv written after the checkpoint we resume from,
        so no step or episode is logged twice."""
        for path, columns in ((self.metrics_path, ("env_steps", *METRIC_KEYS)), (self.episodes_path, EPISODE_COLUMNS)):
            rows = []
            if path.exists():
                with open(path, newline="") as f:
                    rows = [r for r in csv.DictReader(f) if int(r["env_steps"]) <= up_to_step]
            tmp = path.with_suffix(".csv.tmp")
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
                w.writeheader()
                w.writerows(rows)
            tmp.replace(path)

    def log(self, env_steps: int, metrics: dict[str, float], episodes: list[dict] = ()) -> None:
        """One row of metrics.csv (and one of episodes.csv per episode finished since the last)."""
        if episodes:
            with open(self.episodes_path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=EPISODE_COLUMNS).writerows(
                    {"env_steps": env_steps, **{k: e.get(k, "") for k in EPISODE_COLUMNS[1:]}} for e in episodes)
        with open(self.metrics_path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=("env_steps", *METRIC_KEYS)).writerow(
                {"env_steps": env_steps, **{k: metrics.get(k, "") for k in METRIC_KEYS}})
        if self.on_metrics is not None:
            self.on_metrics(env_steps, metrics)

    def write_status(self, status: dict) -> None:
        write_atomic(self.status_path, json.dumps(status))

    # -- the progress bar ---------------------------------------------------------------------------
    def open_bar(self, total: int, initial: int, desc: str) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, smoothing=0.05, desc=desc)

    def tick(self, env_steps: int) -> None:
        if self.bar is not None:
            self.bar.update(env_steps - self.bar.n)

    def show(self, metrics: dict[str, float], recent_returns, progress_name: str | None) -> None:
        """A log window's numbers on the bar: steps/s, the recent return, and, below Enduro's
        floored score, reward gained and lost (cars passed / passed back) per 1k steps and driving
        progress per step; with labels, how many are answered and r̂'s accuracy on fresh pairs."""
        if self.bar is None:
            return
        post = {"sps": f"{metrics['charts/SPS']:.0f}"}
        if recent_returns:
            post["return"] = f"{np.mean(recent_returns):.1f}"
        post["+/-1k"] = (f"{metrics.get('charts/gained_per_1k_steps', 0):.1f}/"
                         f"{metrics.get('charts/lost_per_1k_steps', 0):.1f}")
        if "charts/progress_per_step" in metrics:
            post[progress_name or "progress"] = f"{metrics['charts/progress_per_step']:.4f}"
        if "labels/answered" in metrics:
            post["labels"] = int(metrics["labels/answered"])
        if "reward/true_pref_accuracy" in metrics:
            post["acc"] = f"{metrics['reward/true_pref_accuracy']:.2f}"
        self.bar.set_postfix(post, refresh=False)

    def show_pretraining(self, epoch: int, max_epochs: int, fit: dict) -> None:
        if self.bar is not None:
            self.bar.set_postfix({"pretraining": f"epoch {epoch}/{max_epochs}",
                                  "val_acc": f"{fit.get('val_accuracy', float('nan')):.2f}"})

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

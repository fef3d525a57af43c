"""Aggregates over seeds: mean, interquartile mean and percentile-bootstrap 95% confidence intervals.

IQM (Agarwal et al. 2021, "Deep RL at the Edge of the Statistical Precipice"): the mean of the
middle 50% of the values (scipy.stats.trim_mean with 25% cut from each end). With fewer than 4
seeds nothing is cut, so it equals the mean. CIs: resample the seeds with replacement 10,000
times (fixed generator seed, so reports are reproducible); the 2.5th and 97.5th percentiles of
the statistic. With one seed there is no interval (NaN).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

N_BOOT = 10_000
LEVEL = 0.95


def trim_mean(x, cut: float, axis: int = 0):
    """scipy.stats.trim_mean, imported on first use: scipy.stats takes seconds to import, which
    ``bench.report`` should not spend before its input is checked."""
    from scipy.stats import trim_mean as scipy_trim_mean

    return scipy_trim_mean(x, cut, axis=axis)


def iqm(values) -> float:
    x = np.asarray(values, dtype=float)
    return float(trim_mean(x, 0.25)) if len(x) else math.nan


def mean(values) -> float:
    x = np.asarray(values, dtype=float)
    return float(x.mean()) if len(x) else math.nan


def bootstrap_ci(values, stat: Callable = mean, *, n_boot: int = N_BOOT, level: float = LEVEL,
                 seed: int = 0) -> tuple[float, float]:
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))
    samples = x[idx]
    if stat is mean:
        boot = samples.mean(axis=1)
    elif stat is iqm:
        boot = trim_mean(samples, 0.25, axis=1)
    else:
        boot = np.array([stat(s) for s in samples])
    lo, hi = np.percentile(boot, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(lo), float(hi)


def summarize(values) -> dict[str, float]:
    """n, mean [CI], IQM [CI], std, min, max of one cell's per-seed values."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    m_lo, m_hi = bootstrap_ci(x, mean)
    i_lo, i_hi = bootstrap_ci(x, iqm)
    return {
        "n": int(len(x)), "mean": mean(x), "mean_ci_low": m_lo, "mean_ci_high": m_hi,
        "iqm": iqm(x), "iqm_ci_low": i_lo, "iqm_ci_high": i_hi,
        "std": float(x.std(ddof=1)) if len(x) > 1 else math.nan,
        "min": float(x.min()) if len(x) else math.nan, "max": float(x.max()) if len(x) else math.nan,
    }

"""Aggregates over seeds: mean, interquartile mean, probability of improvement, bootstrap 95% CIs.

IQM (Agarwal et al. 2021, "Deep RL at the Edge of the Statistical Precipice"): the mean of the
middle 50% of the values (scipy.stats.trim_mean with 25% cut from each end). With fewer than 4
seeds nothing is cut, so it equals the mean. CIs: resample the seeds with replacement 10,000
times (fixed generator seed, so reports are reproducible); the 2.5th and 97.5th percentiles of
the statistic. With one seed there is no interval (NaN); with two, the percentile interval of
the mean is exactly [min, max] of the two values, not a 95% CI in any useful sense.

The bootstrap is in-house rather than ``scipy.stats.bootstrap`` because scipy's default (BCa)
gives NaN with a warning when the seeds tie, which is the common case here (Enduro's floored
score: every seed 0); the percentile interval below is also the one rliable reports.

Probability of improvement (rliable): P(X > Y) for a random seed of X against a random seed
of Y, ties counting one half (the Mann-Whitney U statistic over n*m); its CI resamples the
seeds of X and of Y independently.
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


def _resample(x: np.ndarray, rng: np.random.Generator, n_boot: int) -> np.ndarray:
    """n_boot resamples of x with replacement, one per row."""
    return x[rng.integers(0, len(x), size=(n_boot, len(x)))]


def _percentile_interval(boot: np.ndarray, level: float) -> tuple[float, float]:
    lo, hi = np.percentile(boot, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(lo), float(hi)


def bootstrap_ci(values, stat: Callable = mean, *, n_boot: int = N_BOOT, level: float = LEVEL,
                 seed: int = 0) -> tuple[float, float]:
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return math.nan, math.nan
    samples = _resample(x, np.random.default_rng(seed), n_boot)
    if stat is mean:
        boot = samples.mean(axis=1)
    elif stat is iqm:
        boot = trim_mean(samples, 0.25, axis=1)
    else:
        boot = np.array([stat(s) for s in samples])
    return _percentile_interval(boot, level)


def _finite(values) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    return x[np.isfinite(x)]


def summarize(values) -> dict[str, float]:
    """n, mean [CI], IQM [CI], std, min, max of one cell's per-seed values (NaNs dropped)."""
    x = _finite(values)
    m_lo, m_hi = bootstrap_ci(x, mean)
    i_lo, i_hi = bootstrap_ci(x, iqm)
    return {
        "n": int(len(x)), "mean": mean(x), "mean_ci_low": m_lo, "mean_ci_high": m_hi,
        "iqm": iqm(x), "iqm_ci_low": i_lo, "iqm_ci_high": i_hi,
        "std": float(x.std(ddof=1)) if len(x) > 1 else math.nan,
        "min": float(x.min()) if len(x) else math.nan, "max": float(x.max()) if len(x) else math.nan,
    }


def _improvement(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """P(X > Y), ties one half, for each row of xs (B, n) against the same row of ys (B, m)."""
    d = xs[:, :, None] - ys[:, None, :]
    return ((d > 0) + 0.5 * (d == 0)).mean(axis=(1, 2))


def probability_of_improvement(x, y, *, n_boot: int = N_BOOT, level: float = LEVEL,
                               seed: int = 0) -> dict[str, float]:
    """P(X > Y) over all seed pairs, with a bootstrap CI (NaN unless both sides have 2+ seeds).

    Stratified as in rliable: X's seeds and Y's seeds are resampled separately, since they are
    independent runs of different methods.
    """
    x, y = _finite(x), _finite(y)
    out = {"n_x": int(len(x)), "n_y": int(len(y)), "p": math.nan, "p_ci_low": math.nan, "p_ci_high": math.nan}
    if not len(x) or not len(y):
        return out
    out["p"] = float(_improvement(x[None], y[None])[0])
    if len(x) >= 2 and len(y) >= 2:
        rng = np.random.default_rng(seed)
        boot = _improvement(_resample(x, rng, n_boot), _resample(y, rng, n_boot))
        out["p_ci_low"], out["p_ci_high"] = _percentile_interval(boot, level)
    return out

"""Seaborn figures for a trial (logged to its MLflow run) and for a sweep (bench.report): every plot of bench.

The sweep figures take bench.report_data's frames: curves in long format (one row per trial and
log row, metrics.csv's column names, a ``group`` and a ``trial`` column) and bench.report_tables'
tables. Which figures a report shows, under which file name and title, is chosen at the end of
this module (:func:`grid_figures`, :func:`teacher_figures`, :func:`search_figures`,
:func:`progress_figures`); bench.report saves them.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from typing import Iterator  # noqa: E402

from . import presets, stats  # noqa: E402
from .metrics import CUMULATIVE_PANELS, DIAGNOSTIC_PANELS, FINAL_METRICS, LABELS, PROGRESS_PANELS, RETURN  # noqa: E402

_TRIAL_PANELS = (
    ("episode return (true)", (RETURN,)),
    ("labels", ("labels/posted", LABELS)),
    ("reward model vs true reward", ("reward/pred_true_corr", "reward/true_pref_accuracy", "reward/val_accuracy")),
    ("steps per second", ("charts/SPS",)),
)


def trial_curves(metrics: pd.DataFrame, title: str):
    """Learning curves of one run from its metrics.csv (x = env steps). Returns a Figure."""
    sns.set_theme(style="whitegrid", context="notebook")
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), constrained_layout=True)
    for ax, (panel, keys) in zip(axes.flat, _TRIAL_PANELS):
        present = [k for k in keys if k in metrics and metrics[k].notna().any()]
        for k in present:
            sns.lineplot(data=metrics, x="env_steps", y=k, ax=ax, label=k, marker="o" if len(metrics) < 30 else None)
        ax.set_title(panel)
        ax.set_xlabel("env steps")
        ax.set_ylabel("")
        if not present:
            ax.text(0.5, 0.5, "not logged for this run", ha="center", va="center", transform=ax.transAxes)
        elif len(present) == 1 and ax.get_legend() is not None:
            ax.get_legend().remove()
    fig.suptitle(title)
    return fig


def _with_baseline(curves: pd.DataFrame, method: str, baseline: str) -> pd.DataFrame:
    part = curves[curves["method"] == method]
    if method != baseline and baseline in set(curves["method"]):
        part = pd.concat([part, curves[curves["method"] == baseline]])
    return part


def return_by_budget(curves: pd.DataFrame, *, baseline: str = "true-reward"):
    """Episode return over training: one panel per method, one line per budget (seeds shaded: min-max)."""
    sns.set_theme(style="whitegrid", context="notebook")
    methods = [m for m in dict.fromkeys(curves["method"]) if m != baseline] or [baseline]
    hue_order = list(dict.fromkeys(curves.sort_values("budget")["budget_label"]))
    fig, axes = plt.subplots(1, len(methods), figsize=(max(7.0, 5.5 * len(methods)), 4.4), squeeze=False,
                             sharey=True, constrained_layout=True)
    palette = dict(zip(hue_order, sns.color_palette("viridis", len(hue_order))))
    if "true reward" in palette:
        palette["true reward"] = (0.2, 0.2, 0.2)
    for ax, method in zip(axes.flat, methods):
        part = _with_baseline(curves, method, baseline)
        sns.lineplot(data=part, x="env_steps", y=RETURN, hue="budget_label", units=None, estimator="mean",
                     errorbar=("pi", 100), hue_order=[h for h in hue_order if h in set(part["budget_label"])],
                     palette=palette, ax=ax)
        ax.set_title(method)
        ax.set_xlabel("env steps")
        ax.set_ylabel("episode return (true)")
        if ax.get_legend() is not None:
            ax.get_legend().set_title("labels")
    fig.suptitle("Episode return over training\n(line: mean over seeds; shaded: min to max over seeds)", fontsize=11)
    return fig


def return_by_method(curves: pd.DataFrame, *, baseline: str = "true-reward"):
    """The ablations side by side: one panel per label budget, one line per method (the true-reward
    baseline in each), seeds shaded min-max; the paper's Figure 5 layout. None with one method."""
    methods = list(dict.fromkeys(m for m in curves["method"] if m != baseline))
    budgets = sorted(b for b in set(curves.loc[curves["method"] != baseline, "budget"]))
    if len(methods) < 2 or not budgets:
        return None
    sns.set_theme(style="whitegrid", context="notebook")
    fig, axes = plt.subplots(1, len(budgets), figsize=(max(7.0, 5.0 * len(budgets)), 4.4), squeeze=False,
                             sharey=True, constrained_layout=True)
    order = methods + ([baseline] if baseline in set(curves["method"]) else [])
    palette = dict(zip(methods, sns.color_palette("tab10", len(methods))))
    palette[baseline] = (0.2, 0.2, 0.2)
    for ax, budget in zip(axes.flat, budgets):
        part = curves[(curves["budget"] == budget) | (curves["method"] == baseline)]
        sns.lineplot(data=part, x="env_steps", y=RETURN, hue="method", estimator="mean", errorbar=("pi", 100),
                     hue_order=[m for m in order if m in set(part["method"])], palette=palette, ax=ax)
        ax.set_title(f"{budget:,} labels")
        ax.set_xlabel("env steps")
        ax.set_ylabel("episode return (true)")
    fig.suptitle("Ablations per label budget\n(line: mean over seeds; shaded: min to max over seeds)", fontsize=11)
    return fig


def labels_over_training(curves: pd.DataFrame):
    """Labels answered over training: one panel per method, one line per budget."""
    sns.set_theme(style="whitegrid", context="notebook")
    part = curves[curves[LABELS].notna()]
    methods = list(dict.fromkeys(part["method"]))
    fig, axes = plt.subplots(1, max(1, len(methods)), figsize=(max(7.0, 5.5 * len(methods)), 4.2), squeeze=False,
                             sharey=True, constrained_layout=True)
    for ax, method in zip(axes.flat, methods):
        sub = part[part["method"] == method]
        order = list(dict.fromkeys(sub.sort_values("budget")["budget_label"]))
        sns.lineplot(data=sub, x="env_steps", y=LABELS, hue="budget_label", hue_order=order,
                     palette="viridis", errorbar=("pi", 100), ax=ax)
        ax.set_title(method)
        ax.set_xlabel("env steps")
        ax.set_ylabel("labels answered")
        if ax.get_legend() is not None:
            ax.get_legend().set_title("budget")
    fig.suptitle("Labels gathered over training")
    return fig


def final_returns(trials: pd.DataFrame):
    """Final return per budget and method: points are seeds, bars the mean with a 95% bootstrap CI."""
    sns.set_theme(style="whitegrid", context="notebook")
    order = list(dict.fromkeys(trials.sort_values("budget")["budget_label"]))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(order) * max(1, trials["method"].nunique()) ** 0.5), 4.2),
                           constrained_layout=True)
    several = trials["method"].nunique() > 1  # seaborn divides by (hue levels - 1) when dodging
    sns.pointplot(data=trials, x="budget_label", y="value", hue="method", order=order, errorbar=("ci", 95),
                  dodge=0.4 if several else False, linestyle="none", capsize=0.1, ax=ax)
    sns.stripplot(data=trials, x="budget_label", y="value", hue="method", order=order, dodge=several, alpha=0.4,
                  legend=False, ax=ax)
    ax.set_xlabel("label budget")
    ax.set_ylabel("final return (mean of last 10 episodes)")
    ax.set_title("Final return per budget and method")
    return fig


def search_history(trials: pd.DataFrame):
    """Objective per trial number, with the best so far."""
    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = plt.subplots(figsize=(7, 4.2), constrained_layout=True)
    sns.scatterplot(data=trials, x="number", y="value", hue="state", ax=ax)
    done = trials[trials["state"] == "COMPLETE"].sort_values("number")
    if len(done):
        ax.step(done["number"], done["value"].cummax(), where="post", color="k", label="best so far")
        ax.legend()
    ax.set_xlabel("trial")
    ax.set_ylabel("final return")
    ax.set_title("Search history")
    return fig


# -- a sweep's curves per cell group (bench.report) ---------------------------------------------------
BASELINE_COLOR = (0.15, 0.15, 0.15)
"""The true-reward baseline is dark grey in every figure, so the eye finds the reference at once."""


def group_palette(groups: list[str], baseline: str = "true reward") -> dict:
    """One colour per cell group, the same in every figure of a report."""
    others = [g for g in groups if g != baseline]
    palette = dict(zip(others, sns.color_palette("tab10" if len(others) <= 10 else "husl", len(others))))
    palette[baseline] = BASELINE_COLOR
    return palette


def _aligned(curves: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Each trial's columns linearly interpolated between its logged rows (never past its first or
    last value). Per-episode metrics are logged only in windows where an episode ended (Enduro: a few
    rows in ten), at different rows for different seeds; without this the mean over seeds at most
    x values would be one seed's value."""
    out = curves.sort_values(["trial", "env_steps"]).copy()
    for col in columns:
        out[col] = out.groupby("trial")[col].transform(lambda s: s.interpolate(limit_area="inside"))
    return out


def _shared_legend(fig, axes) -> None:
    """One legend below the panels instead of one per panel."""
    handles, labels = [], []
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels and not label.startswith("_"):
                handles.append(h)
                labels.append(label)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=min(4, len(labels)), fontsize=9)


def _panel_grid(n: int, height: float = 3.6):
    """A figure of n panels, two per row (the unused last one hidden)."""
    ncols = min(2, n)
    fig, axes = plt.subplots(-(-n // ncols), ncols, figsize=(max(8.0, 5.8 * ncols), height * -(-n // ncols) + 0.9),
                             squeeze=False, constrained_layout=True)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes.flat[:n]


def curve_panels(curves: pd.DataFrame, panels, *, title: str, x: str = "env_steps", xlabel: str = "agent steps",
                 hue: str = "group", hue_order: list[str] | None = None, per_run: bool = False):
    """One panel per (column, label) in ``panels``, one line per ``hue`` value. Returns None when no
    panel's column holds a value.

    Default: the line is the mean over seeds and the shading spans min to max over seeds.
    ``per_run``: one line per trial (run) instead, for x values seeds do not share (labels answered) or
    where a line is one run anyway (running trials, a search's best trials).
    """
    panels = [(k, label) for k, label in panels if k in curves and curves[k].notna().any()]
    if not panels:
        return None
    sns.set_theme(style="whitegrid", context="notebook")
    data = _aligned(curves, [k for k, _ in panels])
    order = [h for h in (hue_order or dict.fromkeys(data[hue])) if h in set(data[hue])]
    fig, axes = _panel_grid(len(panels))
    how = {"units": "trial", "estimator": None} if per_run else {"estimator": "mean", "errorbar": ("pi", 100)}
    for ax, (key, label) in zip(axes, panels):
        part = data[data[key].notna()]
        sns.lineplot(data=part, x=x, y=key, hue=hue, hue_order=[h for h in order if h in set(part[hue])],
                     palette=group_palette(order), marker="o" if part[x].nunique() < 40 else None, markersize=4,
                     ax=ax, **how)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("")
    _shared_legend(fig, axes)
    spread = "one line per run" if per_run else "line: mean over seeds; shaded: min to max over seeds"
    fig.suptitle(f"{title}\n({spread})", fontsize=11)
    return fig


def _error_bars(part: pd.DataFrame) -> list:
    """Distances from the mean to the CI ends (0 where a cell has no interval: one seed)."""
    return [(part["mean"] - part["mean_ci_low"]).fillna(0).clip(lower=0),
            (part["mean_ci_high"] - part["mean"]).fillna(0).clip(lower=0)]


def _budget_axis(ax, budgets: list[int]) -> None:
    if budgets and max(budgets) > 10 * min(budgets) > 0:
        ax.set_xscale("log")
        ax.minorticks_off()
    ax.set_xticks(budgets, [f"{b:,}" for b in budgets])


def final_vs_budget(table: pd.DataFrame, labels: dict[str, str]):
    """Final metrics against the label budget: one line per method (and teacher), the mean over seeds
    with its bootstrap 95% CI; the true-reward baseline (no budget) as a dashed line with its CI band.

    ``table``: bench.report's progress table (one row per group and metric; ``series``: the group without
    its budget); ``labels``: metric -> panel title.
    """
    sns.set_theme(style="whitegrid", context="notebook")
    metrics = [m for m in labels if m in set(table["metric"])]
    fig, axes = _panel_grid(len(metrics), height=3.8)
    lines = list(dict.fromkeys(table.loc[~table["baseline"], "series"]))
    palette = group_palette(lines)
    for ax, metric in zip(axes, metrics):
        part = table[table["metric"] == metric]
        for row in part[part["baseline"]].itertuples(index=False):
            ax.axhline(row.mean, color=BASELINE_COLOR, linestyle="--", linewidth=1.4, label=row.group)
            if math.isfinite(row.mean_ci_low):
                ax.axhspan(row.mean_ci_low, row.mean_ci_high, color=BASELINE_COLOR, alpha=0.1, linewidth=0)
        for line in lines:
            sub = part[part["series"] == line].sort_values("budget")
            ax.errorbar(sub["budget"], sub["mean"], yerr=_error_bars(sub), marker="o", capsize=4,
                        color=palette[line], label=line)
        _budget_axis(ax, sorted(set(table.loc[~table["baseline"], "budget"])))
        ax.set_title(labels[metric], fontsize=10)
        ax.set_xlabel("label budget")
    _shared_legend(fig, axes)
    fig.suptitle("Final metrics per label budget\n(mean over seeds, bootstrap 95% CI; dashed: true reward)",
                 fontsize=11)
    return fig


def run_score_distribution(values, taus, *, n_boot: int = stats.N_BOOT, level: float = stats.LEVEL,
                           seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fraction, low, high) at each tau: the fraction of the runs whose score is strictly above tau
    (rliable's run-score distribution), and its percentile-bootstrap band from resampling the runs
    with replacement (``n_boot`` times, fixed generator seed, as in bench.stats). Non-finite scores
    are dropped; with fewer than 2 runs there is no band (NaN), with none no fraction either."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    taus = np.asarray(taus, dtype=float)
    if not len(x):
        return tuple(np.full(taus.shape, math.nan) for _ in range(3))
    fraction = (x[:, None] > taus[None, :]).mean(axis=0)
    if len(x) < 2:
        return fraction, np.full(taus.shape, math.nan), np.full(taus.shape, math.nan)
    # A resample is how often it drew each run. With the runs sorted, those above tau are the ones from
    # searchsorted(tau) on, so a resample's fraction above every tau is a suffix sum of its draw counts.
    n, x = len(x), np.sort(x)
    draws = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    counts = np.bincount((draws + n * np.arange(n_boot)[:, None]).ravel(), minlength=n_boot * n).reshape(n_boot, n)
    above = np.zeros((n_boot, n + 1))
    above[:, :n] = counts[:, ::-1].cumsum(axis=1)[:, ::-1]  # above[:, k]: draws of the runs k..n-1
    fractions = above[:, np.searchsorted(x, taus, side="right")] / n  # (n_boot, taus)
    lo, hi = np.percentile(fractions, [100 * (1 - level) / 2, 100 * (1 + level) / 2], axis=0)
    return fraction, lo, hi


def profile_taus(values, points: int = 200) -> np.ndarray:
    """The taus of a performance profile: a grid over the scores' range (5% margin each side, so the
    curves start at 1 and end at 0) joined with every score, where the fractions step down."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if not len(x):
        return np.array([])
    lo, hi = float(x.min()), float(x.max())
    margin = 0.05 * (hi - lo) or max(1.0, 0.05 * abs(lo))
    return np.union1d(np.linspace(lo - margin, hi + margin, points), x)


def performance_profile(finals: pd.DataFrame, key: str, label: str, order: list[str] | None = None, *,
                        n_boot: int = stats.N_BOOT):
    """rliable's performance profile of one final metric: per cell group, the fraction of its runs
    whose score ``key`` is above tau, as a function of tau, with a percentile-bootstrap 95% band
    over the group's runs. A curve that lies above another everywhere dominates it: at every
    threshold, more of its runs clear it. Returns None when no group has a score.

    ``finals``: one row per finished run (bench.report.final_values) with ``group`` and ``key``.
    """
    data = finals[["group", key]].assign(score=pd.to_numeric(finals[key], errors="coerce"))
    data = data[np.isfinite(data["score"])]
    if not len(data):
        return None
    groups = [g for g in (order or dict.fromkeys(data["group"])) if g in set(data["group"])]
    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = plt.subplots(figsize=(8.5, 4.4 + 0.3 * -(-len(groups) // 3)), constrained_layout=True)
    palette = group_palette(groups)
    taus = profile_taus(data["score"])
    shade = 0.15 if len(groups) <= 4 else 0.07  # many overlapping bands would hide the curves
    for group in groups:
        scores = data.loc[data["group"] == group, "score"].to_numpy()
        fraction, lo, hi = run_score_distribution(scores, taus, n_boot=n_boot)
        color, runs = palette[group], f"{len(scores)} run" + ("s" if len(scores) != 1 else "")
        ax.plot(taus, fraction, drawstyle="steps-post", color=color, linewidth=2, label=f"{group} ({runs})")
        if np.isfinite(lo).any():
            ax.fill_between(taus, lo, hi, step="post", color=color, alpha=shade, linewidth=0)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(taus[0], taus[-1])
    ax.set_xlabel(f"τ: {label}")
    ax.set_ylabel("fraction of runs with score > τ")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=min(3, len(groups)), fontsize=9)
    ax.set_title("Performance profile: the fraction of each group's runs whose final score exceeds τ\n"
                 "(shaded: bootstrap 95% band over the group's runs; with 2 runs it is no 95% CI)", fontsize=10)
    return fig


# -- a teacher axis (the noise-robustness benchmark) ---------------------------------------------------
def _reference_lines(ax, done: pd.DataFrame) -> None:
    """True-reward and rational-teacher means (with their seeds' min-max band) as horizontal references."""
    for family, color, style in (("true reward", BASELINE_COLOR, "--"), ("rational", "tab:blue", ":")):
        v = done.loc[done["family"] == family, "value"].astype(float)
        if len(v):
            ax.axhline(v.mean(), color=color, linestyle=style, linewidth=1.6, label=f"{family} (mean)")
            ax.axhspan(v.min(), v.max(), color=color, alpha=0.08, linewidth=0)


def _family_panel(ax, done: pd.DataFrame, family: str, x_of, xlabel: str, *, log: bool = False,
                  include_rational_at=None, ticks=None) -> None:
    part = done[done["family"] == family].copy()
    if include_rational_at is not None:
        part = pd.concat([done[done["family"] == "rational"].assign(level=include_rational_at), part])
    _reference_lines(ax, done)
    if len(part):
        part["x"] = [x_of(v) for v in part["level"]]
        ax.scatter(part["x"], part["value"], color="tab:orange", alpha=0.55, s=28, zorder=3, label="seed")
        means = part.groupby("x")["value"].mean().sort_index()
        ax.plot(means.index, means.values, color="tab:red", marker="o", linewidth=2, zorder=4, label="mean over seeds")
        if log:
            ax.set_xscale("log")
        if ticks:
            shown = {x: t for x, t in ticks.items() if x in set(part["x"])}
            ax.set_xticks(list(shown), list(shown.values()))
            ax.minorticks_off()
        else:
            ax.set_xticks(sorted(set(part["x"])))
        if log:
            lo, hi = np.log10(min(part["x"])), np.log10(max(part["x"]))
            pad = max(0.25, 0.1 * (hi - lo))
            ax.set_xlim(10 ** (lo - pad), 10 ** (hi + pad))
    else:
        ax.text(0.5, 0.5, f"no '{family}' teachers in this sweep", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(f"{family}")
    ax.set_xlabel(xlabel)


def _short_teacher(family: str, level: float, teacher: str) -> str:
    if family == "mistake":
        return f"ε={level:g}"
    if family == "stoc":
        return f"β={level:g}"
    return teacher if family in ("combined", "?") else family


def _label_points(ax, agg: pd.DataFrame, fig) -> None:
    """Short labels next to the points, nudged up or down until they do not overlap (display coordinates)."""
    fig.canvas.draw()
    placed: list[tuple[float, float]] = []
    height, width = 11.0, 46.0  # points
    to_pt = 72.0 / fig.dpi
    level = {t: lv for t, lv in zip(agg["teacher"], agg.get("level", [math.nan] * len(agg)))}
    for r in sorted(agg.itertuples(index=False), key=lambda r: -r.y):
        x, y = (v * to_pt for v in ax.transData.transform((r.x, r.y)))
        dy = 0.0
        for step in range(40):
            dy = (step + 1) // 2 * height * (1 if step % 2 == 0 else -1)
            if all(abs((y + dy) - py) >= height or abs(x - px) >= width for px, py in placed):
                break
        placed.append((x, y + dy))
        ax.annotate(_short_teacher(r.family, level.get(r.teacher, math.nan), r.teacher), (r.x, r.y),
                    textcoords="offset points", xytext=(7, dy - 3), fontsize=8,
                    arrowprops=dict(arrowstyle="-", color="0.6", linewidth=0.6) if abs(dy) > height else None)


def return_vs_noise(done: pd.DataFrame, env_id: str):
    """Final return against each family's noise level: mistake (eps), stoc (1/beta), and every teacher
    against the label error it injected (measured against the rational teacher)."""
    sns.set_theme(style="whitegrid", context="notebook")
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.6), sharey=True, constrained_layout=True)
    _family_panel(axes[0], done, "mistake", lambda v: v, "eps_mistake (probability a label is flipped)",
                  include_rational_at=0.0)
    stoc_levels = sorted(set(done.loc[done["family"] == "stoc", "level"]))
    _family_panel(axes[1], done, "stoc", lambda v: 1.0 / v, "1 / beta (log scale; right = noisier)", log=True,
                  ticks={1.0 / b: f"β={b:g}" for b in stoc_levels if b > 0})
    ax = axes[2]
    _reference_lines(ax, done)
    part = done[done["label_error"].notna() & (done["family"] != "true reward")]
    if len(part):
        agg = part.groupby("teacher").agg(x=("label_error", "mean"), y=("value", "mean"), lo=("value", "min"),
                                          hi=("value", "max"), family=("family", "first"),
                                          level=("level", "first")).reset_index()
        fams = list(dict.fromkeys(part["family"]))  # the report sorts teachers by family
        palette = dict(zip(fams, sns.color_palette("tab10", len(fams))))
        sns.scatterplot(data=part, x="label_error", y="value", hue="family", hue_order=fams, palette=palette,
                        alpha=0.35, s=24, legend=False, ax=ax)
        for r in agg.itertuples(index=False):
            ax.errorbar(r.x, r.y, yerr=[[r.y - r.lo], [r.hi - r.y]], fmt="o", color=palette[r.family], capsize=3,
                        markersize=7, label=r.family if r.family not in ax.get_legend_handles_labels()[1] else None)
        ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{100 * v:.0f}%"))
        ax.set_xlim(min(-0.02, agg["x"].min() - 0.02), agg["x"].max() + 0.08)
        _label_points(ax, agg, fig)
    else:
        ax.text(0.5, 0.5, "label error not available\n(no label stores here)", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_title("every teacher (mean; bars: min-max over seeds)")
    ax.set_xlabel("measured label error vs the rational teacher")
    axes[0].set_ylabel("final return (mean of last 10 episodes)")
    handles, labels = [], []
    for a in axes:
        for h, l in zip(*a.get_legend_handles_labels()):
            if l not in labels:
                handles.append(h)
                labels.append(l)
    fig.legend(handles, labels, loc="outside lower center", ncol=min(8, len(labels)), fontsize=9)
    fig.suptitle(f"{env_id}: final return vs teacher noise (shaded: min-max of the reference runs)", fontsize=12)
    return fig


def final_returns_by_teacher(done: pd.DataFrame, order: list[str]):
    """Final return per teacher: points are seeds, the bar the mean with a 95% bootstrap CI."""
    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(order) + 1.6), constrained_layout=True)
    sns.pointplot(data=done, y="teacher", x="value", order=order, errorbar=("ci", 95), linestyle="none",
                  capsize=0.2, color="tab:red", markersize=6, ax=ax)
    sns.stripplot(data=done, y="teacher", x="value", order=order, alpha=0.75, color="0.25", size=4, jitter=0.12,
                  zorder=5, ax=ax)
    v = done.loc[done["family"] == "true reward", "value"].astype(float)
    if len(v):
        ax.axvline(v.mean(), color=BASELINE_COLOR, linestyle="--", linewidth=1.2)
    ax.set_xlabel("final return (mean of last 10 episodes); dashed: true-reward mean")
    ax.set_ylabel("")
    ax.set_title("Final return per teacher (dots: seeds; bar: mean, bootstrap 95% CI)")
    return fig


def return_by_teacher(curves: pd.DataFrame, families: dict[str, str]):
    """Return over training, one panel per noise family; rational and true reward in every panel."""
    sns.set_theme(style="whitegrid", context="notebook")
    groups = [("mistake", ("mistake",)), ("stoc", ("stoc",)), ("other teachers", ("skip", "equal", "myopic", "combined"))]
    groups = [(name, fams) for name, fams in groups if any(families.get(t) in fams for t in set(curves["teacher"]))]
    groups = groups or [("teachers", tuple(set(families.values())))]
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 5.4), squeeze=False, sharey=True,
                             constrained_layout=True)
    for ax, (name, fams) in zip(axes.flat, groups):
        teachers = [t for t in dict.fromkeys(curves["teacher"]) if families.get(t) in fams]
        refs = [t for t in ("rational", "true reward") if t in set(curves["teacher"]) and t not in teachers]
        part = curves[curves["teacher"].isin(teachers + refs)]
        palette = dict(zip(teachers, sns.color_palette("flare", max(1, len(teachers)))))
        palette.update({"rational": "tab:blue", "true reward": BASELINE_COLOR})
        sns.lineplot(data=part, x="env_steps", y=RETURN, hue="teacher", hue_order=teachers + refs, palette=palette,
                     estimator="mean", errorbar=("pi", 100), ax=ax)
        ax.set_title(name)
        ax.set_xlabel("env steps")
        ax.set_ylabel("episode return (true)")
        if ax.get_legend() is not None:
            sns.move_legend(ax, "upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=9, title=None,
                            frameon=False)
    fig.suptitle("Episode return over training per teacher\n(line: mean over seeds; shaded: min to max over seeds)",
                 fontsize=11)
    return fig


def save(fig, path) -> None:
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- the figures of a report, per sweep kind (bench.report) -----------------------------------------------
Figures = Iterator[tuple[str, str, object]]
"""(file name, title, figure) in the README's order, each drawn when asked for; a None figure has nothing to show."""


def grid_figures(done: pd.DataFrame, curves: pd.DataFrame) -> Figures:
    """A grid's: return per budget (and per method, for ablations), labels over training, final returns."""
    if curves[RETURN].notna().any():
        with_return = curves[curves[RETURN].notna()]
        yield "return_by_budget.png", "Episode return over training, per label budget", return_by_budget(with_return)
        yield ("return_by_method.png", "Ablations side by side, one panel per label budget",
               return_by_method(with_return))
    if curves[LABELS].notna().any():
        yield "labels_over_training.png", "Labels gathered over training", labels_over_training(curves)
    if len(done):
        yield "final_returns.png", "Final return per budget and method", final_returns(done)


def teacher_figures(done: pd.DataFrame, curves: pd.DataFrame, teachers: list[str], env_id: str) -> Figures:
    """A teacher axis': final return against noise, per teacher (in ``teachers``' order), and curves per teacher.
    ``done``: bench.report_data.teacher_trials' frame."""
    if len(done):
        yield "return_vs_noise.png", "Final return vs noise level", return_vs_noise(done, env_id)
        yield "final_returns.png", "Final return per teacher", final_returns_by_teacher(done, teachers)
    if curves[RETURN].notna().any():
        teacher_of = dict(zip(done["number"], done["teacher"]))
        with_teacher = curves.assign(teacher=[teacher_of[n] for n in curves["number"]])
        yield ("return_by_teacher.png", "Episode return over training, per teacher",
               return_by_teacher(with_teacher[with_teacher[RETURN].notna()], dict(zip(done["teacher"], done["family"]))))


def search_figures(trials: pd.DataFrame, best_curves: pd.DataFrame) -> Figures:
    """A search's: its history, and the curves of its best trials."""
    if trials["value"].notna().any():
        yield "search_history.png", "Search history", search_history(trials[trials["value"].notna()])
    title = "Episode return over training, best 5 trials"
    yield ("return_curves.png", title,
           curve_panels(best_curves, [(RETURN, "episode return (true)")], hue="trial", per_run=True, title=title))


def progress_figures(curves: pd.DataFrame, running: pd.DataFrame, progress: pd.DataFrame, finals: pd.DataFrame,
                     key: str, order: list[str]) -> Figures:
    """Every grid's: progress per cell group against agent steps and labels, reward collected, final metrics
    against the budget, diagnostics, the running trials so far, and the performance profile of the final
    metric ``key`` (two or more groups). ``progress``: bench.report_tables.progress_table; ``finals``: its rows
    per trial (final_values)."""
    yield ("progress_curves.png", "Progress over training, per cell group",
           curve_panels(curves, PROGRESS_PANELS, hue_order=order, title="Progress over training"))
    yield ("cumulative_reward.png", "True reward and gains collected during training",
           curve_panels(curves, CUMULATIVE_PANELS, hue_order=order,
                        title="Reward collected during training (run-long sums over all envs)"))
    prefs = curves[[presets.uses_labels(m) for m in curves["method"]]]
    yield ("progress_vs_labels.png", "Progress against labels answered",
           curve_panels(prefs, PROGRESS_PANELS, x=LABELS, xlabel="labels answered", hue_order=order, per_run=True,
                        title="Progress against labels answered (preference runs)"))
    if progress.loc[~progress["baseline"].astype(bool), "budget"].nunique() > 1:
        yield "final_vs_budget.png", "Final metrics per label budget", final_vs_budget(progress, dict(FINAL_METRICS))
    yield ("diagnostics.png", "Training diagnostics (PPO and reward model)",
           curve_panels(curves, DIAGNOSTIC_PANELS, hue_order=order, title="Training diagnostics"))
    yield ("running_trials.png", "Unfinished cells so far (partial; not in the tables)",
           curve_panels(running, PROGRESS_PANELS, hue="cell", per_run=True,
                        title="Unfinished cells so far (not in the tables)"))
    if finals["group"].nunique() >= 2 and key in finals:
        label = dict(FINAL_METRICS)[key]
        yield ("performance_profile.png", f"Performance profile: fraction of runs above τ on {label}",
               performance_profile(finals, key, label, order))

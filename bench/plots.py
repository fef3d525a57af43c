"""Seaborn figures for a trial (logged to its MLflow run) and for a sweep (bench.report)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

RETURN = "charts/episodic_return"
LABELS = "labels/answered"

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
        sns.lineplot(data=part, x="env_steps", y="return", hue="budget_label", units=None, estimator="mean",
                     errorbar=("pi", 100), hue_order=[h for h in hue_order if h in set(part["budget_label"])],
                     palette=palette, ax=ax)
        ax.set_title(method)
        ax.set_xlabel("env steps")
        ax.set_ylabel("episode return (true)")
        if ax.get_legend() is not None:
            ax.get_legend().set_title("labels")
    fig.suptitle("Episode return over training\n(line: mean over seeds; shaded: min to max over seeds)", fontsize=11)
    return fig


def labels_over_training(curves: pd.DataFrame):
    """Labels answered over training: one panel per method, one line per budget."""
    sns.set_theme(style="whitegrid", context="notebook")
    part = curves[curves["labels"].notna()]
    methods = list(dict.fromkeys(part["method"]))
    fig, axes = plt.subplots(1, max(1, len(methods)), figsize=(max(7.0, 5.5 * len(methods)), 4.2), squeeze=False,
                             sharey=True, constrained_layout=True)
    for ax, method in zip(axes.flat, methods):
        sub = part[part["method"] == method]
        order = list(dict.fromkeys(sub.sort_values("budget")["budget_label"]))
        sns.lineplot(data=sub, x="env_steps", y="labels", hue="budget_label", hue_order=order,
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


def save(fig, path) -> None:
    fig.savefig(path, dpi=120)
    plt.close(fig)

"""python -m bench.report SWEEP_DIR [--out results/NAME]: a sweep -> tables, plots, README.

Reads the Optuna study (SWEEP_DIR/sweep.json says where it is; by default SWEEP_DIR/optuna.db)
and each trial's learning curve (SWEEP_DIR/trials/<key>/metrics.csv, or the MLflow run's
metric history when the run directory is on another machine), and writes to --out
(default results/<study>):

    results.csv / results.md      grid sweeps: per budget and method, over seeds: mean, IQM and
                                  percentile-bootstrap 95% CIs (bench.stats) of the final return;
                                  results.md adds the progress and P(X > Y) tables below;
                                  search sweeps: trials
    progress.csv                  per cell group and final metric (return, and the rates gained /
                                  lost per 1k agent steps and progress per agent step over the last
                                  10% of training): mean, IQM, CIs, min, max over seeds
    improvement.csv               P(X > Y) (probability of improvement, as in rliable) on the main
                                  progress metric for every pair of cell groups, with bootstrap CIs
    trials.csv                    one row per trial (state, value, parameters, MLflow run id)
    progress_curves.png           return and the progress rates over agent steps, one line per group
    progress_vs_labels.png        the same against labels answered (preference runs)
    cumulative_reward.png         true reward and gains collected during training (run-long sums)
    final_vs_budget.png           final metrics against the label budget, with CIs
    performance_profile.png       rliable's performance profile of the main progress metric (two or
                                  more cell groups): per group, the fraction of its runs whose final
                                  value exceeds tau, against tau, with a bootstrap 95% band
    diagnostics.png               PPO and reward-model health (KL, clip fraction, explained variance,
                                  entropy, reward validation accuracy, equal share)
    running_trials.png            a sweep in progress: the running trials' curves so far
    return_by_budget.png          episode return over training, one line per budget, seeds shaded
    return_by_method.png          the ablations side by side: one panel per budget, one line per
                                  method (two or more label-using methods)
    labels_over_training.png      labels answered over training
    final_returns.png             final return per budget and method (grid) / search_history.png
    README.md                     the commands, date, machine, package versions, env settings

A sweep still in progress is reported from its finished trials; results.md and the README say
which cells are running (and how far), not started or failed.

A grid with a teacher axis (``bench.sweep --teachers``, the ``noise`` preset) is reported per
teacher instead: results.csv/.md per teacher (noise family and level, mean, IQM, bootstrap CIs,
the fraction of labels answered "equal"/"incomparable" and the measured label error against the
rational teacher, read from each trial's label store) next to the true-reward baseline;
return_vs_noise.png (final return against the noise level of each family), final_returns.png
(per teacher) and return_by_teacher.png (curves), besides the progress tables and plots. Text in
OUT/interpretation.md, if present, is kept as the README's "Interpretation" section.

Exit status: 0 written, 2 bad input (no sweep there, unknown study, unreachable storage).
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import math
import shlex
import sqlite3
import sys
from pathlib import Path

import numpy as np
import optuna
import pandas as pd

from rlhp_core.cli import ArgumentParser
from rlhp_core.label_store import LabelStore, LabelStoreError, read_meta
from rlhp_core.paths import check_writable_dir
from rlhp_core.segments import ANSWERS

from . import stats
from .presets import METHOD_NAMES, METHODS
from .provenance import machine, versions
from .storage import StorageError, TrackingError, check_tracking_uri, mask_url, normalize_url, open_storage

RETURN, LABELS = "charts/episodic_return", "labels/answered"

RATE_METRICS = (
    ("charts/gained_per_1k_steps", "gained per 1k agent steps (Enduro: cars passed)"),
    ("charts/progress_per_step", "progress per agent step (Enduro: distance, a speed)"),
    ("charts/lost_per_1k_steps", "lost per 1k agent steps (Enduro: times passed back)"),
)
"""Progress rates of each log window (rlhp_core.episode_stats): logged in every row, unlike
per-episode values. The first is the main progress metric (the pairwise table compares it)."""
FINAL_METRICS = (("value", "final return (mean of the last 10 episodes)"), *RATE_METRICS)
"""What the progress table summarizes per trial: ``value`` is the trial's objective (final return)."""
PROGRESS_PANELS = ((RETURN, "episode return (true)"), *RATE_METRICS)
CUMULATIVE_PANELS = (("charts/cumulative_true_reward", "true reward collected so far (all envs)"),
                     ("charts/cumulative_gained", "gained so far, all envs (Enduro: cars passed)"))
DIAGNOSTIC_PANELS = (("losses/approx_kl", "approx KL (policy update)"), ("losses/clipfrac", "clip fraction"),
                     ("losses/explained_variance", "explained variance (value function)"),
                     ("losses/entropy", "policy entropy"),
                     ("reward/val_accuracy", "reward model: validation accuracy (decisive pairs)"),
                     ("labels/equal_share", "share of labels answered 'equal'"))
CURVE_KEYS = tuple(dict.fromkeys([LABELS, *(k for k, _ in PROGRESS_PANELS + CUMULATIVE_PANELS + DIAGNOSTIC_PANELS)]))
"""The metrics.csv columns the report reads."""
FINAL_FRACTION = 0.1
"""A rate's final value: its mean over the log rows of the last this fraction of a trial's agent steps."""


class UsageError(Exception):
    pass


# -- loading -------------------------------------------------------------------------------------
def load_study(sweep_dir: Path, storage: str | None, study_name: str | None) -> tuple[optuna.Study, dict]:
    info: dict = {}
    info_path = sweep_dir / "sweep.json"
    if info_path.is_file():
        try:
            info = json.loads(info_path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise UsageError(f"SWEEP_DIR {str(sweep_dir)!r}: {info_path} is not a sweep's sweep.json "
                             f"({exc})") from None
        if not isinstance(info, dict):
            raise UsageError(f"SWEEP_DIR {str(sweep_dir)!r}: {info_path} is not a sweep's sweep.json (a JSON "
                             f"{type(info).__name__}, not an object)")
    elif not sweep_dir.is_dir():
        raise UsageError(f"SWEEP_DIR {str(sweep_dir)!r}: not a folder; expected a sweep's folder (sweeps/STUDY)")
    given = storage is not None
    if storage is None:
        storage = info.get("storage")
        if storage is None:
            db = sweep_dir / "optuna.db"
            if not db.is_file():
                raise UsageError(f"SWEEP_DIR {str(sweep_dir)!r}: holds no sweep.json and no optuna.db; pass the "
                                 f"sweep's folder (sweeps/STUDY) or --storage URL --study NAME")
            storage = f"sqlite:///{db.resolve()}"
        elif "***" in storage:
            raise UsageError(f"the sweep's storage {storage} needs its password: pass --storage URL")
    try:
        rdb = open_storage(storage, heartbeat_interval=60, grace_period=120, create=False)
    except StorageError as exc:
        raise UsageError(f"--storage: {exc}" if given else str(exc)) from None
    names = [s.study_name for s in optuna.get_all_study_summaries(rdb)]
    name = study_name or info.get("study")
    if name is None:
        if len(names) != 1:
            raise UsageError(f"{mask_url(storage)} holds studies {names}; choose one with --study")
        name = names[0]
    if name not in names:
        flag = "--study " if study_name else ""
        raise UsageError(f"{flag}study {name!r} not found in {mask_url(storage)}; studies there: {names}")
    study = optuna.load_study(study_name=name, storage=rdb)
    info.setdefault("storage", mask_url(storage))
    info.setdefault("study", name)
    return study, info


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    rows = []
    for t in study.get_trials(deepcopy=False):
        ua = t.user_attrs
        method = t.params.get("method", "rlhp")
        budget = int(t.params.get("label_budget", ua.get("label_budget", 0)) or 0)
        rows.append({
            "number": t.number, "state": t.state.name, "value": t.value, "method": method, "budget": budget,
            "seed": t.params.get("seed", 0), "cell": ua.get("cell", ""), "run_key": ua.get("run_key", ""),
            "labels": ua.get("labels"), "env_steps": ua.get("env_steps"), "sps": ua.get("sps"),
            "wall_time_s": ua.get("wall_time_s"), "mlflow_run_id": ua.get("mlflow_run_id", ""),
            "worker": ua.get("worker", ""), "retry_of": t.system_attrs.get("failed_trial"),
            "teacher": ua.get("teacher", ""),
            **{f"param.{k}": v for k, v in t.params.items() if k not in ("method", "label_budget", "seed")},
        })
    df = pd.DataFrame(rows)
    if len(df):
        df["budget_label"] = [_budget_label(m, b) for m, b in zip(df["method"], df["budget"])]
        df["group"] = [_group_label(m, b, t) for m, b, t in zip(df["method"], df["budget_label"], df["teacher"])]
    return df


def _uses_labels(method: str) -> bool:
    return not (method in METHODS and not METHODS[method].uses_labels)


def _budget_label(method: str, budget: int) -> str:
    return f"{budget:,}" if _uses_labels(method) else "true reward"


def _group_label(method: str, budget_label: str, teacher: str) -> str:
    """A cell group's name in tables and legends (method x budget x teacher; seeds are what a group
    aggregates). The baseline has no budget and no teacher: 'true reward'."""
    if not _uses_labels(method):
        return budget_label
    return " ".join(p for p in (method, budget_label, teacher) if p)


def _curve_from_csv(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError):  # a running trial's file may be empty or half written
        return None
    if "env_steps" not in df:
        return None
    return df.reindex(columns=["env_steps", *CURVE_KEYS])


def _history(client, run_id: str, key: str) -> dict[int, float]:
    """One metric's MLflow history by step; a resumed run may hold a step twice: the latest wins."""
    return {m.step: m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.timestamp)}


def _curve_from_mlflow(client, run_id: str) -> pd.DataFrame | None:
    if client is None or not run_id:
        return None
    try:
        cols = {key: _history(client, run_id, key) for key in CURVE_KEYS}
    except Exception:
        return None
    steps = sorted(set().union(*cols.values()))
    if not steps:
        return None
    return pd.DataFrame({"env_steps": steps, **{k: [c.get(s) for s in steps] for k, c in cols.items()}})


CURVE_INFO = ["number", "method", "budget", "seed", "budget_label", "group", "cell", "state", "trial"]
"""Columns curves_frame adds to each trial's metrics."""


def curves_frame(trials: pd.DataFrame, sweep_dir: Path, client) -> tuple[pd.DataFrame, int]:
    """Learning curves of the given trials, long format: metrics.csv's columns (CURVE_KEYS) and
    CURVE_INFO. Returns (curves, trials without a curve)."""
    parts, missing = [], 0
    for row in trials.itertuples(index=False):
        curve = _curve_from_csv(sweep_dir / "trials" / str(row.run_key) / "metrics.csv") if row.run_key else None
        if curve is None:
            curve = _curve_from_mlflow(client, row.mlflow_run_id)
        if curve is None or not len(curve):
            missing += 1
            continue
        parts.append(curve.assign(number=row.number, method=row.method, budget=row.budget, seed=row.seed,
                                  budget_label=row.budget_label, group=row.group, cell=row.cell or row.run_key,
                                  state=row.state, trial=f"trial {row.number}"))
    if not parts:
        return pd.DataFrame(columns=["env_steps", *CURVE_KEYS, *CURVE_INFO]), missing
    out = pd.concat(parts, ignore_index=True)
    for col in ("env_steps", *CURVE_KEYS):
        out[col] = pd.to_numeric(out[col], errors="coerce")
    return out, missing


# -- tables ----------------------------------------------------------------------------------------
def grid_table(trials: pd.DataFrame) -> pd.DataFrame:
    done = trials[trials["state"] == "COMPLETE"]
    rows = []
    for (method, budget), g in done.groupby(["method", "budget"], sort=False):
        s = stats.summarize(g["value"].to_numpy(dtype=float))
        rows.append({"method": method, "budget": int(budget), "budget_label": g["budget_label"].iloc[0],
                     "group": g["group"].iloc[0], **s,
                     "labels_used": float(pd.to_numeric(g["labels"], errors="coerce").mean()),
                     "env_steps": float(pd.to_numeric(g["env_steps"], errors="coerce").mean())})
    table = pd.DataFrame(rows)
    if len(table):
        order = {m: i for i, m in enumerate(METHOD_NAMES)}
        table = table.sort_values(["budget", "method"], key=lambda c: c.map(order) if c.name == "method" else c)
        table = table.reset_index(drop=True)
    return table


def _fmt(x, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return str(x)


def _digits(x: float) -> int:
    """Decimals that show about three significant digits of x (1 to 6): progress per agent step is
    a few hundredths, cars passed per 1k steps tens, returns hundreds."""
    if not math.isfinite(x) or x == 0:
        return 1
    return int(min(6, max(1, 2 - math.floor(math.log10(abs(x))))))


TWO_SEEDS = "⚠ 2 seeds: min–max, not a 95% CI"
"""Next to an interval over two seeds: the percentile bootstrap of two values spans exactly them."""


def _interval(m: float, lo: float, hi: float, n: int, digits: int = 1, two_seeds: str = TWO_SEEDS) -> str:
    """'mean [low, high]', with a warning where too few seeds make the interval no CI."""
    if not n or not math.isfinite(m):
        return "–"
    if n == 1:
        return f"{_fmt(m, digits)} (1 seed: no interval)"
    text = f"{_fmt(m, digits)} [{_fmt(lo, digits)}, {_fmt(hi, digits)}]"
    return f"{text} {two_seeds}" if n == 2 else text


def markdown_table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v) if not isinstance(v, str) else v for v in row) + " |")
    return "\n".join(lines)


def _stat_columns(table: pd.DataFrame, digits: list[int] | None = None) -> dict[str, list[str]]:
    """Mean and IQM with their CIs (and the few-seeds warning), min and max, for a stats.summarize table."""
    digits = digits or [1] * len(table)
    cols = {name: [_interval(m, lo, hi, n, d) for m, lo, hi, n, d in
                   zip(table[s], table[f"{s}_ci_low"], table[f"{s}_ci_high"], table["n"], digits)]
            for s, name in (("mean", "mean [95% CI]"), ("iqm", "IQM [95% CI]"))}
    cols.update({s: [_fmt(v, d) for v, d in zip(table[s], digits)] for s in ("min", "max")})
    return cols


def _summary_columns(table: pd.DataFrame) -> dict[str, list[str]]:
    """The columns every results table shares: mean and IQM with their CIs, min, max, labels."""
    return {**_stat_columns(table), "labels used": [_fmt(v, 0) for v in table["labels_used"]]}


def grid_markdown(table: pd.DataFrame) -> str:
    view = pd.DataFrame({
        "budget": table["budget_label"], "method": table["method"], "seeds": table["n"].astype(str),
        **_summary_columns(table),
        "env steps": [_fmt(v, 0) for v in table["env_steps"]],
    })
    return markdown_table(view)


# -- progress metrics and pairwise comparisons (every grid) ------------------------------------------------
def final_rates(curves: pd.DataFrame) -> pd.DataFrame:
    """Per trial (index: trial number): each rate's mean over the log rows at or after
    (1 - FINAL_FRACTION) of the trial's last logged agent step, the last row always included.

    Rates rather than per-episode values: they are in every row, while Enduro's 3,300+-step episodes
    leave per-episode values in few rows, so 'the last 10%' could hold one episode or none.
    """
    keys = [k for k, _ in RATE_METRICS]
    if not len(curves):
        return pd.DataFrame(columns=keys, index=pd.Index([], name="number"))
    last = curves.groupby("number")["env_steps"].transform("max")
    tail = curves[curves["env_steps"] >= (1 - FINAL_FRACTION) * last]
    return tail.groupby("number")[keys].mean()


def final_values(done: pd.DataFrame, curves: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """One row per finished trial, groups in table order: its trial columns and final rates."""
    finals = done.join(final_rates(curves), on="number")
    rank = {g: i for i, g in enumerate(order)}
    return finals.iloc[np.argsort([rank.get(g, len(rank)) for g in finals["group"]], kind="stable")]


def progress_table(finals: pd.DataFrame) -> pd.DataFrame:
    """Per cell group and final metric (FINAL_METRICS), over the group's finished seeds: n, mean, IQM,
    their bootstrap CIs, std, min, max. ``series`` names the group without its budget (a line of
    the final-vs-budget plot)."""
    rows = []
    for group, g in finals.groupby("group", sort=False):
        first = g.iloc[0]
        series = " ".join(p for p in (first["method"], first["teacher"]) if p)
        for key, label in FINAL_METRICS:
            if key in g and g[key].notna().any():
                rows.append({"group": group, "method": first["method"], "budget": int(first["budget"]),
                             "teacher": first["teacher"], "baseline": not _uses_labels(first["method"]),
                             "series": series, "metric": key, "label": label,
                             **stats.summarize(g[key].to_numpy(dtype=float))})
    columns = ["group", "method", "budget", "teacher", "baseline", "series", "metric", "label", *stats.summarize([])]
    return pd.DataFrame(rows, columns=columns)


def progress_markdown(table: pd.DataFrame) -> str:
    digits = [_digits(max(abs(m), abs(hi))) for m, hi in zip(table["mean"], table["max"])]
    view = pd.DataFrame({"group": table["group"], "metric": table["label"], "seeds": table["n"].astype(str),
                         **_stat_columns(table, digits)})
    return markdown_table(view)


def main_metric(finals: pd.DataFrame) -> str:
    """What the pairwise table compares: gained per 1k agent steps (Enduro: cars passed, where the
    score is floored at 0) where the trials logged it and it varies, else the final return (on an env
    whose rewards are never positive, such as Pendulum, every trial gains 0 and would tie)."""
    key = RATE_METRICS[0][0]
    logged = finals[key].dropna() if key in finals else pd.Series(dtype=float)
    return key if logged.nunique() > 1 else "value"


def improvement_table(finals: pd.DataFrame, key: str) -> pd.DataFrame:
    """P(X > Y) on one final metric for every pair of cell groups, X before Y in table order
    (P(Y > X) = 1 - P(X > Y))."""
    by = {g: part[key].to_numpy(dtype=float) for g, part in finals.groupby("group", sort=False)}
    rows = [{"X": a, "Y": b, "metric": key, **stats.probability_of_improvement(by[a], by[b])}
            for a, b in itertools.combinations(by, 2)]
    return pd.DataFrame(rows, columns=["X", "Y", "metric", "n_x", "n_y", "p", "p_ci_low", "p_ci_high"])


def improvement_markdown(table: pd.DataFrame) -> str:
    view = pd.DataFrame({
        "X": table["X"], "Y": table["Y"], "seeds (X, Y)": [f"{a}, {b}" for a, b in zip(table["n_x"], table["n_y"])],
        "P(X > Y) [95% CI]": [_interval(p, lo, hi, min(a, b), 2, "⚠ 2 seeds: not a 95% CI") for p, lo, hi, a, b in
                              zip(table["p"], table["p_ci_low"], table["p_ci_high"], table["n_x"], table["n_y"])],
    })
    return markdown_table(view)


# -- a sweep in progress ------------------------------------------------------------------------------
STATE_RANK = {"COMPLETE": 0, "RUNNING": 1, "WAITING": 2, "PRUNED": 3, "FAIL": 4}
"""Which of a cell's trials speaks for it: a failed trial that was retried and finished is finished."""


def cell_states(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per grid cell: its best-ranked trial (STATE_RANK; the latest of equals)."""
    cells = trials[trials["cell"] != ""]
    cells = cells.assign(rank=cells["state"].map(STATE_RANK).fillna(len(STATE_RANK)))
    return cells.sort_values(["rank", "number"], ascending=[True, False]).drop_duplicates("cell").sort_values("number")


def sweep_progress(trials: pd.DataFrame, running: pd.DataFrame, total_steps: int | None) -> list[str]:
    """Markdown lines naming the cells not finished (running: how far), or [] when every cell is."""
    cells = cell_states(trials)
    done = int((cells["state"] == "COMPLETE").sum())
    if done == len(cells):
        return []
    reached = running.groupby("number")["env_steps"].max().to_dict() if len(running) else {}
    of = f" of {total_steps:,}" if total_steps else ""

    def text(row) -> str:
        if row.state != "RUNNING":
            return f"`{row.cell}`"
        steps = reached.get(row.number)
        return f"`{row.cell}` ({'no log row yet' if steps is None else f'{int(steps):,}{of} agent steps'})"

    drawn = " Running cells' curves so far are in `running_trials.png`." if reached else ""
    lines = [f"**{done} of {len(cells)} cells finished.** Tables and plots use the finished cells only (a group's "
             f"`seeds` counts them).{drawn}", ""]
    for state, title in (("RUNNING", "running"), ("WAITING", "not started"), ("PRUNED", "pruned"),
                         ("FAIL", "failed (the next `bench.sweep` run retries them)")):
        part = cells[cells["state"] == state]
        if len(part):
            lines.append(f"- {title}: " + ", ".join(text(r) for r in part.itertuples(index=False)))
    return lines + [""]


# -- teacher axis (the noise-robustness benchmark) -------------------------------------------------------
FAMILY_ORDER = ("true reward", "rational", "mistake", "stoc", "skip", "equal", "myopic", "combined", "?")
FAMILY_LEVEL = {"mistake": "eps_mistake", "stoc": "beta", "skip": "skip_threshold", "equal": "equal_threshold",
                "myopic": "gamma", "progress": "progress_margin", "tie": "tie"}
"""The knob that sets each family's noise level (oracles.teacher.TeacherParams)."""


def teacher_family(spec: str, env_id: str, segment_length: int = 25) -> tuple[str, float]:
    """(family, level) of a teacher spec: the one knob that departs from the rational teacher, and its value.

    Several departing knobs: ("combined", nan); a spec that does not build here: ("?", nan).
    """
    try:
        import numpy as np

        from oracles.teacher import TeacherParams, teacher_for_env

        params = teacher_for_env(spec, np.random.default_rng(0), env_id=env_id, segment_length=segment_length).params
    except Exception:
        return "?", math.nan
    base = TeacherParams(episode_end_penalty=params.episode_end_penalty)
    changed = [k for k in FAMILY_LEVEL.values() if getattr(params, k) != getattr(base, k)]
    if not changed:
        return "rational", math.nan
    if len(changed) > 1:
        return "combined", math.nan
    family = {v: k for k, v in FAMILY_LEVEL.items()}[changed[0]]
    return family, float(getattr(params, changed[0]))


def _open_store(path: Path) -> LabelStore | None:
    """A trial's label store, or None where there is none. read_meta looks first, read-only: opening
    a LabelStore on any other SQLite file would add the store's tables to it."""
    try:
        read_meta(path)
        return LabelStore(path)
    except (LabelStoreError, OSError, sqlite3.Error):
        return None


def _label_error(store: LabelStore) -> float:
    """Over the store's current left/right answers: the probability that the rational teacher would
    have answered the other way (oracles.agreement, exact)."""
    try:
        from oracles.agreement import agreement

        table = agreement(store, "rational")
        rows = table.loc[[a for a in ("left", "right") if a in table.index]]
        rows = rows[rows["n"] > 0]
        return float(((1.0 - rows["agree"]) * rows["n"]).sum() / rows["n"].sum())
    except Exception:
        return math.nan


def label_stats(store_path: Path) -> dict[str, float]:
    """Of a trial's current answers: the fractions 'equal' and 'incomparable', and the label error.

    label_error: the noise the teacher actually injected on the queries the learner asked
    (_label_error). All NaN where the store is missing or not a label store.
    """
    out = {"answers": math.nan, "frac_equal": math.nan, "frac_incomparable": math.nan, "label_error": math.nan}
    store = _open_store(store_path)
    if store is None:
        return out
    try:
        counts = store.counts()
        n = sum(counts[a] for a in ANSWERS)
        if n:
            out.update(answers=float(n), frac_equal=counts["equal"] / n, frac_incomparable=counts["incomparable"] / n)
        if counts["left"] or counts["right"]:
            out["label_error"] = _label_error(store)
    finally:
        store.close()
    return out


def teacher_trials(trials: pd.DataFrame, sweep_dir: Path, env_id: str, segment_length: int = 25) -> pd.DataFrame:
    """Complete trials with their teacher's family and level and their label statistics."""
    done = trials[trials["state"] == "COMPLETE"].copy()
    fam = {t: teacher_family(t, env_id, segment_length) for t in set(done["teacher"]) if t}
    baseline = [m in METHODS and not METHODS[m].uses_labels for m in done["method"]]
    done["family"] = ["true reward" if b else fam.get(t, ("?", math.nan))[0] for b, t in zip(baseline, done["teacher"])]
    done["level"] = [math.nan if b else fam.get(t, ("?", math.nan))[1] for b, t in zip(baseline, done["teacher"])]
    done["teacher"] = ["true reward" if b else t for b, t in zip(baseline, done["teacher"])]
    st = [label_stats(sweep_dir / "trials" / str(k) / "labels.sqlite") if k and not b else label_stats(Path("-"))
          for k, b in zip(done["run_key"], baseline)]
    for col in ("frac_equal", "frac_incomparable", "label_error"):
        done[col] = [x[col] for x in st]
    return done


def _teacher_sort_key(family: str, level: float) -> tuple:
    rank = FAMILY_ORDER.index(family) if family in FAMILY_ORDER else len(FAMILY_ORDER)
    lv = 0.0 if not math.isfinite(level) else level
    # noise grows: eps up, beta down, skip threshold up, equal threshold up, gamma down
    return rank, (-lv if family in ("stoc", "myopic") else lv)


def teacher_table(done: pd.DataFrame) -> pd.DataFrame:
    """Per method, teacher and budget, over seeds: mean, IQM, CIs, label use and label statistics."""
    rows = []
    for (method, teacher, budget), g in done.groupby(["method", "teacher", "budget"], sort=False):
        s = stats.summarize(g["value"].to_numpy(dtype=float))
        mean_of = lambda c: float(pd.to_numeric(g[c], errors="coerce").mean())  # noqa: E731 (NaN-skipping)
        rows.append({"method": method, "teacher": teacher, "family": g["family"].iloc[0], "level": g["level"].iloc[0],
                     "group": g["group"].iloc[0],
                     "budget": int(budget), **s, "labels_used": mean_of("labels"),
                     "frac_equal": mean_of("frac_equal"), "frac_incomparable": mean_of("frac_incomparable"),
                     "label_error": mean_of("label_error"), "env_steps": mean_of("env_steps")})
    return _sorted_by_teacher(pd.DataFrame(rows))


def _sorted_by_teacher(df: pd.DataFrame) -> pd.DataFrame:
    """Rows by family (FAMILY_ORDER), then growing noise, method and budget: the tables' and plots' order."""
    if not len(df):
        return df
    keys = [(_teacher_sort_key(f, lv), m, b)
            for f, lv, m, b in zip(df["family"], df["level"], df["method"], df["budget"])]
    return df.iloc[sorted(range(len(df)), key=lambda i: keys[i])].reset_index(drop=True)


def _level_text(family: str, level: float) -> str:
    if not math.isfinite(level):
        return "–"
    return f"{FAMILY_LEVEL.get(family, 'level')}={level:g}"


def _pct(x) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{100 * x:.0f}%"


def teacher_markdown(table: pd.DataFrame) -> str:
    view = pd.DataFrame({
        "teacher": table["teacher"], "family": table["family"],
        "noise level": [_level_text(f, lv) for f, lv in zip(table["family"], table["level"])],
        "method": table["method"], "budget": [_fmt(b) if b else "–" for b in table["budget"]],
        "seeds": table["n"].astype(str),
        **_summary_columns(table),
        "equal": [_pct(v) for v in table["frac_equal"]],
        "incomparable": [_pct(v) for v in table["frac_incomparable"]],
        "label error vs rational": [_pct(v) for v in table["label_error"]],
    })
    return markdown_table(view)


def _teacher_thresholds(specs: list[str], env_id: str) -> list[str]:
    """One line per teacher: the knobs that depart from the rational teacher, as resolved for env_id."""
    try:
        import numpy as np

        from oracles.teacher import TeacherParams, teacher_for_env
    except ImportError:
        return []
    lines = []
    for spec in specs:
        try:
            t = teacher_for_env(spec, np.random.default_rng(0), env_id=env_id)
        except Exception as exc:
            lines.append(f"- `{spec}`: does not build for {env_id} ({exc})")
            continue
        base = TeacherParams(episode_end_penalty=t.params.episode_end_penalty)
        knobs = [f"{k}={getattr(t.params, k):g}" for k in FAMILY_LEVEL.values() if getattr(t.params, k) != getattr(base, k)]
        extra = ""
        if "typical_segment_return" in t.record:
            extra = f" (relative: typical segment return {t.record['typical_segment_return']:g})"
        lines.append(f"- `{spec}`: {', '.join(knobs) or 'the rational teacher'}{extra}; "
                     f"episode_end_penalty={t.params.episode_end_penalty:g}")
    return lines


def search_markdown(trials: pd.DataFrame, top: int = 10) -> str:
    done = trials[trials["state"] == "COMPLETE"].sort_values("value", ascending=False).head(top)
    params = [c for c in trials.columns if c.startswith("param.")]
    view = done[["number", "value", *params]].rename(columns={p: p[len("param."):] for p in params})
    view = view.assign(number=view["number"].astype(str),
                       **{c: [_short(v) for v in view[c]] for c in view.columns if c not in ("number",)})
    return markdown_table(view)


def _short(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else "–"
    return str(v)


# -- provenance ------------------------------------------------------------------------------------
def env_settings(study: optuna.Study) -> list[str]:
    """Distinct env settings (frameskip, sticky actions, ALE version...) the trials ran with."""
    seen: dict[str, set] = {}
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        for k, v in (t.user_attrs.get("env_info") or {}).items():
            seen.setdefault(k, set()).add(json.dumps(v, sort_keys=True, default=str))
    return [f"- {k}: {', '.join(sorted(v))}" for k, v in sorted(seen.items())]


def workers_used(study: optuna.Study) -> list[str]:
    hosts: dict[str, dict] = {}
    for t in study.get_trials(deepcopy=False):
        m = t.user_attrs.get("machine")
        if isinstance(m, dict):
            key = m.get("host", "?")
            hosts.setdefault(key, {**m, "trials": 0})["trials"] += 1
    return [f"- {h}: {m.get('nproc')} CPUs ({m.get('cpu', '?')}), {m.get('gpu') or 'no GPU'}; {m['trials']} trial(s)"
            for h, m in sorted(hosts.items())]


# -- the report --------------------------------------------------------------------------------------
def check_arguments(args: argparse.Namespace) -> None:
    """Refuse empty or malformed arguments before anything is read or written (UsageError naming the flag)."""
    for name in ("sweep_dir", "out", "storage", "study", "tracking_uri"):
        value = getattr(args, name)
        if value is not None and not value.strip():
            flag = "SWEEP_DIR" if name == "sweep_dir" else f"--{name.replace('_', '-')}"
            raise UsageError(f"{flag} '': empty; leave the flag out for its default")
    if args.tracking_uri is not None:
        try:
            check_tracking_uri(args.tracking_uri, reach=False, create=False)
        except TrackingError as exc:
            raise UsageError(f"--tracking-uri: {exc}") from None
    if args.out is not None:
        _check_out(Path(args.out))


def _check_out(out: Path) -> None:
    try:
        check_writable_dir(out)
    except ValueError as exc:
        raise UsageError(f"--out {str(out)!r}: {exc}") from None


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m bench.report",
                                description="Turn a finished sweep into tables (mean, IQM, bootstrap 95% CIs over "
                                            "seeds), seaborn plots and a README with provenance.")
    p.add_argument("sweep_dir", help="the sweep's results directory (sweeps/STUDY)")
    p.add_argument("--out", help="output directory (default: results/STUDY)")
    p.add_argument("--storage", help="Optuna storage URL (default: from SWEEP_DIR/sweep.json)")
    p.add_argument("--study", help="study name (default: from SWEEP_DIR/sweep.json)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI for curves whose run directory is not here "
                                          "(default: from SWEEP_DIR/sweep.json)")
    return p


def _mlflow_client(uri: str | None):
    if not uri or "***" in uri:
        return None
    try:
        from mlflow import MlflowClient

        from .tracking import quiet_mlflow_logs

        quiet_mlflow_logs()
        return MlflowClient(tracking_uri=normalize_url(uri))
    except Exception:
        return None


GRID_TEXT = (
    "Final return = the learner's mean true (unclipped) return over the last 10 episodes of each run. "
    "Per budget and method, over seeds: mean and IQM (interquartile mean: mean of the middle 50%; equals "
    "the mean below 4 seeds), each with a percentile-bootstrap 95% CI (10,000 resamples of the seeds; "
    "none with one seed). `labels used` = labels answered by the end. In the curves the line is the mean "
    "over seeds and the shading spans min to max.",
    "",
    "Initial labels: unless set explicitly, a preference run first asks min(500, ceil(25% of the budget)) "
    "comparisons on Atari (the paper: 500 of 5,500) and ceil(25% of the budget) elsewhere, about the "
    "untrained policy; `offline-labels` asks the whole budget up front.",
    "",
)
TEACHER_TEXT = (
    "Final return = the learner's mean true (unclipped) return over the last 10 episodes of each run. Per "
    "teacher, over seeds: mean and IQM (interquartile mean; equals the mean below 4 seeds), each with a "
    "percentile-bootstrap 95% CI (10,000 resamples of the seeds; none with one seed; with 2-3 seeds these "
    "intervals are little more than the seeds' range). `equal` / `incomparable`: fraction of the stored "
    "answers of that kind (incomparable answers use up budget but are never trained on). `label error vs "
    "rational`: over the stored left/right answers, the probability that the rational teacher would have "
    "answered the other way (`oracles.agreement`, exact), i.e. the noise the teacher actually put into the "
    "labels the learner asked for.",
    "",
    "Noise level per family: `mistake` eps_mistake (a label is flipped with this probability); `stoc` beta "
    "in P(left) = sigmoid(beta (R1 - R2)) (smaller = noisier); `skip` / `equal` their thresholds in "
    "segment-return units; `myopic` gamma (step t of H weighted gamma^(H-1-t)). See oracles/README.md.",
    "",
)
PROGRESS_TEXT = (
    "Progress metrics (on Enduro the score is floored at 0, so the return alone reads 0 for most runs): "
    "`gained per 1k agent steps` = 1,000 x the positive true reward per agent step, over all envs (Enduro: "
    "cars passed); `lost per 1k agent steps` the same for negative rewards (Enduro: times passed back); "
    "`progress per agent step` the env's progress measure per agent step (Enduro: odometer distance, a "
    "speed). An agent step is one step of one env (frameskip emulator frames); `env_steps` in metrics.csv "
    "counts them over all envs. **Final** value of a rate: the mean of the trial's per-window rates (one "
    "log row = one window of `log_every` agent steps) over its log rows at or after "
    f"{1 - FINAL_FRACTION:.0%} of its last logged agent step, the last row always included: the rate over the "
    f"last ~{FINAL_FRACTION:.0%} of training. Per cell group over "
    "its finished seeds: mean and IQM with percentile-bootstrap 95% CIs as for the return. ⚠ With 2 seeds "
    "the interval is [min, max] of the two numbers, not a 95% CI; with 1 seed there is none.",
    "",
    "P(X > Y), the probability of improvement (Agarwal et al. 2021, as in rliable): for a random finished "
    "seed of X and one of Y, the probability that X's final value is higher (ties count one half), with a "
    "95% CI from resampling X's and Y's seeds separately (10,000 times). P(Y > X) = 1 - P(X > Y).",
    "",
    "Performance profile (Agarwal et al. 2021, as in rliable), on the metric of the P(X > Y) table: for each "
    "cell group, the fraction of its finished runs whose final value is above τ, for every τ; the shaded band "
    "is a percentile-bootstrap 95% band from resampling the group's runs (10,000 times). A curve above another "
    "at every τ dominates it: whatever the bar, more of its runs clear it.",
    "",
    "Curves: per-episode values (the return) are drawn interpolated between the log rows where an episode "
    "ended, so that seeds line up; rates and run-long sums are in every row. The label plots draw one line "
    "per seed (seeds reach a label count at different steps).",
    "",
)


def _provenance_lines(study: optuna.Study, info: dict, kind: str, trials: pd.DataFrame, command: str) -> list[str]:
    """The README's head: what was swept, how (both commands), when, on which machines and packages."""
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    m = machine()
    ua = study.user_attrs
    settings = ua.get("sweep_settings", info.get("settings", {}))
    counts = trials["state"].value_counts().to_dict()
    lines = [
        f"# Sweep `{study.study_name}`",
        "",
        f"Preset `{ua.get('preset', info.get('preset', '?'))}` ({kind}): "
        + ", ".join(f"{k} {v}" for k, v in settings.items() if k not in ("kind", "preset")) + ".",
        "Trials: " + ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())) + ".",
        "",
        "## How this was made",
        "",
        "```",
        f"{ua.get('command', info.get('command', '?'))}    # the sweep (created {ua.get('created_at', '?')})",
        f"{command}    # this report",
        "```",
        "",
        f"- Report written: {now}",
        f"- Study storage: {info.get('storage')} (study `{study.study_name}`); MLflow: {info.get('tracking_uri', '?')}",
        f"- Report machine: {m['host']}, {m['nproc']} CPUs ({m['cpu']}), {m['memory']} memory, {m['os']}, "
        f"Python {m['python']}",
    ]
    hosts = workers_used(study)
    if hosts:
        lines += ["- Trials ran on:", *["  " + h for h in hosts]]
    lines += ["- Packages: " + ", ".join(f"{k} {v}" for k, v in versions().items())]
    env_lines = env_settings(study)
    if env_lines:
        lines += ["", "## Environment settings (as the trials recorded them)", "", *env_lines]
    return lines


def _results_text(kind: str, teacher_axis: bool, trials: pd.DataFrame, env_id: str) -> list[str]:
    """What the tables mean, before them."""
    if kind != "grid":
        return ["Best complete trials (objective: final return, the mean true return of the last 10 episodes):", ""]
    if not teacher_axis:
        return [*GRID_TEXT, *PROGRESS_TEXT]
    lines = [*TEACHER_TEXT, *PROGRESS_TEXT]
    thresholds = _teacher_thresholds(sorted(t for t in set(trials["teacher"]) if t), env_id)
    if thresholds:
        lines += ["Teachers as built for this env (oracles.teacher.teacher_for_env):", "", *thresholds, ""]
    return lines


def _readme(study: optuna.Study, info: dict, kind: str, trials: pd.DataFrame, command: str, results: list[str],
            missing: int, figs: _Figures, teacher_axis: bool) -> list[str]:
    """README.md's lines: provenance, ``results`` (what is unfinished, what the tables mean, the tables),
    the figures, and the interpretation kept from OUT/interpretation.md."""
    lines = [*_provenance_lines(study, info, kind, trials, command), "", "## Results", "", *results, ""]
    if missing:
        lines += [f"({missing} trial(s) had no learning curve here: their run directory is elsewhere and MLflow "
                  f"was not reachable.)", ""]
    for title, fname in figs.items:
        lines += [f"### {title}", "", f"![{title}]({fname})", ""]
    lines += ["Files: `results.csv` (the numbers behind the table), `trials.csv` (one row per trial, with its "
              "MLflow run id)" + (", `progress.csv` and `improvement.csv` (the progress and P(X > Y) tables)"
                                  if kind == "grid" else "") + ".", ""]
    notes = figs.out / "interpretation.md"
    if notes.is_file():
        lines += ["## Interpretation", "", notes.read_text().strip(), ""]
    elif teacher_axis:
        lines += ["## Interpretation", "", "(none yet: write it in `interpretation.md` next to this README; the "
                  "report keeps it here when it is regenerated)", ""]
    return lines


class _Figures:
    """The report's figures: saved to OUT as they are made, listed in order for the README."""

    def __init__(self, out: Path):
        self.out, self.items = out, []

    def add(self, fig, name: str, title: str) -> None:
        """Save ``fig`` as OUT/name under ``title``; None (nothing to draw) is skipped."""
        from . import plots

        if fig is not None:
            plots.save(fig, self.out / name)
            self.items.append((title, name))


def _teacher_results(trials, sweep_dir, env_id, client, figs: _Figures):
    """(table, markdown, finished trials, their curves, trials without a curve) of a teacher-axis grid."""
    from . import plots

    done = _sorted_by_teacher(teacher_trials(trials, sweep_dir, env_id))
    table = teacher_table(done)
    curves, missing = curves_frame(done, sweep_dir, client)
    if len(done):
        figs.add(plots.return_vs_noise(done, env_id), "return_vs_noise.png", "Final return vs noise level")
        figs.add(plots.final_returns_by_teacher(done, list(dict.fromkeys(table["teacher"]))), "final_returns.png",
                 "Final return per teacher")
    if curves[RETURN].notna().any():
        teacher_of = dict(zip(done["number"], done["teacher"]))
        with_teacher = curves.assign(teacher=[teacher_of[n] for n in curves["number"]])
        figs.add(plots.return_by_teacher(with_teacher[with_teacher[RETURN].notna()],
                                         dict(zip(done["teacher"], done["family"]))),
                 "return_by_teacher.png", "Episode return over training, per teacher")
    return table, teacher_markdown(table) if len(table) else "(no complete trials yet)", done, curves, missing


def _grid_results(trials, sweep_dir, client, figs: _Figures):
    """(table, markdown, finished trials, their curves, trials without a curve) of a grid."""
    from . import plots

    done = trials[trials["state"] == "COMPLETE"]
    table = grid_table(trials)
    curves, missing = curves_frame(done, sweep_dir, client)
    if curves[RETURN].notna().any():
        figs.add(plots.return_by_budget(curves[curves[RETURN].notna()]), "return_by_budget.png",
                 "Episode return over training, per label budget")
        by_method = plots.return_by_method(curves[curves[RETURN].notna()])
        if by_method is not None:
            figs.add(by_method, "return_by_method.png", "Ablations side by side, one panel per label budget")
    if curves[LABELS].notna().any():
        figs.add(plots.labels_over_training(curves), "labels_over_training.png", "Labels gathered over training")
    if len(done):
        figs.add(plots.final_returns(done), "final_returns.png", "Final return per budget and method")
    return table, grid_markdown(table) if len(table) else "(no complete trials yet)", done, curves, missing


def _search_results(trials, sweep_dir, client, figs: _Figures):
    """(table, markdown, trials without a curve) of a search: the best trials and their curves."""
    from . import plots

    table = trials[trials["state"] == "COMPLETE"].sort_values("value", ascending=False)
    curves, missing = curves_frame(table.head(5), sweep_dir, client)
    if trials["value"].notna().any():
        figs.add(plots.search_history(trials[trials["value"].notna()]), "search_history.png", "Search history")
    figs.add(plots.curve_panels(curves, [(RETURN, "episode return (true)")], hue="trial", per_run=True,
                                title="Episode return over training, best 5 trials"),
             "return_curves.png", "Episode return over training, best 5 trials")
    return table, search_markdown(trials) if len(table) else "(no complete trials yet)", missing


def _progress_figures(curves: pd.DataFrame, running: pd.DataFrame, progress: pd.DataFrame, order: list[str],
                      figs: _Figures) -> None:
    """Curves per cell group against agent steps and labels, reward collected, final vs budget,
    diagnostics, and the running trials so far."""
    from . import plots

    figs.add(plots.curve_panels(curves, PROGRESS_PANELS, hue_order=order, title="Progress over training"),
             "progress_curves.png", "Progress over training, per cell group")
    figs.add(plots.curve_panels(curves, CUMULATIVE_PANELS, hue_order=order,
                                title="Reward collected during training (run-long sums over all envs)"),
             "cumulative_reward.png", "True reward and gains collected during training")
    prefs = curves[[_uses_labels(m) for m in curves["method"]]]
    figs.add(plots.curve_panels(prefs, PROGRESS_PANELS, x=LABELS, xlabel="labels answered", hue_order=order,
                                per_run=True, title="Progress against labels answered (preference runs)"),
             "progress_vs_labels.png", "Progress against labels answered")
    if progress.loc[~progress["baseline"].astype(bool), "budget"].nunique() > 1:
        figs.add(plots.final_vs_budget(progress, dict(FINAL_METRICS)), "final_vs_budget.png",
                 "Final metrics per label budget")
    figs.add(plots.curve_panels(curves, DIAGNOSTIC_PANELS, hue_order=order, title="Training diagnostics"),
             "diagnostics.png", "Training diagnostics (PPO and reward model)")
    figs.add(plots.curve_panels(running, PROGRESS_PANELS, hue="cell", per_run=True,
                                title="Running trials so far (not in the tables)"),
             "running_trials.png", "Running trials so far (partial; not in the tables)")


def _profile_figure(finals: pd.DataFrame, key: str, order: list[str], figs: _Figures) -> None:
    """The performance profile of the main final metric, where there are groups to compare (two or more)."""
    from . import plots

    if finals["group"].nunique() >= 2 and key in finals:
        label = dict(FINAL_METRICS)[key]
        figs.add(plots.performance_profile(finals, key, label, order), "performance_profile.png",
                 f"Performance profile: fraction of runs above τ on {label}")


def _progress_results(done, curves, running, order, out: Path, figs: _Figures) -> str:
    """Write progress.csv and improvement.csv, draw the progress figures; returns their markdown."""
    finals = final_values(done, curves, order)
    progress = progress_table(finals)
    progress.to_csv(out / "progress.csv", index=False)
    key = main_metric(finals)
    pairs = improvement_table(finals, key)
    pairs.to_csv(out / "improvement.csv", index=False)
    _progress_figures(curves, running, progress, order, figs)
    _profile_figure(finals, key, order, figs)
    if not len(progress):
        return ""
    label = dict(FINAL_METRICS)[key]
    parts = [f"### Progress over the last {FINAL_FRACTION:.0%} of training", "", progress_markdown(progress), ""]
    if len(pairs):
        parts += [f"### P(X > Y): probability of improvement on {label}", "", improvement_markdown(pairs), ""]
    return "\n".join(parts)


def write_report(study: optuna.Study, info: dict, sweep_dir: Path, out: Path, command: str, client) -> list[Path]:
    trials = trials_frame(study)
    if not len(trials):
        raise UsageError(f"study {study.study_name!r} has no trials yet; run the sweep first")
    out.mkdir(parents=True, exist_ok=True)
    kind = info.get("kind") or ("grid" if "cell" in set().union(*(t.user_attrs for t in study.trials)) else "search")
    trials.drop(columns=["budget_label"]).to_csv(out / "trials.csv", index=False)
    figs = _Figures(out)
    settings = study.user_attrs.get("sweep_settings") or info.get("settings") or {}
    teacher_axis = kind == "grid" and bool(info.get("teachers") or (trials["teacher"] != "").any())
    written = [out / "trials.csv", out / "results.csv", out / "results.md"]
    status, body = [], []
    if kind == "grid":
        running, _ = curves_frame(trials[trials["state"] == "RUNNING"], sweep_dir, client)
        status = sweep_progress(trials, running, settings.get("env_steps"))
        if teacher_axis:
            table, main_md, done, curves, missing = _teacher_results(trials, sweep_dir, settings.get("env_id", ""),
                                                                     client, figs)
        else:
            table, main_md, done, curves, missing = _grid_results(trials, sweep_dir, client, figs)
        progress_md = _progress_results(done, curves, running, list(table.get("group", [])), out, figs)
        body += [main_md, "", progress_md]
        written += [out / "progress.csv", out / "improvement.csv"]
    else:
        table, main_md, missing = _search_results(trials, sweep_dir, client, figs)
        body.append(main_md)
    table.drop(columns=["budget_label"], errors="ignore").to_csv(out / "results.csv", index=False)
    tables = "\n".join(body).rstrip()
    (out / "results.md").write_text("\n".join([*status, tables]) + "\n")
    results = [*status, *_results_text(kind, teacher_axis, trials, settings.get("env_id", "")), tables]
    (out / "README.md").write_text("\n".join(_readme(study, info, kind, trials, command, results, missing, figs,
                                                     teacher_axis)))
    return written + [out / f for _, f in figs.items] + [out / "README.md"]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sweep_dir = Path(args.sweep_dir)
    try:
        check_arguments(args)
        study, info = load_study(sweep_dir, args.storage, args.study)
        out = Path(args.out) if args.out else Path("results") / study.study_name
        _check_out(out)
        client = _mlflow_client(args.tracking_uri or info.get("tracking_uri"))
        command = "python -m bench.report " + shlex.join(argv)
        written = write_report(study, info, sweep_dir, out, command, client)
    except UsageError as exc:
        print(f"python -m bench.report: error: {exc}", file=sys.stderr)
        return 2
    print(f"Report for study {study.study_name!r} written to {out}/:")
    for path in written:
        print(f"  {path.name}")
    print((out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())

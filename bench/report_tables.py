"""A sweep report's tables: per cell group over seeds (mean, IQM, bootstrap CIs), as CSV rows and markdown.

Reads bench.report_data's frames. Per grid: :func:`grid_table` (final return per budget and
method) or, on a teacher axis, :func:`teacher_table` (per teacher, with label statistics); every
grid: :func:`progress_table` (the final progress rates), :func:`improvement_table` (P(X > Y) for
every pair of groups), :func:`separation_table` (which pairs' CIs are disjoint) and
:func:`sweep_progress` (which cells are not finished yet); a search: :func:`search_markdown` (its best
trials). Each ``*_markdown`` renders its table for results.md.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd

from . import stats
from .metrics import FINAL_FRACTION, FINAL_METRICS, RATE_METRICS
from .presets import METHOD_NAMES
from .report_data import FAMILY_LEVEL, FAMILY_ORDER, uses_labels


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
                             "teacher": first["teacher"], "baseline": not uses_labels(first["method"]),
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


SEPARATION_MIN_SEEDS = 3
"""Seeds each side needs before its bootstrap interval counts as a 95% CI (with two it is [min, max])."""


def separation_table(progress: pd.DataFrame) -> pd.DataFrame:
    """Which pairs of cell groups the runs tell apart, per final metric: for every pair with at least
    SEPARATION_MIN_SEEDS finished seeds on both sides, whether the 95% bootstrap CIs of their means are
    disjoint (``verdict``: 'X > Y', 'Y > X', or 'overlap'); pairs with fewer seeds read 'too few seeds'.

    Disjoint CIs are the conservative reading (a difference can be real with overlapping intervals),
    which is what the Enduro comparison's done criterion asks for (issue 9)."""
    rows = []
    for key, part in progress.groupby("metric", sort=False):
        recs = list(part.itertuples(index=False))
        for a, b in itertools.combinations(recs, 2):
            if min(a.n, b.n) < SEPARATION_MIN_SEEDS:
                verdict = "too few seeds"
            elif a.mean_ci_low > b.mean_ci_high:
                verdict = "X > Y"
            elif b.mean_ci_low > a.mean_ci_high:
                verdict = "Y > X"
            else:
                verdict = "overlap"
            rows.append({"metric": key, "label": a.label, "X": a.group, "Y": b.group, "n_x": a.n, "n_y": b.n,
                         "x_mean": a.mean, "x_ci_low": a.mean_ci_low, "x_ci_high": a.mean_ci_high,
                         "y_mean": b.mean, "y_ci_low": b.mean_ci_low, "y_ci_high": b.mean_ci_high,
                         "verdict": verdict})
    columns = ["metric", "label", "X", "Y", "n_x", "n_y", "x_mean", "x_ci_low", "x_ci_high", "y_mean", "y_ci_low",
               "y_ci_high", "verdict"]
    return pd.DataFrame(rows, columns=columns)


def separation_markdown(table: pd.DataFrame) -> str:
    """One line per metric: the pairs whose CIs are disjoint, then those that overlap."""
    lines = []
    for label, part in table.groupby("label", sort=False):
        apart = part[part["verdict"].isin(["X > Y", "Y > X"])]
        said = []
        for r in apart.itertuples(index=False):
            hi, lo = ((r.X, r.x_mean, r.x_ci_low, r.x_ci_high), (r.Y, r.y_mean, r.y_ci_low, r.y_ci_high))
            if r.verdict == "Y > X":
                hi, lo = lo, hi
            d = _digits(max(abs(hi[1]), abs(lo[1]), 1e-12))
            said.append(f"{hi[0]} > {lo[0]} ({_fmt(hi[1], d)} [{_fmt(hi[2], d)}, {_fmt(hi[3], d)}] against "
                        f"{_fmt(lo[1], d)} [{_fmt(lo[2], d)}, {_fmt(lo[3], d)}])")
        overlap = [f"{r.X} / {r.Y}" for r in part.itertuples(index=False) if r.verdict == "overlap"]
        few = [f"{r.X} / {r.Y}" for r in part.itertuples(index=False) if r.verdict == "too few seeds"]
        text = f"- **{label}**: " + ("; ".join(said) if said else "no pair separates")
        if overlap:
            text += f". Overlapping: {', '.join(overlap)}"
        if few:
            text += f". Fewer than {SEPARATION_MIN_SEEDS} seeds: {', '.join(few)}"
        lines.append(text + ".")
    return "\n".join(lines)


# -- a sweep in progress ------------------------------------------------------------------------------
STATE_RANK = {"COMPLETE": 0, "RUNNING": 1, "WAITING": 2, "PRUNED": 3, "FAIL": 4}
"""Which of a cell's trials speaks for it: a failed trial that was retried and finished is finished."""


def cell_states(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per grid cell: its best-ranked trial (STATE_RANK; the latest of equals)."""
    cells = trials[trials["cell"] != ""]
    cells = cells.assign(rank=cells["state"].map(STATE_RANK).fillna(len(STATE_RANK)))
    return cells.sort_values(["rank", "number"], ascending=[True, False]).drop_duplicates("cell").sort_values("number")


def sweep_progress(trials: pd.DataFrame, running: pd.DataFrame, total_steps: int | None) -> list[str]:
    """Markdown lines naming the cells not finished (how far those with a run so far got), or []
    when every cell is. ``running``: the unfinished cells' curves (a cell waiting for its retry
    resumes the run directory it has)."""
    cells = cell_states(trials)
    done = int((cells["state"] == "COMPLETE").sum())
    if done == len(cells):
        return []
    reached = running.groupby("number")["env_steps"].max().to_dict() if len(running) else {}
    of = f" of {total_steps:,}" if total_steps else ""

    def text(row) -> str:
        steps = reached.get(row.number)
        if steps is not None:
            return f"`{row.cell}` ({int(steps):,}{of} agent steps so far)"
        return f"`{row.cell}` (no log row yet)" if row.state == "RUNNING" else f"`{row.cell}`"

    drawn = " Unfinished cells' curves so far are in `running_trials.png`." if reached else ""
    lines = [f"**{done} of {len(cells)} cells finished.** Tables and plots use the finished cells only (a group's "
             f"`seeds` counts them).{drawn}", ""]
    for state, title in (("RUNNING", "running"), ("WAITING", "not started"), ("PRUNED", "pruned"),
                         ("FAIL", "failed (the next `bench.sweep` run retries them)")):
        part = cells[cells["state"] == state]
        if len(part):
            lines.append(f"- {title}: " + ", ".join(text(r) for r in part.itertuples(index=False)))
    return lines + [""]


# -- teacher axis (the noise-robustness benchmark) ------------------------------------------------
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
    return sorted_by_teacher(pd.DataFrame(rows))


def sorted_by_teacher(df: pd.DataFrame) -> pd.DataFrame:
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


def teacher_thresholds(specs: list[str], env_id: str) -> list[str]:
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

"""python -m bench.report SWEEP_DIR [--out results/NAME]: a finished sweep -> tables, plots, README.

Reads the Optuna study (SWEEP_DIR/sweep.json says where it is; by default SWEEP_DIR/optuna.db)
and each trial's learning curve (SWEEP_DIR/trials/<key>/metrics.csv, or the MLflow run's
metric history when the run directory is on another machine), and writes to --out
(default results/<study>):

    results.csv / results.md      grid sweeps: per budget and method, over seeds: mean, IQM and
                                  percentile-bootstrap 95% CIs (bench.stats); search sweeps: trials
    trials.csv                    one row per trial (state, value, parameters, MLflow run id)
    return_by_budget.png          episode return over training, one line per budget, seeds shaded
    labels_over_training.png      labels answered over training
    final_returns.png             final return per budget and method (grid) / search_history.png
    README.md                     the commands, date, machine, package versions, env settings

A grid with a teacher axis (``bench.sweep --teachers``, the ``noise`` preset) is reported per
teacher instead: results.csv/.md per teacher (noise family and level, mean, IQM, bootstrap CIs,
the fraction of labels answered "equal"/"incomparable" and the measured label error against the
rational teacher, read from each trial's labels.sqlite) next to the true-reward baseline;
return_vs_noise.png (final return against the noise level of each family), final_returns.png
(per teacher) and return_by_teacher.png (curves). Text in OUT/interpretation.md, if present, is
kept as the README's "Interpretation" section.

Exit status: 0 written, 2 bad input (no sweep there, unknown study, unreachable storage).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import shlex
import sys
from pathlib import Path

import optuna
import pandas as pd

from rlhp_core.cli import ArgumentParser
from rlhp_core.paths import check_writable_dir

from . import stats
from .presets import METHOD_NAMES, METHODS
from .provenance import machine, versions
from .storage import StorageError, TrackingError, check_tracking_uri, mask_url, normalize_url, open_storage

RETURN, LABELS = "charts/episodic_return", "labels/answered"


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
            raise UsageError(f"SWEEP_DIR {str(sweep_dir)!r}: {info_path} is not a sweep's sweep.json ({exc})") from None
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
    return df


def _budget_label(method: str, budget: int) -> str:
    if method in METHODS and not METHODS[method].uses_labels:
        return "true reward"
    return f"{budget:,}"


def _curve_from_csv(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    df = pd.read_csv(path)
    if "env_steps" not in df:
        return None
    return pd.DataFrame({"env_steps": df["env_steps"], "return": df.get(RETURN), "labels": df.get(LABELS)})


def _curve_from_mlflow(client, run_id: str) -> pd.DataFrame | None:
    if client is None or not run_id:
        return None
    try:
        cols = {}
        for key, name in ((RETURN, "return"), (LABELS, "labels")):
            hist = client.get_metric_history(run_id, key)
            # a resumed run may hold a step twice: keep the latest value
            cols[name] = {m.step: m.value for m in sorted(hist, key=lambda m: m.timestamp)}
    except Exception:
        return None
    steps = sorted(set(cols["return"]) | set(cols["labels"]))
    if not steps:
        return None
    return pd.DataFrame({"env_steps": steps, "return": [cols["return"].get(s) for s in steps],
                         "labels": [cols["labels"].get(s) for s in steps]})


def curves_frame(trials: pd.DataFrame, sweep_dir: Path, client) -> tuple[pd.DataFrame, int]:
    """Learning curves of the given trials, long format. Returns (curves, trials without a curve)."""
    parts, missing = [], 0
    for row in trials.itertuples(index=False):
        curve = _curve_from_csv(sweep_dir / "trials" / str(row.run_key) / "metrics.csv") if row.run_key else None
        if curve is None:
            curve = _curve_from_mlflow(client, row.mlflow_run_id)
        if curve is None or not len(curve):
            missing += 1
            continue
        curve = curve.assign(number=row.number, method=row.method, budget=row.budget, seed=row.seed,
                             budget_label=row.budget_label, trial=f"trial {row.number}")
        parts.append(curve)
    if not parts:
        return pd.DataFrame(columns=["env_steps", "return", "labels", "number", "method", "budget", "seed",
                                     "budget_label", "trial"]), missing
    out = pd.concat(parts, ignore_index=True)
    out["return"] = pd.to_numeric(out["return"], errors="coerce")
    out["labels"] = pd.to_numeric(out["labels"], errors="coerce")
    return out, missing


# -- tables ----------------------------------------------------------------------------------------
def grid_table(trials: pd.DataFrame) -> pd.DataFrame:
    done = trials[trials["state"] == "COMPLETE"]
    rows = []
    for (method, budget), g in done.groupby(["method", "budget"], sort=False):
        s = stats.summarize(g["value"].to_numpy(dtype=float))
        rows.append({"method": method, "budget": int(budget), "budget_label": g["budget_label"].iloc[0], **s,
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


def markdown_table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v) if not isinstance(v, str) else v for v in row) + " |")
    return "\n".join(lines)


def _summary_columns(table: pd.DataFrame) -> dict[str, list[str]]:
    """The columns every results table shares: mean and IQM with their CIs, min, max, labels."""
    return {
        "mean [95% CI]": [f"{_fmt(m)} [{_fmt(lo)}, {_fmt(hi)}]" for m, lo, hi in
                          zip(table["mean"], table["mean_ci_low"], table["mean_ci_high"])],
        "IQM [95% CI]": [f"{_fmt(m)} [{_fmt(lo)}, {_fmt(hi)}]" for m, lo, hi in
                         zip(table["iqm"], table["iqm_ci_low"], table["iqm_ci_high"])],
        "min": [_fmt(v) for v in table["min"]], "max": [_fmt(v) for v in table["max"]],
        "labels used": [_fmt(v, 0) for v in table["labels_used"]],
    }


def grid_markdown(table: pd.DataFrame) -> str:
    view = pd.DataFrame({
        "budget": table["budget_label"], "method": table["method"], "seeds": table["n"].astype(str),
        **_summary_columns(table),
        "env steps": [_fmt(v, 0) for v in table["env_steps"]],
    })
    return markdown_table(view)


# -- teacher axis (the noise-robustness benchmark) -------------------------------------------------------
FAMILY_ORDER = ("true reward", "rational", "mistake", "stoc", "skip", "equal", "myopic", "combined", "?")
FAMILY_LEVEL = {"mistake": "eps_mistake", "stoc": "beta", "skip": "skip_threshold", "equal": "equal_threshold",
                "myopic": "gamma"}
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


def label_stats(store_path: Path) -> dict[str, float]:
    """Of a trial's current answers: the fractions 'equal' and 'incomparable', and the label error.

    label_error: over the stored left/right answers, the probability that the rational teacher would
    have answered the other way (oracles.agreement, exact), i.e. the noise the teacher actually
    injected on the queries the learner asked. NaN where the store is missing or not a label store.
    """
    import sqlite3

    out = {"answers": math.nan, "frac_equal": math.nan, "frac_incomparable": math.nan, "label_error": math.nan}
    if not store_path.is_file():
        return out
    try:
        con = sqlite3.connect(f"{store_path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            cols = {r[1] for r in con.execute("PRAGMA table_info(answers)")}
            where = " WHERE retracted_at IS NULL" if "retracted_at" in cols else ""
            counts = dict(con.execute(f"SELECT answer, COUNT(*) FROM answers{where} GROUP BY answer").fetchall())
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            is_store = {"meta", "queries"} <= tables and con.execute("SELECT COUNT(*) FROM meta").fetchone()[0] > 0
        finally:
            con.close()
    except sqlite3.Error:
        return out
    n = sum(counts.values())
    if n:
        out.update(answers=float(n), frac_equal=counts.get("equal", 0) / n,
                   frac_incomparable=counts.get("incomparable", 0) / n)
    if is_store and (counts.get("left") or counts.get("right")):
        try:
            from oracles.agreement import agreement

            table = agreement(store_path, "rational")
            rows = table.loc[[a for a in ("left", "right") if a in table.index]]
            rows = rows[rows["n"] > 0]
            out["label_error"] = float(((1.0 - rows["agree"]) * rows["n"]).sum() / rows["n"].sum())
        except Exception:
            pass
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
                     "budget": int(budget), **s, "labels_used": mean_of("labels"),
                     "frac_equal": mean_of("frac_equal"), "frac_incomparable": mean_of("frac_incomparable"),
                     "label_error": mean_of("label_error"), "env_steps": mean_of("env_steps")})
    table = pd.DataFrame(rows)
    if len(table):
        keys = [(_teacher_sort_key(f, lv), m, b) for f, lv, m, b in
                zip(table["family"], table["level"], table["method"], table["budget"])]
        table = table.iloc[sorted(range(len(table)), key=lambda i: keys[i])].reset_index(drop=True)
    return table


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


def _reference_lines(ax, done: pd.DataFrame) -> None:
    """True-reward and rational-teacher means (with their seeds' min-max band) as horizontal references."""
    for family, color, style in (("true reward", (0.15, 0.15, 0.15), "--"), ("rational", "tab:blue", ":")):
        v = done.loc[done["family"] == family, "value"].astype(float)
        if len(v):
            ax.axhline(v.mean(), color=color, linestyle=style, linewidth=1.6, label=f"{family} (mean)")
            ax.axhspan(v.min(), v.max(), color=color, alpha=0.08, linewidth=0)


def _family_panel(ax, done: pd.DataFrame, family: str, x_of, xlabel: str, *, log: bool = False,
                  include_rational_at=None, ticks=None) -> None:
    import numpy as np

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
    import seaborn as sns
    from matplotlib import pyplot as plt

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
        fams = [f for f in FAMILY_ORDER if f in set(agg["family"])]
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
    import seaborn as sns
    from matplotlib import pyplot as plt

    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(order) + 1.6), constrained_layout=True)
    sns.pointplot(data=done, y="teacher", x="value", order=order, errorbar=("ci", 95), linestyle="none",
                  capsize=0.2, color="tab:red", markersize=6, ax=ax)
    sns.stripplot(data=done, y="teacher", x="value", order=order, alpha=0.75, color="0.25", size=4, jitter=0.12,
                  zorder=5, ax=ax)
    v = done.loc[done["family"] == "true reward", "value"].astype(float)
    if len(v):
        ax.axvline(v.mean(), color=(0.15, 0.15, 0.15), linestyle="--", linewidth=1.2)
    ax.set_xlabel("final return (mean of last 10 episodes); dashed: true-reward mean")
    ax.set_ylabel("")
    ax.set_title("Final return per teacher (dots: seeds; bar: mean, bootstrap 95% CI)")
    return fig


def return_by_teacher(curves: pd.DataFrame, families: dict[str, str]):
    """Return over training, one panel per noise family; rational and true reward in every panel."""
    import seaborn as sns
    from matplotlib import pyplot as plt

    sns.set_theme(style="whitegrid", context="notebook")
    groups = [("mistake", ("mistake",)), ("stoc", ("stoc",)), ("other teachers", ("skip", "equal", "myopic", "combined"))]
    groups = [(name, fams) for name, fams in groups if any(families.get(t) in fams for t in set(curves["teacher"]))]
    groups = groups or [("teachers", tuple(FAMILY_ORDER))]
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 5.4), squeeze=False, sharey=True,
                             constrained_layout=True)
    for ax, (name, fams) in zip(axes.flat, groups):
        teachers = [t for t in dict.fromkeys(curves["teacher"]) if families.get(t) in fams]
        refs = [t for t in ("rational", "true reward") if t in set(curves["teacher"]) and t not in teachers]
        part = curves[curves["teacher"].isin(teachers + refs)]
        palette = dict(zip(teachers, sns.color_palette("flare", max(1, len(teachers)))))
        palette.update({"rational": "tab:blue", "true reward": (0.15, 0.15, 0.15)})
        sns.lineplot(data=part, x="env_steps", y="return", hue="teacher", hue_order=teachers + refs, palette=palette,
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


def write_report(study: optuna.Study, info: dict, sweep_dir: Path, out: Path, command: str, client) -> list[Path]:
    from . import plots

    trials = trials_frame(study)
    if not len(trials):
        raise UsageError(f"study {study.study_name!r} has no trials yet; run the sweep first")
    out.mkdir(parents=True, exist_ok=True)
    kind = info.get("kind") or ("grid" if "cell" in set().union(*(t.user_attrs for t in study.trials)) else "search")
    written: list[Path] = []
    trials.drop(columns=["budget_label"]).to_csv(out / "trials.csv", index=False)
    written.append(out / "trials.csv")
    complete = trials[trials["state"] == "COMPLETE"]
    counts = trials["state"].value_counts().to_dict()
    figures: list[tuple[str, str]] = []

    teacher_axis = kind == "grid" and bool(info.get("teachers") or (trials["teacher"] != "").any())
    env_id = (study.user_attrs.get("sweep_settings") or info.get("settings") or {}).get("env_id", "")
    if teacher_axis:
        done = teacher_trials(trials, sweep_dir, env_id)
        table = teacher_table(done)
        table.to_csv(out / "results.csv", index=False)
        body = teacher_markdown(table) if len(table) else "(no complete trials yet)"
        curves, missing = curves_frame(done, sweep_dir, client)
        if len(done):
            plots.save(return_vs_noise(done, env_id), out / "return_vs_noise.png")
            figures.append(("Final return vs noise level", "return_vs_noise.png"))
            order = list(dict.fromkeys(table["teacher"]))
            plots.save(final_returns_by_teacher(done, order), out / "final_returns.png")
            figures.append(("Final return per teacher", "final_returns.png"))
        if len(curves) and curves["return"].notna().any():
            teacher_of = dict(zip(done["number"], done["teacher"]))
            curves = curves.assign(teacher=[teacher_of[n] for n in curves["number"]])
            families = dict(zip(done["teacher"], done["family"]))
            plots.save(return_by_teacher(curves[curves["return"].notna()], families), out / "return_by_teacher.png")
            figures.append(("Episode return over training, per teacher", "return_by_teacher.png"))
    elif kind == "grid":
        table = grid_table(trials)
        table.drop(columns=["budget_label"]).to_csv(out / "results.csv", index=False)
        body = grid_markdown(table) if len(table) else "(no complete trials yet)"
        curves, missing = curves_frame(complete, sweep_dir, client)
        if len(curves):
            ret = curves[curves["return"].notna()]
            if len(ret):
                plots.save(plots.return_by_budget(ret), out / "return_by_budget.png")
                figures.append(("Episode return over training, per label budget", "return_by_budget.png"))
            if curves["labels"].notna().any():
                plots.save(plots.labels_over_training(curves), out / "labels_over_training.png")
                figures.append(("Labels gathered over training", "labels_over_training.png"))
        if len(complete):
            plots.save(plots.final_returns(complete), out / "final_returns.png")
            figures.append(("Final return per budget and method", "final_returns.png"))
    else:
        table = complete.sort_values("value", ascending=False)
        table.drop(columns=["budget_label"]).to_csv(out / "results.csv", index=False)
        body = search_markdown(trials) if len(complete) else "(no complete trials yet)"
        top = table.head(5)
        curves, missing = curves_frame(top, sweep_dir, client)
        if len(trials[trials["value"].notna()]):
            plots.save(plots.search_history(trials[trials["value"].notna()]), out / "search_history.png")
            figures.append(("Search history", "search_history.png"))
        if len(curves) and curves["return"].notna().any():
            import seaborn as sns
            from matplotlib import pyplot as plt

            fig, ax = plt.subplots(figsize=(7, 4.2), constrained_layout=True)
            sns.lineplot(data=curves[curves["return"].notna()], x="env_steps", y="return", hue="trial", ax=ax)
            ax.set_xlabel("env steps")
            ax.set_ylabel("episode return (true)")
            ax.set_title("Episode return over training, best 5 trials")
            plots.save(fig, out / "return_curves.png")
            figures.append(("Episode return over training, best 5 trials", "return_curves.png"))
    (out / "results.md").write_text(body + "\n")
    written += [out / "results.csv", out / "results.md"] + [out / f for _, f in figures]

    # -- README ----------------------------------------------------------------------------------------
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    m = machine()
    ua = study.user_attrs
    settings = ua.get("sweep_settings", info.get("settings", {}))
    lines = [
        f"# Sweep `{study.study_name}`",
        "",
        f"Preset `{ua.get('preset', info.get('preset', '?'))}` ({kind}): "
        + ", ".join(f"{k} {v}" for k, v in settings.items() if k not in ("kind", "preset")) + ".",
        f"Trials: " + ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())) + ".",
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
    lines += ["", "## Results", ""]
    if teacher_axis:
        lines += [
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
        ]
        thresholds = _teacher_thresholds(sorted(t for t in set(trials["teacher"]) if t), env_id)
        if thresholds:
            lines += ["Teachers as built for this env (oracles.teacher.teacher_for_env):", "", *thresholds, ""]
    elif kind == "grid":
        lines += [
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
        ]
    else:
        lines += ["Best complete trials (objective: final return, the mean true return of the last 10 episodes):", ""]
    lines += [body, ""]
    if missing:
        lines += [f"({missing} trial(s) had no learning curve here: their run directory is elsewhere and MLflow "
                  f"was not reachable.)", ""]
    for title, fname in figures:
        lines += [f"### {title}", "", f"![{title}]({fname})", ""]
    lines += ["Files: `results.csv` (the numbers behind the table), `trials.csv` (one row per trial, with its "
              "MLflow run id).", ""]
    notes = out / "interpretation.md"
    if notes.is_file():
        lines += ["## Interpretation", "", notes.read_text().strip(), ""]
    elif teacher_axis:
        lines += ["## Interpretation", "", "(none yet: write it in `interpretation.md` next to this README; the "
                  "report keeps it here when it is regenerated)", ""]
    (out / "README.md").write_text("\n".join(lines))
    written.append(out / "README.md")
    return written


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

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

from . import stats
from .presets import METHOD_NAMES, METHODS
from .provenance import machine, versions
from .storage import StorageError, mask_url, normalize_url, open_storage

RETURN, LABELS = "charts/episodic_return", "labels/answered"


class UsageError(Exception):
    pass


# -- loading -------------------------------------------------------------------------------------
def load_study(sweep_dir: Path, storage: str | None, study_name: str | None) -> tuple[optuna.Study, dict]:
    info: dict = {}
    info_path = sweep_dir / "sweep.json"
    if info_path.is_file():
        info = json.loads(info_path.read_text())
    elif not sweep_dir.is_dir():
        raise UsageError(f"{sweep_dir} is not a folder; expected a sweep directory (sweeps/STUDY)")
    if storage is None:
        storage = info.get("storage")
        if storage is None:
            db = sweep_dir / "optuna.db"
            if not db.is_file():
                raise UsageError(f"{sweep_dir} holds no sweep.json and no optuna.db; pass the sweep's folder "
                                 f"(sweeps/STUDY) or --storage URL --study NAME")
            storage = f"sqlite:///{db.resolve()}"
        elif "***" in storage:
            raise UsageError(f"the sweep's storage {storage} needs its password: pass --storage URL")
    try:
        rdb = open_storage(storage, heartbeat_interval=60, grace_period=120)
    except StorageError as exc:
        raise UsageError(str(exc)) from None
    names = [s.study_name for s in optuna.get_all_study_summaries(rdb)]
    name = study_name or info.get("study")
    if name is None:
        if len(names) != 1:
            raise UsageError(f"{mask_url(storage)} holds studies {names}; choose one with --study")
        name = names[0]
    if name not in names:
        raise UsageError(f"study {name!r} not found in {mask_url(storage)}; studies there: {names}")
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


def grid_markdown(table: pd.DataFrame) -> str:
    view = pd.DataFrame({
        "budget": table["budget_label"], "method": table["method"], "seeds": table["n"].astype(str),
        "mean [95% CI]": [f"{_fmt(m)} [{_fmt(lo)}, {_fmt(hi)}]" for m, lo, hi in
                          zip(table["mean"], table["mean_ci_low"], table["mean_ci_high"])],
        "IQM [95% CI]": [f"{_fmt(m)} [{_fmt(lo)}, {_fmt(hi)}]" for m, lo, hi in
                         zip(table["iqm"], table["iqm_ci_low"], table["iqm_ci_high"])],
        "min": [_fmt(v) for v in table["min"]], "max": [_fmt(v) for v in table["max"]],
        "labels used": [_fmt(v, 0) for v in table["labels_used"]],
        "env steps": [_fmt(v, 0) for v in table["env_steps"]],
    })
    return markdown_table(view)


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
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.report",
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

    out.mkdir(parents=True, exist_ok=True)
    trials = trials_frame(study)
    if not len(trials):
        raise UsageError(f"study {study.study_name!r} has no trials yet; run the sweep first")
    kind = info.get("kind") or ("grid" if "cell" in set().union(*(t.user_attrs for t in study.trials)) else "search")
    written: list[Path] = []
    trials.drop(columns=["budget_label"]).to_csv(out / "trials.csv", index=False)
    written.append(out / "trials.csv")
    complete = trials[trials["state"] == "COMPLETE"]
    counts = trials["state"].value_counts().to_dict()
    figures: list[tuple[str, str]] = []

    if kind == "grid":
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
    if kind == "grid":
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
        study, info = load_study(sweep_dir, args.storage, args.study)
        out = Path(args.out) if args.out else Path("results") / study.study_name
        client = _mlflow_client(args.tracking_uri or info.get("tracking_uri"))
        command = "python -m bench.report " + shlex.join(argv)
        written = write_report(study, info, sweep_dir, out, command, client)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"Report for study {study.study_name!r} written to {out}/:")
    for path in written:
        print(f"  {path.name}")
    print((out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())

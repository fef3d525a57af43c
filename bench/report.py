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
    separation.csv                per final metric and pair of cell groups with 3+ seeds each:
                                  whether their means' 95% CIs are disjoint (what separates)
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
    running_trials.png            a sweep in progress: the unfinished cells' curves so far
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

This module is the command line and the report per sweep kind (:class:`GridReport`,
:class:`TeacherReport`, :class:`SearchReport`, behind :class:`SweepReport`) with its README; what
a report reads is bench.report_data, its tables bench.report_tables, its figures bench.plots.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import optuna
import pandas as pd

from rlhp_core.cli import ArgumentParser
from rlhp_core.paths import check_writable_dir

from .metrics import FINAL_FRACTION, FINAL_METRICS
from .provenance import machine, versions
from .report_data import (UsageError, curves_frame, env_settings, load_study, teacher_family, teacher_trials,
                          trials_frame, workers_used)
from .report_tables import (cell_states, grid_markdown, grid_table, improvement_markdown, improvement_table, main_metric,
                            final_values, progress_markdown, progress_table, search_markdown, separation_markdown,
                            separation_table, sorted_by_teacher, sweep_progress, teacher_markdown, teacher_table,
                            teacher_thresholds)
from .storage import TrackingError, check_tracking_uri, normalize_url

__all__ = ["GridReport", "SearchReport", "SweepReport", "TeacherReport", "UsageError", "build_parser", "main",
           "report_for", "teacher_family", "write_report"]

NONE_YET = "(no complete trials yet)"
"""A results table's place before any trial has finished."""

# What the README says before the tables (SweepReport.intro)
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
    "What separates: for each final metric, the pairs of cell groups (3 or more finished seeds each) whose "
    "95% bootstrap CIs of the mean do not overlap. Disjoint intervals are the conservative reading: a pair "
    "that overlaps may still differ, but these runs do not show it.",
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


# ================================================================================================
# A report per sweep kind
# ================================================================================================
class _Figures:
    """The report's figures: saved to OUT as they are made, listed in order for the README."""

    def __init__(self, out: Path):
        self.out, self.items = out, []

    def add_all(self, figures) -> None:
        """Save each (name, title, figure) of ``figures`` (bench.plots' figure sets) as OUT/name;
        a None figure (nothing to draw) is skipped."""
        from . import plots

        for name, title, fig in figures:
            if fig is not None:
                plots.save(fig, self.out / name)
                self.items.append((title, name))


@dataclass
class Results:
    """What a report kind found: its results.csv rows and the markdown of results.md."""

    table: pd.DataFrame
    status: list[str]
    """Markdown lines on the cells not finished yet (grids), before the tables."""
    tables: str
    """The tables, in markdown."""
    missing: int
    """Trials without a learning curve here."""


class SweepReport(ABC):
    """One kind of sweep's report: its tables, CSV files and figures, and what its README says about them."""

    extra_files: ClassVar[tuple[str, ...]] = ()
    """Files it writes besides trials.csv, results.csv, results.md, the figures and README.md."""
    files_note: ClassVar[str] = ""
    """The README's words on ``extra_files``."""
    asks_interpretation: ClassVar[bool] = False
    """Whether the README holds an "Interpretation" section even before OUT/interpretation.md exists."""

    def __init__(self, kind: str, study: optuna.Study, info: dict, trials: pd.DataFrame, sweep_dir: Path, client):
        self.kind, self.study, self.info, self.trials = kind, study, info, trials
        self.sweep_dir, self.client = sweep_dir, client
        self.settings = study.user_attrs.get("sweep_settings") or info.get("settings") or {}
        self.env_id = self.settings.get("env_id", "")

    def curves(self, trials: pd.DataFrame) -> tuple[pd.DataFrame, int]:
        """Learning curves of ``trials`` (bench.report_data.curves_frame) and how many have none."""
        return curves_frame(trials, self.sweep_dir, self.client)

    @abstractmethod
    def results(self, out: Path, figs: _Figures) -> Results:
        """Compute the tables, write ``extra_files`` to ``out`` and draw the figures into ``figs``."""

    @abstractmethod
    def intro(self) -> list[str]:
        """What the tables mean: the README's lines before them."""


class GridReport(SweepReport):
    """A grid: final return per budget and method, then the progress tables and plots every grid gets."""

    extra_files = ("progress.csv", "improvement.csv", "separation.csv")
    files_note = (", `progress.csv`, `improvement.csv` and `separation.csv` (the progress, P(X > Y) and "
                  "what-separates tables)")

    def results(self, out, figs):
        trials = self.trials
        cells = cell_states(trials)
        cells = cells[cells["state"] != "COMPLETE"]
        # Every unfinished cell's run so far: a cell waiting for its retry resumes its run directory,
        # so its metrics.csv is its progress. Only a running trial's own MLflow run stands in for a
        # missing file: an earlier, failed trial's MLflow run is not what the retry continues.
        running, _ = self.curves(cells.assign(mlflow_run_id=cells["mlflow_run_id"].where(cells["state"] == "RUNNING", "")))
        status = sweep_progress(trials, running, self.settings.get("env_steps"))
        table, main_md, done, curves, missing = self._main_results(figs)
        progress_md = self._progress_results(done, curves, running, list(table.get("group", [])), out, figs)
        return Results(table, status, "\n".join([main_md, "", progress_md]).rstrip(), missing)

    def _main_results(self, figs: _Figures):
        """(table, markdown, finished trials, their curves, trials without a curve) of the main table."""
        from . import plots

        done = self.trials[self.trials["state"] == "COMPLETE"]
        table = grid_table(self.trials)
        curves, missing = self.curves(done)
        figs.add_all(plots.grid_figures(done, curves))
        return table, grid_markdown(table) if len(table) else NONE_YET, done, curves, missing

    def _progress_results(self, done, curves, running, order: list[str], out: Path, figs: _Figures) -> str:
        """Write progress.csv and improvement.csv, draw the progress figures; returns their markdown."""
        from . import plots

        finals = final_values(done, curves, order)
        progress = progress_table(finals)
        progress.to_csv(out / "progress.csv", index=False)
        key = main_metric(finals)
        pairs = improvement_table(finals, key)
        pairs.to_csv(out / "improvement.csv", index=False)
        figs.add_all(plots.progress_figures(curves, running, progress, finals, key, order))
        if not len(progress):
            return ""
        label = dict(FINAL_METRICS)[key]
        separation = separation_table(progress)
        separation.to_csv(out / "separation.csv", index=False)
        parts = [f"### Progress over the last {FINAL_FRACTION:.0%} of training", "", progress_markdown(progress), ""]
        if len(separation):
            parts += ["### What separates: pairs whose 95% bootstrap CIs of the mean are disjoint", "",
                      separation_markdown(separation), ""]
        if len(pairs):
            parts += [f"### P(X > Y): probability of improvement on {label}", "", improvement_markdown(pairs), ""]
        return "\n".join(parts)

    def intro(self):
        return [*GRID_TEXT, *PROGRESS_TEXT]


class TeacherReport(GridReport):
    """A grid with a teacher axis (the noise-robustness benchmark): the main table is per teacher, with the
    noise family and level and the label statistics of each trial's label store."""

    asks_interpretation = True

    def _main_results(self, figs):
        from . import plots

        done = sorted_by_teacher(teacher_trials(self.trials, self.sweep_dir, self.env_id))
        table = teacher_table(done)
        curves, missing = self.curves(done)
        figs.add_all(plots.teacher_figures(done, curves, list(dict.fromkeys(table.get("teacher", []))), self.env_id))
        return table, teacher_markdown(table) if len(table) else NONE_YET, done, curves, missing

    def intro(self):
        lines = [*TEACHER_TEXT, *PROGRESS_TEXT]
        thresholds = teacher_thresholds(sorted(t for t in set(self.trials["teacher"]) if t), self.env_id)
        if thresholds:
            lines += ["Teachers as built for this env (oracles.teacher.teacher_for_env):", "", *thresholds, ""]
        return lines


class SearchReport(SweepReport):
    """A search: its best complete trials, its history and their curves."""

    def results(self, out, figs):
        from . import plots

        trials = self.trials
        table = trials[trials["state"] == "COMPLETE"].sort_values("value", ascending=False)
        curves, missing = self.curves(table.head(5))
        figs.add_all(plots.search_figures(trials, curves))
        return Results(table, [], (search_markdown(trials) if len(table) else NONE_YET).rstrip(), missing)

    def intro(self):
        return ["Best complete trials (objective: final return, the mean true return of the last 10 episodes):", ""]


def report_for(study: optuna.Study, info: dict, trials: pd.DataFrame, sweep_dir: Path, client) -> SweepReport:
    """The report of the study's kind (sweep.json's; without one, a study whose trials are cells is a grid)."""
    kind = info.get("kind") or ("grid" if "cell" in set().union(*(t.user_attrs for t in study.trials)) else "search")
    if kind != "grid":
        cls = SearchReport
    elif info.get("teachers") or (trials["teacher"] != "").any():
        cls = TeacherReport
    else:
        cls = GridReport
    return cls(kind, study, info, trials, sweep_dir, client)


# ================================================================================================
# The README and the report
# ================================================================================================
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

def _readme(report: SweepReport, command: str, results: list[str], missing: int, figs: _Figures) -> list[str]:
    """README.md's lines: provenance, ``results`` (what is unfinished, what the tables mean, the tables),
    the figures, and the interpretation kept from OUT/interpretation.md."""
    lines = [*_provenance_lines(report.study, report.info, report.kind, report.trials, command), "", "## Results", "",
             *results, ""]
    if missing:
        lines += [f"({missing} trial(s) had no learning curve here: their run directory is elsewhere and MLflow "
                  f"was not reachable.)", ""]
    for title, fname in figs.items:
        lines += [f"### {title}", "", f"![{title}]({fname})", ""]
    lines += ["Files: `results.csv` (the numbers behind the table), `trials.csv` (one row per trial, with its "
              "MLflow run id)" + report.files_note + ".", ""]
    notes = figs.out / "interpretation.md"
    if notes.is_file():
        lines += ["## Interpretation", "", notes.read_text().strip(), ""]
    elif report.asks_interpretation:
        lines += ["## Interpretation", "", "(none yet: write it in `interpretation.md` next to this README; the "
                  "report keeps it here when it is regenerated)", ""]
    return lines


def write_report(study: optuna.Study, info: dict, sweep_dir: Path, out: Path, command: str, client) -> list[Path]:
    """Write the study's report to ``out``; returns the files written."""
    trials = trials_frame(study)
    if not len(trials):
        raise UsageError(f"study {study.study_name!r} has no trials yet; run the sweep first")
    out.mkdir(parents=True, exist_ok=True)
    report = report_for(study, info, trials, sweep_dir, client)
    trials.drop(columns=["budget_label"]).to_csv(out / "trials.csv", index=False)
    figs = _Figures(out)
    res = report.results(out, figs)
    res.table.drop(columns=["budget_label"], errors="ignore").to_csv(out / "results.csv", index=False)
    (out / "results.md").write_text("\n".join([*res.status, res.tables]) + "\n")
    (out / "README.md").write_text("\n".join(_readme(report, command, [*res.status, *report.intro(), res.tables],
                                                     res.missing, figs)))
    return ([out / "trials.csv", out / "results.csv", out / "results.md", *(out / f for f in report.extra_files)]
            + [out / f for _, f in figs.items] + [out / "README.md"])


# ================================================================================================
# Command line
# ================================================================================================
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

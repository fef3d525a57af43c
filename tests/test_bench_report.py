"""bench.report: a finished sweep -> tables (mean, IQM, bootstrap CIs over seeds), plots, README."""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

HERE = Path(__file__).resolve().parent


def _helpers():
    spec = importlib.util.spec_from_file_location("_bench_sweep_helpers_r", HERE / "test_bench_sweep.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


H = _helpers()


# -- statistics ---------------------------------------------------------------------------------------
def test_iqm_is_the_mean_of_the_middle_half():
    from bench.stats import iqm

    assert iqm([1, 2, 3, 4, 5, 6, 7, 1000]) == pytest.approx(np.mean([3, 4, 5, 6]))
    assert iqm([1.0, 2.0, 9.0]) == pytest.approx(4.0)  # fewer than 4 values: nothing cut
    assert math.isnan(iqm([]))


def test_bootstrap_ci_brackets_the_statistic_and_is_reproducible():
    from bench.stats import bootstrap_ci, iqm, mean, summarize

    x = np.random.default_rng(1).normal(10.0, 2.0, size=12)
    lo, hi = bootstrap_ci(x, mean)
    assert lo < x.mean() < hi and hi - lo < 4 * x.std() / math.sqrt(len(x)) * 2
    assert bootstrap_ci(x, mean) == (lo, hi)
    i_lo, i_hi = bootstrap_ci(x, iqm)
    assert i_lo < iqm(x) < i_hi
    assert all(math.isnan(v) for v in bootstrap_ci([3.0], mean))
    s = summarize([1.0, 2.0, 3.0])
    assert (s["n"], s["mean"], s["min"], s["max"]) == (3, 2.0, 1.0, 3.0)
    assert 1.0 <= s["mean_ci_low"] <= 2.0 <= s["mean_ci_high"] <= 3.0


# -- reports of real (fake-learner) sweeps -----------------------------------------------------------------
@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    from bench.sweep import main

    base = tmp_path_factory.mktemp("report")
    d = base / "sweep"
    fake = H.load_fake(base)
    argv = ["--dir", str(d), "--env-steps", "400", "--set", "log_every=100", "--seeds", "3", "--budgets", "50,200"]
    assert main(argv, train_fn=fake, progress=False) == 0
    return d


def test_grid_report_tables_plots_and_readme(grid, tmp_path, capsys):
    from bench.report import main

    out = tmp_path / "results" / "quick"
    assert main([str(grid), "--out", str(out)]) == 0
    assert "rlhp" in capsys.readouterr().out
    for name in ("results.csv", "results.md", "trials.csv", "return_by_budget.png", "labels_over_training.png",
                 "final_returns.png", "README.md"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name

    table = pd.read_csv(out / "results.csv")
    assert list(zip(table["method"], table["budget"])) == [("true-reward", 0), ("rlhp", 50), ("rlhp", 200)]
    row = table[(table["method"] == "rlhp") & (table["budget"] == 50)].iloc[0]
    seeds = [100.0 + s + 0.5 for s in range(3)]  # the fake learner's final returns
    assert row["n"] == 3 and row["mean"] == pytest.approx(np.mean(seeds))
    assert row["iqm"] == pytest.approx(np.mean(seeds))  # 3 seeds: nothing trimmed
    assert min(seeds) <= row["mean_ci_low"] <= row["mean"] <= row["mean_ci_high"] <= max(seeds)
    assert row["labels_used"] == 50

    md = (out / "results.md").read_text()
    assert "| budget | method | seeds | mean [95% CI] | IQM [95% CI]" in md and "true reward" in md

    readme = (out / "README.md").read_text()
    assert "python -m bench.sweep --dir" in readme  # the sweep's command
    assert f"python -m bench.report {grid} --out {out}" in readme  # this report's command
    assert "Report written: 20" in readme
    assert f"{len(os.sched_getaffinity(0))} CPUs" in readme
    assert "optuna 5" in readme and "mlflow 3" in readme and "torch" in readme
    assert "frameskip" in readme and "sticky_actions" in readme
    assert "min(500, ceil(25% of the budget))" in readme
    assert "![Episode return over training, per label budget](return_by_budget.png)" in readme
    assert "no learning curve" not in readme


def test_curves_come_from_mlflow_when_the_run_directories_are_elsewhere(grid, tmp_path):
    from bench.report import main

    copy = tmp_path / "sweep"
    shutil.copytree(grid, copy, ignore=shutil.ignore_patterns("trials"))
    out = tmp_path / "out"
    assert main([str(copy), "--out", str(out)]) == 0
    readme = (out / "README.md").read_text()
    assert "no learning curve" not in readme and (out / "return_by_budget.png").is_file()


def test_search_report(tmp_path):
    from bench.report import main as report
    from bench.sweep import main as sweep

    d = tmp_path / "sweep"
    argv = ["--preset", "hparams", "--dir", str(d), "--env-steps", "400", "--set", "log_every=100", "--trials", "3"]
    assert sweep(argv, train_fn=H.load_fake(tmp_path), progress=False) == 0
    out = tmp_path / "out"
    assert report([str(d), "--out", str(out)]) == 0
    md = (out / "results.md").read_text()
    assert "reward_lr" in md and "segment_length" in md
    assert (out / "search_history.png").is_file() and (out / "return_curves.png").is_file()
    assert len(pd.read_csv(out / "trials.csv")) == 3


def test_bad_input_exits_2(tmp_path, grid, capsys):
    from bench.report import main

    assert main([str(tmp_path / "nothing-here")]) == 2
    assert "not a folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    assert "no sweep.json and no optuna.db" in capsys.readouterr().err
    assert main([str(grid), "--study", "other", "--out", str(tmp_path / "o")]) == 2
    assert "study 'other' not found" in capsys.readouterr().err


def test_the_command_line(grid, tmp_path):
    out = tmp_path / "cli"
    r = subprocess.run([sys.executable, "-m", "bench.report", str(grid), "--out", str(out)], env=H.env(),
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (out / "README.md").is_file()

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
    argv = ["--dir", str(d), "--env-steps", "40000", "--set", "log_every=10000", "--seeds", "3", "--budgets", "50,200"]
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
    argv = ["--preset", "hparams", "--dir", str(d), "--env-steps", "40000", "--set", "log_every=10000", "--trials", "3"]
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


# -- a teacher axis: the noise-robustness report ----------------------------------------------------------------
NOISE_TEACHERS = ["rational", "stoc:beta=0.1", "mistake:eps_mistake=0.2", "skip:skip_threshold=-150"]


def _pendulum_store(path: Path) -> None:
    """A real label store: 5 queries whose left segment is clearly better; answers left, left, right, equal,
    incomparable (so 1 of 3 left/right answers disagrees with the rational teacher)."""
    from rlhp_core.label_store import LabelStore
    from rlhp_core.segments import Query, Segment

    def seg(reward: float) -> Segment:
        return Segment(obs=np.zeros((25, 3), np.float32), actions=np.zeros((25, 1), np.float32),
                       true_rewards=np.full(25, reward, np.float32), episode_ends=np.zeros(25, bool))

    path.unlink()  # the fake learner's stand-in
    store = LabelStore(path, env_id="Pendulum-v1", obs_shape=(3,))
    store.add_queries([Query(f"q{i}", seg(-1.0), seg(-10.0)) for i in range(5)])
    for i, a in enumerate(("left", "left", "right", "equal", "incomparable")):
        store.add_answer(f"q{i}", a, labeler="test")
    store.close()


def test_teacher_family_names_the_knob_that_departs_from_rational():
    from bench.report import teacher_family

    env = "Pendulum-v1"
    assert teacher_family("rational", env)[0] == "rational"
    assert teacher_family("stoc:beta=0.1", env) == ("stoc", 0.1)
    assert teacher_family("mistake", env) == ("mistake", 0.1)
    assert teacher_family("myopic", env) == ("myopic", 0.9)
    assert teacher_family("skip", env) == ("skip", pytest.approx(0.1 * -0.75 * 25))  # B-Pref's relative form
    assert teacher_family("equal", env) == ("equal", pytest.approx(0.1 * 0.75 * 25))
    assert teacher_family("mistake:eps_mistake=0.2,gamma=0.9", env)[0] == "combined"
    assert teacher_family("nonsense", env)[0] == "?"


def test_noise_sweep_report_per_teacher_with_label_statistics(tmp_path, capsys):
    from bench.report import main as report
    from bench.sweep import main as sweep

    d = tmp_path / "sweep"
    argv = ["--preset", "noise", "--dir", str(d), "--env-steps", "40000", "--set", "log_every=10000", "--seeds", "2",
            "--teachers", *NOISE_TEACHERS]
    assert sweep(argv, train_fn=H.load_fake(tmp_path), progress=False) == 0
    assert sorted(p.name for p in (d / "trials").iterdir()) == sorted(
        [f"rlhp-{k}-b500-s{s}" for k in ("rational", "stoc_beta=0.1", "mistake_eps_mistake=0.2",
                                          "skip_skip_threshold=-150") for s in (0, 1)]
        + ["true-reward-s0", "true-reward-s1"])
    _pendulum_store(d / "trials" / "rlhp-mistake_eps_mistake=0.2-b500-s0" / "labels.sqlite")

    out = tmp_path / "results" / "noise"
    assert report([str(d), "--out", str(out)]) == 0
    capsys.readouterr()
    for name in ("results.csv", "results.md", "trials.csv", "return_vs_noise.png", "final_returns.png",
                 "return_by_teacher.png", "README.md"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name

    table = pd.read_csv(out / "results.csv")
    assert list(table["teacher"]) == ["true reward", "rational", "mistake:eps_mistake=0.2", "stoc:beta=0.1",
                                      "skip:skip_threshold=-150"]
    assert list(table["family"]) == ["true reward", "rational", "mistake", "stoc", "skip"]
    assert list(table["level"].fillna(-1)) == [-1, -1, 0.2, 0.1, -150]
    by = table.set_index("teacher")
    assert by.loc["true reward", "n"] == 2 and by.loc["true reward", "mean"] == pytest.approx(100.5)  # fake: 100 + seed
    assert by.loc["rational", "mean"] == pytest.approx(105.5) and by.loc["rational", "labels_used"] == 500
    assert by.loc["rational", "mean_ci_low"] <= 105.5 <= by.loc["rational", "mean_ci_high"]
    # the fake learner's stores hold 3 'left' answers and no queries; seed 0 of mistake holds the real store:
    assert by.loc["rational", "frac_equal"] == 0 and math.isnan(by.loc["rational", "label_error"])
    assert by.loc["mistake:eps_mistake=0.2", "frac_equal"] == pytest.approx((0.2 + 0) / 2)
    assert by.loc["mistake:eps_mistake=0.2", "frac_incomparable"] == pytest.approx(0.1)
    assert by.loc["mistake:eps_mistake=0.2", "label_error"] == pytest.approx(1 / 3)  # the only seed with a value
    assert math.isnan(by.loc["true reward", "frac_equal"])

    md = (out / "results.md").read_text()
    assert "| teacher | family | noise level |" in md and "label error vs rational" in md
    assert "eps_mistake=0.2" in md and "beta=0.1" in md and "33%" in md
    readme = (out / "README.md").read_text()
    assert "![Final return vs noise level](return_vs_noise.png)" in readme
    assert "`skip:skip_threshold=-150`: skip_threshold=-150" in readme
    assert "## Interpretation" in readme and "interpretation.md" in readme
    assert "python -m bench.sweep --preset noise" in readme

    (out / "interpretation.md").write_text("Noise costs this much.\n")
    assert report([str(d), "--out", str(out)]) == 0
    assert "## Interpretation\n\nNoise costs this much." in (out / "README.md").read_text()


def test_final_returns_plot_with_a_single_method():
    """A one-cell sweep (e.g. one long true-reward run) still gets its plot (seaborn cannot dodge
    a single hue level)."""
    from bench import plots

    trials = pd.DataFrame({"budget": [0, 0], "budget_label": ["true reward"] * 2, "method": ["true-reward"] * 2,
                           "value": [0.0, 1.0]})
    fig = plots.final_returns(trials)
    assert fig.axes and fig.axes[0].get_title() == "Final return per budget and method"

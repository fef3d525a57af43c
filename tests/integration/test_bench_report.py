"""bench.report: a finished sweep -> tables (mean, IQM, bootstrap CIs over seeds), plots, README."""

from __future__ import annotations

import math
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import tests.helpers.sweep as H




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


def test_ablations_get_a_panel_per_budget_with_a_line_per_method(tmp_path):
    from bench.report import main as report
    from bench.sweep import main

    d = tmp_path / "sweep"
    argv = ["--dir", str(d), "--env-steps", "40000", "--set", "log_every=10000", "--seeds", "1", "--budgets", "50",
            "--methods", "rlhp,random-queries,true-reward"]
    assert main(argv, train_fn=H.load_fake(tmp_path), progress=False) == 0
    out = tmp_path / "out"
    assert report([str(d), "--out", str(out)]) == 0
    assert (out / "return_by_method.png").stat().st_size > 0
    assert "(return_by_method.png)" in (out / "README.md").read_text()


def test_a_single_method_grid_has_no_ablation_panels(grid, tmp_path):
    from bench.report import main

    out = tmp_path / "out"
    assert main([str(grid), "--out", str(out)]) == 0
    assert not (out / "return_by_method.png").exists()


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


def test_label_statistics_leave_a_finished_store_as_it_was(tmp_path, monkeypatch):
    """The report reads label stores read-only: nothing appears beside a finished store (no -wal or -shm
    file), not even while it is open, and its bytes are unchanged."""
    import oracles.agreement

    from bench.report_data import label_stats

    store = tmp_path / "labels.sqlite"
    store.touch()  # (_pendulum_store replaces the fake learner's stand-in)
    _pendulum_store(store)
    assert [p.name for p in tmp_path.iterdir()] == ["labels.sqlite"]
    before = store.read_bytes()
    beside, agreement = [], oracles.agreement.agreement

    def looking(*args, **kwargs):  # called while the report holds the store open
        beside.append(sorted(p.name for p in tmp_path.iterdir()))
        return agreement(*args, **kwargs)

    monkeypatch.setattr(oracles.agreement, "agreement", looking)
    got = label_stats(store)
    assert got["frac_equal"] == pytest.approx(0.2) and got["label_error"] == pytest.approx(1 / 3)
    assert beside == [["labels.sqlite"]]
    assert [p.name for p in tmp_path.iterdir()] == ["labels.sqlite"] and store.read_bytes() == before
    assert all(math.isnan(v) for v in label_stats(tmp_path / "missing.sqlite").values())


@pytest.mark.slow  # a teacher-axis sweep and its label stores: 27 s on a busy 2-core box
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
    # the fake learner's stand-in stores are not label stores (no meta, no queries): no statistics, and
    # left as they were; seed 0 of mistake holds the only real store (read through LabelStore):
    assert math.isnan(by.loc["rational", "frac_equal"]) and math.isnan(by.loc["rational", "label_error"])
    fake_store = sqlite3.connect(d / "trials" / "rlhp-rational-b500-s0" / "labels.sqlite")
    assert [r[0] for r in fake_store.execute("SELECT name FROM sqlite_master WHERE type='table'")] == ["answers"]
    fake_store.close()
    assert by.loc["mistake:eps_mistake=0.2", "frac_equal"] == pytest.approx(0.2)
    assert by.loc["mistake:eps_mistake=0.2", "frac_incomparable"] == pytest.approx(0.2)
    assert by.loc["mistake:eps_mistake=0.2", "label_error"] == pytest.approx(1 / 3)
    assert math.isnan(by.loc["true reward", "frac_equal"])

    progress = pd.read_csv(out / "progress.csv")
    assert list(progress["group"]) == ["true reward", "rlhp 500 rational", "rlhp 500 mistake:eps_mistake=0.2",
                                       "rlhp 500 stoc:beta=0.1", "rlhp 500 skip:skip_threshold=-150"]
    assert set(progress["metric"]) == {"value"}  # the fake learner logs no progress rates: the return alone
    pairs = pd.read_csv(out / "improvement.csv").set_index(["X", "Y"])
    assert len(pairs) == 10 and pairs.loc[("true reward", "rlhp 500 rational"), "p"] == 0.0  # seeds 100, 101 vs 105, 106

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


# -- progress metrics, pairwise comparisons and a sweep in progress ------------------------------------------------
def test_probability_of_improvement_counts_seed_pairs_ties_one_half():
    from bench.stats import probability_of_improvement

    r = probability_of_improvement([1.0, 2.0, 3.0], [0.0, 0.0, 5.0])
    assert r["p"] == pytest.approx(6 / 9) and (r["n_x"], r["n_y"]) == (3, 3)
    assert 0.0 <= r["p_ci_low"] <= r["p"] <= r["p_ci_high"] <= 1.0
    assert probability_of_improvement([1.0, 2.0, 3.0], [0.0, 2.0, 5.0])["p"] == pytest.approx(4.5 / 9)
    assert probability_of_improvement([0.0, 0.0], [0.0, 0.0])["p"] == 0.5  # Enduro: every seed scores 0
    one = probability_of_improvement([4.0], [1.0, 2.0])
    assert one["p"] == 1.0 and math.isnan(one["p_ci_low"])  # one seed: no interval
    assert math.isnan(probability_of_improvement([], [1.0])["p"])


STEPS, LOG = 10_000, 1_000
"""The fake sweep's trials: 10,000 agent steps, a log row every 1,000; the last 10% = rows 9,000 and 10,000."""
FAKE_CELLS = [  # (method, budget, seed, state, final gained per 1k steps)
    *[("true-reward", 0, s, "COMPLETE", g) for s, g in enumerate([1.0, 4.0, 5.0, 100.0])],
    ("rlhp", 290, 0, "COMPLETE", 1.0), ("rlhp", 290, 1, "COMPLETE", 3.0), ("rlhp", 290, 2, "RUNNING", 9.0),
    ("rlhp", 290, 3, "WAITING", 0.0),
    ("rlhp", 5500, 0, "COMPLETE", 2.0), ("rlhp", 5500, 1, "FAIL", 0.0), ("rlhp", 5500, 2, "WAITING", 0.0),
    ("rlhp", 5500, 3, "WAITING", 0.0),
]


def _cell_key(method: str, budget: int, seed: int) -> str:
    return f"{method}-s{seed}" if method == "true-reward" else f"{method}-b{budget}-s{seed}"


def _fake_metrics(path: Path, budget: int, gained: float, last_step: int) -> None:
    """metrics.csv as the learner writes it: rates in every row (gained per 1k steps 0 until the last 10%,
    then gained - 1 and gained + 1: final mean = gained), episode values only in every third row."""
    from rlhp_core.episode_stats import WINDOW_KEYS

    rows = []
    for step in range(LOG, last_step + 1, LOG):
        tail = step >= 0.9 * STEPS
        rows.append({
            "env_steps": step, "charts/gained_per_1k_steps": (gained + (1 if step == STEPS else -1)) if tail else 0.0,
            "charts/progress_per_step": 0.25 if tail else 0.0, "charts/lost_per_1k_steps": 2.0,
            "charts/episodic_return": 0.0 if step % (3 * LOG) == 0 else None,
            "charts/episodic_gained": gained if step % (3 * LOG) == 0 else None,
            "charts/cumulative_true_reward": 0.0, "charts/cumulative_gained": gained * step / 1000,
            "labels/answered": budget * step / STEPS if budget else None, "losses/approx_kl": 0.01,
            "losses/clipfrac": 0.1, "losses/explained_variance": 0.5, "losses/entropy": 1.5,
            "reward/val_accuracy": 0.8 if budget else None, "labels/equal_share": 0.1 if budget else None,
        })
    path.parent.mkdir(parents=True)
    columns = list(dict.fromkeys(["env_steps", *WINDOW_KEYS, *rows[0]]))  # the learner's columns come first
    pd.DataFrame(rows).reindex(columns=columns).to_csv(path, index=False)


def _fake_sweep(d: Path) -> Path:
    """A grid sweep in progress, without the sweep machinery: an Optuna study holding FAKE_CELLS' trials
    and their run directories (finished ones complete, the running one part way, the failed one less)."""
    import json

    import optuna
    from optuna.distributions import CategoricalDistribution, IntDistribution

    from bench.presets import METHOD_NAMES

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{d / 'optuna.db'}"
    d.mkdir()
    study = optuna.create_study(study_name="progress", storage=storage, direction="maximize")
    dists = {"method": CategoricalDistribution(METHOD_NAMES), "label_budget": IntDistribution(0, 10_000),
             "seed": IntDistribution(0, 100)}
    for method, budget, seed, state, gained in FAKE_CELLS:
        key = _cell_key(method, budget, seed)
        done = state == "COMPLETE"
        study.add_trial(optuna.trial.create_trial(
            state=getattr(optuna.trial.TrialState, state), value=float(seed) if done else None,
            params={"method": method, "label_budget": budget, "seed": seed}, distributions=dists,
            user_attrs={"cell": key, "run_key": key, **({"labels": budget, "env_steps": STEPS} if done else {})}))
        if state in ("COMPLETE", "RUNNING"):
            _fake_metrics(d / "trials" / key / "metrics.csv", budget, gained, STEPS if done else 4 * LOG)
        if state == "FAIL":  # crashed part way: its retry resumes this run directory
            _fake_metrics(d / "trials" / key / "metrics.csv", budget, gained, 2 * LOG)
    (d / "sweep.json").write_text(json.dumps({
        "study": "progress", "kind": "grid", "storage": storage, "budgets": [290, 5500],
        "methods": ["true-reward", "rlhp"], "seeds": 4, "command": "python -m bench.sweep --preset fake",
        "settings": {"kind": "grid", "env_id": "ALE/Enduro-v5", "env_steps": STEPS}}))
    return d


@pytest.fixture(scope="module")
def progress_report(tmp_path_factory):
    from bench.report import main

    base = tmp_path_factory.mktemp("progress")
    out = base / "out"
    assert main([str(_fake_sweep(base / "sweep")), "--out", str(out)]) == 0
    return out


def test_progress_table_uses_the_last_tenth_of_training(progress_report):
    from bench.stats import bootstrap_ci, iqm, mean

    table = pd.read_csv(progress_report / "progress.csv", keep_default_na=False, na_values=[""])
    gained = table[table["metric"] == "charts/gained_per_1k_steps"].set_index("group")
    assert list(gained.index) == ["true reward", "rlhp 290", "rlhp 5,500"]  # finished seeds only
    seeds = [1.0, 4.0, 5.0, 100.0]
    base = gained.loc["true reward"]
    assert base["n"] == 4 and base["mean"] == pytest.approx(27.5) and base["iqm"] == pytest.approx(4.5)
    assert (base["mean_ci_low"], base["mean_ci_high"]) == pytest.approx(bootstrap_ci(seeds, mean))
    assert (base["iqm_ci_low"], base["iqm_ci_high"]) == pytest.approx(bootstrap_ci(seeds, iqm))
    two = gained.loc["rlhp 290"]
    assert two["n"] == 2 and (two["mean"], two["mean_ci_low"], two["mean_ci_high"]) == pytest.approx((2.0, 1.0, 3.0))
    assert gained.loc["rlhp 5,500", "n"] == 1 and math.isnan(gained.loc["rlhp 5,500", "mean_ci_low"])
    speed = table[table["metric"] == "charts/progress_per_step"]
    assert list(speed["mean"]) == pytest.approx([0.25] * 3)
    ret = table[table["metric"] == "value"].set_index("group")
    assert ret.loc["true reward", "mean"] == pytest.approx(1.5)  # the trials' values: their seeds


def test_probability_of_improvement_table(progress_report):
    pairs = pd.read_csv(progress_report / "improvement.csv").set_index(["X", "Y"])
    assert set(pairs["metric"]) == {"charts/gained_per_1k_steps"}  # the main progress metric
    assert pairs.loc[("true reward", "rlhp 290"), "p"] == pytest.approx(6.5 / 8)
    assert pairs.loc[("true reward", "rlhp 5,500"), "p"] == pytest.approx(0.75)
    assert pairs.loc[("rlhp 290", "rlhp 5,500"), "p"] == pytest.approx(0.5)
    lo, hi = pairs.loc[("true reward", "rlhp 290"), ["p_ci_low", "p_ci_high"]]
    assert 0.0 <= lo <= 6.5 / 8 <= hi <= 1.0
    assert math.isnan(pairs.loc[("true reward", "rlhp 5,500"), "p_ci_low"])


def test_what_separates_needs_three_seeds_a_side(progress_report):
    table = pd.read_csv(progress_report / "separation.csv")
    gained = table[table["metric"] == "charts/gained_per_1k_steps"].set_index(["X", "Y"])
    assert set(gained.index) == {("true reward", "rlhp 290"), ("true reward", "rlhp 5,500"), ("rlhp 290", "rlhp 5,500")}
    assert set(gained["verdict"]) == {"too few seeds"}  # 4 seeds against 2 and 1
    md = (progress_report / "results.md").read_text()
    assert "### What separates" in md and "no pair separates. Fewer than 3 seeds: true reward / rlhp 290" in md


def test_few_seeds_are_flagged_next_to_the_interval(progress_report):
    md = (progress_report / "results.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| rlhp 290 | gained per 1k"))
    assert "2.00 [1.00, 3.00] ⚠ 2 seeds: min–max, not a 95% CI" in row
    assert "(1 seed: no interval)" in next(line for line in md.splitlines() if line.startswith("| rlhp 5,500 | gained"))
    base = next(line for line in md.splitlines() if line.startswith("| true reward | gained"))
    assert "⚠" not in base and "| 4 | 27.5 [" in base and "| 4.5 [" in base
    assert "| true reward | rlhp 290 | 4, 2 | 0.81 [" in md


def test_a_sweep_in_progress_names_its_unfinished_cells(progress_report):
    md = (progress_report / "results.md").read_text()
    assert "**7 of 12 cells finished.**" in md
    assert "- running: `rlhp-b290-s2` (4,000 of 10,000 agent steps so far)" in md
    assert "- not started: `rlhp-b290-s3`, `rlhp-b5500-s2`, `rlhp-b5500-s3`" in md
    # a failed cell's run so far is what its retry resumes: how far it got, and its curve in running_trials.png
    assert "- failed (the next `bench.sweep` run retries them): `rlhp-b5500-s1` (2,000 of 10,000 agent steps so far)" in md
    assert "Unfinished cells' curves so far are in `running_trials.png`." in md
    readme = (progress_report / "README.md").read_text()
    assert "**7 of 12 cells finished.**" in readme and "at or after 90% of its last logged agent step" in readme


def test_progress_plots_are_written(progress_report):
    readme = (progress_report / "README.md").read_text()
    for name in ("progress_curves.png", "cumulative_reward.png", "progress_vs_labels.png", "final_vs_budget.png",
                 "diagnostics.png", "running_trials.png", "return_by_budget.png", "final_returns.png",
                 "performance_profile.png"):
        assert (progress_report / name).stat().st_size > 10_000, name
        assert f"]({name})" in readme, name
    # the profile is drawn on the metric the P(X > Y) table compares
    assert "### Performance profile: fraction of runs above τ on gained per 1k agent steps" in readme


def test_curve_panels_average_seeds_whose_episodes_end_in_different_rows():
    """Per-episode values are interpolated between a trial's rows, so two seeds average at every row."""
    from bench import plots

    curves = pd.DataFrame({"env_steps": [1, 2, 3] * 2, "trial": ["a"] * 3 + ["b"] * 3, "group": ["g"] * 6,
                           "charts/episodic_return": [0.0, None, 2.0, None, 4.0, None]})
    fig = plots.curve_panels(curves, [("charts/episodic_return", "return")], title="t")
    line = fig.axes[0].get_lines()[0]
    assert list(line.get_xdata()) == [1, 2, 3] and list(line.get_ydata()) == pytest.approx([0.0, 2.5, 2.0])
    assert plots.curve_panels(curves, [("losses/approx_kl", "KL")], title="t") is None  # nothing to draw


# -- performance profiles (rliable) ------------------------------------------------------------------------
def test_run_score_distribution_is_the_fraction_of_runs_above_tau():
    from bench.plots import run_score_distribution

    taus = [0.5, 1.0, 1.5, 2.5, 3.0, 3.5]
    fraction, lo, hi = run_score_distribution([1.0, 2.0, 3.0], taus)
    assert fraction == pytest.approx([1.0, 2 / 3, 2 / 3, 1 / 3, 0.0, 0.0])  # strictly above: 1.0 is not above 1.0
    assert np.all((lo <= fraction) & (fraction <= hi)) and np.all((0.0 <= lo) & (hi <= 1.0))
    assert (lo[0], hi[0], lo[-1], hi[-1]) == (1.0, 1.0, 0.0, 0.0)  # no resample has a run outside the range
    assert lo[2] < 2 / 3 < hi[2]  # three runs: a resample may hold 0 to 3 runs above 1.5
    again = run_score_distribution([1.0, 2.0, 3.0], taus)
    assert all(np.array_equal(a, b) for a, b in zip(again, (fraction, lo, hi)))  # fixed generator seed
    one = run_score_distribution([2.0, math.nan], taus)  # NaN dropped: one run, so no band
    assert one[0] == pytest.approx([1, 1, 1, 0, 0, 0]) and np.isnan(one[1]).all() and np.isnan(one[2]).all()
    assert np.isnan(run_score_distribution([], taus)[0]).all()


def test_performance_profile_draws_one_step_curve_per_group_with_its_band():
    from bench import plots

    finals = pd.DataFrame({"group": ["true reward"] * 3 + ["rlhp 50"] * 3,
                           "value": [1.0, 2.0, 3.0, 0.0, 0.0, 4.0]})
    fig = plots.performance_profile(finals, "value", "final return", ["true reward", "rlhp 50"], n_boot=500)
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"true reward (3 runs)", "rlhp 50 (3 runs)"}

    def at(label: str, tau: float) -> float:  # a steps-post curve's value at tau
        line = lines[label]
        x, y = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
        assert line.get_drawstyle() == "steps-post"
        return float(y[np.searchsorted(x, tau, side="right") - 1])

    assert at("true reward (3 runs)", 1.5) == pytest.approx(2 / 3)
    assert at("true reward (3 runs)", 3.0) == 0.0 and at("rlhp 50 (3 runs)", 3.0) == pytest.approx(1 / 3)
    x = lines["rlhp 50 (3 runs)"].get_xdata()
    assert at("rlhp 50 (3 runs)", x[0]) == 1.0 and at("rlhp 50 (3 runs)", x[-1]) == 0.0  # starts at 1, ends at 0
    assert len(ax.collections) == 2  # one bootstrap band per group
    assert ax.get_xlabel() == "τ: final return"
    assert plots.performance_profile(finals.assign(value=math.nan), "value", "final return") is None

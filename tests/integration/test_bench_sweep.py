"""bench.sweep: Optuna studies whose trials are nested MLflow runs.

Most tests drive the sweep's plumbing with a fake learner (FAKE_LEARNER in tests/helpers/sweep.py: same contract as
rlhp_core.train.run_training, writes the same files, takes milliseconds). The end-to-end tests
at the bottom run ``python -m bench.sweep --preset quick`` with the real learner, made tiny.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.sweep import env, load_fake, write_fake_worker


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    return load_fake(tmp_path_factory.mktemp("fake"))


def small(sweep_dir: Path, *more: str) -> list[str]:
    """A CartPole-preset sweep (study 'quick'): 2 budgets x 2 seeds + 2 true-reward cells, 4 metric rows each (40k steps: the
    fewest that allow both budgets' labels, 200 comparisons of 25-step segments; the fake learner takes no time)."""
    return ["--preset", "cartpole", "--study", "quick", "--dir", str(sweep_dir), "--env-steps", "40000", "--set",
            "log_every=10000", "--seeds", "2", *more]


def load(sweep_dir: Path, study: str = "quick"):
    import optuna

    return optuna.load_study(study_name=study, storage=f"sqlite:///{sweep_dir / 'optuna.db'}")


def client_for(sweep_dir: Path):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{sweep_dir / 'mlflow.db'}")


def trial_runs(sweep_dir: Path, study: str = "quick") -> dict:
    client = client_for(sweep_dir)
    exp = client.get_experiment_by_name(study)
    return {r.info.run_id: r for r in client.search_runs([exp.experiment_id], "tags.`rlhp.role` = 'trial'")}


# ================================================================================================
# Bad input: exit status 2 and a message naming the value, before anything runs
# ================================================================================================
def test_help_documents_presets_methods_and_the_initial_label_rule(capsys):
    from bench.sweep import main

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for word in ("quick", "enduro-budgets", "hparams", "random-queries", "no-ensemble", "offline-labels",
                 "min(500, ceil(25% of the budget))", "--storage", "--tracking-uri"):
        assert word in out


@pytest.mark.parametrize("argv, match", [
    (["--preset", "nope"], "invalid choice: 'nope'"),
    (["--set", "reward_lr_typo=1"], "reward_lr_typo: unknown parameter"),
    (["--set", "num_envs=many"], "num_envs=many: expected int"),
    (["--set", "seed=3"], "the sweep owns this parameter"),
    (["--methods", "rlhp,magic"], "unknown method 'magic'"),
    (["--budgets", "50,x"], "expected comma-separated integers"),
    (["--set", "initial_labels=100", "--budgets", "50"], "label_budget 50 is below initial_labels 100"),
    (["--env", "NoSuchEnv-v9"], "NoSuchEnv-v9"),
    (["--teacher", "nonsense"], "unknown teacher preset 'nonsense'"),
    (["--teacher", "human"], "needs a scripted teacher"),
    (["--trials", "5"], "--trials applies to search presets"),
    (["--preset", "hparams", "--seeds", "3"], "--seeds applies to grid presets"),
    (["--storage", "redis://localhost/0"], "scheme 'redis'"),
])
def test_bad_input_exits_2_before_anything_runs(tmp_path, capsys, argv, match):
    from bench.sweep import main

    assert main(["--dir", str(tmp_path / "sweep"), *argv]) == 2
    assert match in capsys.readouterr().err
    assert not (tmp_path / "sweep" / "optuna.db").exists()


def test_unreachable_storage_or_tracking_server_exits_2(tmp_path, capsys):
    from bench.sweep import main

    with socket_free_port() as port:
        assert main(["--dir", str(tmp_path / "a"), "--storage", f"postgresql://u:secret@127.0.0.1:{port}/db"]) == 2
        err = capsys.readouterr().err
        assert "cannot reach storage" in err and "secret" not in err and "u:***@" in err
        assert main(["--dir", str(tmp_path / "b"), "--tracking-uri", f"http://127.0.0.1:{port}"]) == 2
        assert "cannot reach MLflow server" in capsys.readouterr().err


class socket_free_port:
    """A localhost port with nothing listening on it."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def __exit__(self, *exc):
        return False


def test_the_command_line_reports_bad_input_with_exit_status_2(tmp_path):
    r = subprocess.run([sys.executable, "-m", "bench.sweep", "--dir", str(tmp_path / "s"), "--budgets", "10",
                        "--set", "initial_labels=20"], env=env(), cwd=tmp_path, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2, r.stderr
    assert "label_budget 10 is below initial_labels 20" in r.stderr


# ================================================================================================
# The objective
# ================================================================================================
def _objective(tmp_path: Path, fake, *argv: str):
    from bench.sweep import Objective, build_parser, settings_from_args
    from bench.tracking import Tracker

    argv = list(small(tmp_path / "sweep", *argv))
    settings = settings_from_args(build_parser().parse_args(argv), argv)
    settings.sweep_dir.mkdir(parents=True)
    tracker = Tracker(settings.tracking_uri, "objective-test", None)
    parent, _ = tracker.start_run("parent", tags={"rlhp.role": "sweep"})
    return Objective(settings, tracker, parent, fake, progress=False), tracker


def test_objective_with_a_fixed_trial_logs_one_finished_run(tmp_path, fake):
    import optuna

    objective, tracker = _objective(tmp_path, fake)
    trial = optuna.trial.FixedTrial({"method": "rlhp", "label_budget": 50, "seed": 1})
    value = objective(trial)
    assert value == pytest.approx(100.0 + 1 + 0.5)  # the fake learner's final return
    run = tracker.client.get_run(trial.user_attrs["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.parentRunId"] == objective.parent_run
    assert run.data.params["label_budget"] == "50" and run.data.params["seed"] == "1"
    assert run.data.params["initial_labels"] == "13"  # resolved: ceil(25% of 50)
    assert run.data.params["env/frameskip"] == "1"
    steps = [m.step for m in tracker.client.get_metric_history(run.info.run_id, "charts/episodic_return")]
    assert steps == [10_000, 20_000, 30_000, 40_000]
    assert trial.user_attrs["cell"] == "rlhp-b50-s1" and trial.user_attrs["labels"] == 50


class _AlwaysPrune(__import__("optuna").pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        return True


def test_pruned_trial_stops_the_learner_and_its_run_ends_killed(tmp_path, fake):
    import optuna

    objective, tracker = _objective(tmp_path, fake)
    study = optuna.create_study(direction="maximize", pruner=_AlwaysPrune())
    study.enqueue_trial({"method": "rlhp", "label_budget": 50, "seed": 0})
    study.optimize(objective, n_trials=1)
    t = study.trials[0]
    assert t.state == optuna.trial.TrialState.PRUNED
    assert t.intermediate_values == {10_000: pytest.approx(25.5)}  # reported, then pruned at the first report
    assert t.user_attrs["env_steps"] == 10_000  # should_stop stopped the learner there
    run = tracker.client.get_run(t.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED"
    assert run.data.tags["rlhp.stop_reason"] == "pruned at step 10000"


def test_crashed_trial_run_ends_failed(tmp_path, fake, monkeypatch):
    import optuna

    objective, tracker = _objective(tmp_path, fake)
    monkeypatch.setenv("FAKE_CRASH", "rlhp-b50-s0")
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"method": "rlhp", "label_budget": 50, "seed": 0})
    study.optimize(objective, n_trials=1, catch=(RuntimeError,))
    t = study.trials[0]
    assert t.state == optuna.trial.TrialState.FAIL
    run = tracker.client.get_run(t.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED"
    assert "crashed on purpose" in run.data.tags["rlhp.error"]


# ================================================================================================
# Whole sweeps (in-process, fake learner)
# ================================================================================================
@pytest.fixture(scope="module")
def grid_sweep(tmp_path_factory, fake):
    from bench.sweep import main

    d = tmp_path_factory.mktemp("grid") / "sweep"
    rc = main(small(d), train_fn=fake, progress=False)
    assert rc == 0
    return d


CELLS = {"rlhp-b50-s0", "rlhp-b50-s1", "rlhp-b200-s0", "rlhp-b200-s1", "true-reward-s0", "true-reward-s1"}


def test_grid_sweep_runs_every_cell_once_as_a_nested_mlflow_run(grid_sweep):
    import optuna

    study = load(grid_sweep)
    trials = study.get_trials()
    assert sorted(t.user_attrs["cell"] for t in trials) == sorted(CELLS)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert study.user_attrs["command"].startswith("python -m bench.sweep --preset cartpole --study quick --dir ")
    runs = trial_runs(grid_sweep)
    assert len(runs) == len(CELLS)
    parent = study.user_attrs["mlflow_parent_run_id"]
    client = client_for(grid_sweep)
    assert client.get_run(parent).info.status == "FINISHED"
    assert client.get_run(parent).data.tags["rlhp.role"] == "sweep"
    for t in trials:  # cross-linked both ways
        run = runs[t.user_attrs["mlflow_run_id"]]
        assert run.data.tags["optuna.trial_number"] == str(t.number)
        assert run.data.tags["mlflow.parentRunId"] == parent
        assert run.info.status == "FINISHED"
        assert run.data.metrics["trial/final_return"] == pytest.approx(t.value)
    info = json.loads((grid_sweep / "sweep.json").read_text())
    assert info["study"] == "quick" and info["mlflow_parent_run_id"] == parent


def test_trial_runs_hold_params_stepped_metrics_and_artifacts(grid_sweep):
    client = client_for(grid_sweep)
    by_cell = {r.data.tags["rlhp.cell"]: r for r in trial_runs(grid_sweep).values()}
    run = by_cell["rlhp-b200-s1"]
    p = run.data.params
    assert (p["env_id"], p["algo"], p["label_budget"], p["seed"]) == ("CartPole-v1", "ppo", "200", "1")
    assert p["method"] == "rlhp"
    assert p["reward"] == "preferences" and p["query_selection"] == "disagreement" and p["ensemble_size"] == "3"
    assert {"env/frameskip", "env/sticky_actions", "env/ale_py", "sticky_actions", "frameskip"} <= set(p)
    for key in ("charts/episodic_return", "labels/answered", "reward/pred_true_corr", "charts/SPS"):
        history = client.get_metric_history(run.info.run_id, key)
        assert [m.step for m in history] == [10_000, 20_000, 30_000, 40_000], key
    labels = client.get_metric_history(run.info.run_id, "labels/answered")
    assert [m.value for m in labels] == [50, 100, 150, 200]
    art = {a.path for folder in ("plots", "labels", "model", "run")
           for a in client.list_artifacts(run.info.run_id, folder)}
    assert {"plots/learning_curves.png", "labels/labels.sqlite", "model/reward_model.pt", "run/config.json",
            "run/metrics.csv", "run/summary.json"} <= art
    assert by_cell["true-reward-s0"].data.params["reward"] == "true"
    assert by_cell["true-reward-s0"].data.params["label_budget"] == "0"


def test_rerunning_resumes_and_a_bigger_grid_only_adds_cells(grid_sweep, fake):
    import optuna

    from bench.sweep import main

    assert main(small(grid_sweep), train_fn=fake, progress=False) == 0
    assert len(load(grid_sweep).trials) == len(CELLS)  # nothing redone
    assert main(small(grid_sweep)[:-1] + ["3", "--budgets", "50,200"], train_fn=fake, progress=False) == 0
    trials = load(grid_sweep).get_trials()
    cells = [t.user_attrs["cell"] for t in trials]
    assert sorted(cells) == sorted(CELLS | {"rlhp-b50-s2", "rlhp-b200-s2", "true-reward-s2"})
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert len(trial_runs(grid_sweep)) == len(cells)


def test_rerunning_with_other_settings_is_refused(grid_sweep, fake, capsys):
    from bench.sweep import main

    argv = small(grid_sweep)
    argv[argv.index("--env-steps") + 1] = "80000"
    assert main(argv, train_fn=fake, progress=False) == 2
    err = capsys.readouterr().err
    assert "env_steps: study has 40000, asked 80000" in err and "--study NAME" in err


def test_a_dry_run_estimates_from_the_studys_own_finished_trials_and_creates_nothing(grid_sweep, tmp_path, capsys):
    from bench.sweep import main

    capsys.readouterr()
    assert main(small(grid_sweep) + ["--dry-run"], progress=False) == 0
    out = capsys.readouterr().out
    assert "Estimated wall time:" in out and "steps/s with labels (this study's finished trials)" in out
    fresh = tmp_path / "fresh"
    assert main(small(fresh) + ["--dry-run"], progress=False) == 0
    out = capsys.readouterr().out
    assert "this study's finished trials" not in out and "Estimated wall time: unknown" in out
    assert not fresh.exists()


@pytest.mark.slow  # crash and resume: 18 s on a busy 2-core box
def test_interrupted_and_crashed_cells_are_resumed_by_rerunning(tmp_path, fake, monkeypatch, capsys):
    import optuna

    from bench.sweep import main

    d = tmp_path / "sweep"
    argv = small(d, "--seeds", "1")
    monkeypatch.setenv("FAKE_INTERRUPT", "rlhp-b50-s0")  # Ctrl-C during the first cell
    assert main(argv, train_fn=fake, progress=False) == 130
    first = load(d).trials[0]
    assert first.state == optuna.trial.TrialState.FAIL and first.user_attrs["interrupted"]
    run_id = first.user_attrs["mlflow_run_id"]
    assert client_for(d).get_run(run_id).info.status == "KILLED"

    monkeypatch.delenv("FAKE_INTERRUPT")
    monkeypatch.setenv("FAKE_CRASH", "true-reward-s0")
    assert main(argv, train_fn=fake, progress=False) == 1  # a trial failed
    trials = load(d).get_trials()
    resumed = [t for t in trials if t.user_attrs.get("cell") == "rlhp-b50-s0" and t.state.name == "COMPLETE"]
    assert len(resumed) == 1 and resumed[0].user_attrs["mlflow_run_id"] == run_id  # same MLflow run, reopened
    assert client_for(d).get_run(run_id).info.status == "FINISHED"
    state = json.loads((d / "trials" / "rlhp-b50-s0" / "state.json").read_text())
    assert state["calls"] == 2  # the learner was called again on the same run directory

    monkeypatch.delenv("FAKE_CRASH")
    assert main(argv, train_fn=fake, progress=False) == 0
    trials = load(d).get_trials()
    complete = sorted(t.user_attrs["cell"] for t in trials if t.state.name == "COMPLETE")
    assert complete == ["rlhp-b200-s0", "rlhp-b50-s0", "true-reward-s0"]  # each exactly once
    statuses = {r.data.tags["rlhp.cell"]: r.info.status for r in trial_runs(d).values()}
    assert statuses == {"rlhp-b50-s0": "FINISHED", "rlhp-b200-s0": "FINISHED", "true-reward-s0": "FINISHED"}


def test_hparams_search_runs_tpe_trials_and_logs_their_params(tmp_path, fake):
    from bench.sweep import main

    d = tmp_path / "sweep"
    argv = ["--preset", "hparams", "--dir", str(d), "--env-steps", "40000", "--set", "log_every=10000",
            "--trials", "3", "--set", "reward_batch=16"]
    assert main(argv, train_fn=fake, progress=False) == 0
    study = load(d, "hparams")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    runs = trial_runs(d, "hparams")
    for t in study.trials:
        assert {"reward_lr", "label_schedule_constant", "segment_length", "initial_fraction"} <= set(t.params)
        assert "reward_batch" not in t.params  # fixed by --set: not searched
        p = runs[t.user_attrs["mlflow_run_id"]].data.params
        assert float(p["reward_lr"]) == pytest.approx(t.params["reward_lr"])
        assert p["segment_length"] == str(t.params["segment_length"]) and p["reward_batch"] == "16"
    assert main(argv[:-4] + ["--trials", "4", "--set", "reward_batch=16"], train_fn=fake, progress=False) == 0
    assert len(load(d, "hparams").trials) == 4


def _start_hanging_worker(tmp_path: Path, d: Path, argv: list[str]) -> subprocess.Popen:
    """A worker process whose trial (cell rlhp-b50-s0) hangs half-way, heartbeat going, until killed."""
    worker = write_fake_worker(tmp_path)
    proc = subprocess.Popen([sys.executable, str(worker), *argv], env=env(FAKE_HANG="rlhp-b50-s0"), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    state = d / "trials" / "rlhp-b50-s0" / "state.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if state.exists() and json.loads(state.read_text())["env_steps"] >= 20_000:
            break
        time.sleep(0.3)
    assert proc.poll() is None, proc.communicate()[0]
    return proc


@pytest.mark.slow  # kill -9 a worker, wait out its heartbeat: 18 s on a busy 2-core box
def test_a_killed_workers_trial_is_retried_and_resumes_its_run(tmp_path, fake):
    """kill -9 a worker mid-trial; after the grace period the rerun fails it and runs a retry
    that reopens the same run directory and MLflow run."""
    import optuna

    from bench.sweep import main

    d = tmp_path / "sweep"
    argv = small(d, "--seeds", "1", "--methods", "rlhp", "--budgets", "50", "--heartbeat-interval", "1",
                 "--grace-period", "3")
    proc = _start_hanging_worker(tmp_path, d, argv)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert load(d).trials[0].state == optuna.trial.TrialState.RUNNING
    time.sleep(4)  # > grace period: the heartbeat is stale

    assert main(argv, train_fn=fake, progress=False) == 0
    trials = load(d).get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    retry = trials[1]
    assert retry.system_attrs["failed_trial"] == 0 and retry.user_attrs["run_key"] == "rlhp-b50-s0"
    assert retry.user_attrs["mlflow_run_id"] == trials[0].user_attrs["mlflow_run_id"]
    run = client_for(d).get_run(retry.user_attrs["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["optuna.retry_of"] == "0"
    summary = json.loads((d / "trials" / "rlhp-b50-s0" / "summary.json").read_text())
    assert summary["resumed_from"] >= 20_000  # the learner continued where the killed worker left off


@pytest.mark.slow  # kill -9 a worker: 17 s on a busy 2-core box
def test_a_rerun_within_the_grace_period_waits_for_the_dead_workers_trial(tmp_path, fake, capsys):
    """kill -9 a worker and rerun at once: its trial is still RUNNING (its heartbeat is fresh), but its
    worker holds no lock, so the rerun says so, waits for the heartbeat to go stale and retries it,
    rather than stopping with "other workers are running" when there are none."""
    import optuna

    from bench.sweep import main

    d = tmp_path / "sweep"
    argv = small(d, "--seeds", "1", "--methods", "rlhp", "--budgets", "50", "--heartbeat-interval", "1",
                 "--grace-period", "12")  # long enough that the rerun starts inside it on a busy box
    proc = _start_hanging_worker(tmp_path, d, argv)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert load(d).trials[0].state == optuna.trial.TrialState.RUNNING

    assert main(argv, train_fn=fake, progress=False) == 0
    out = capsys.readouterr().out
    assert f"trial 0 (cell rlhp-b50-s0) is RUNNING, but its worker {socket.gethostname()}:{proc.pid} is gone" in out
    assert "other RUNNING trials" not in out
    assert [t.state.name for t in load(d).get_trials()] == ["FAIL", "COMPLETE"]
    assert not list(d.glob(".quick.worker.*"))  # the dead worker's liveness file is cleared, this one's too


@pytest.mark.slow  # kill -9 a worker: 11 s on a busy 2-core box
def test_a_worker_with_nothing_left_names_the_live_workers_still_running(tmp_path, fake, capsys):
    from bench.sweep import main

    d = tmp_path / "sweep"
    argv = small(d, "--seeds", "1", "--methods", "rlhp", "--budgets", "50", "--heartbeat-interval", "1",
                 "--grace-period", "3")
    proc = _start_hanging_worker(tmp_path, d, argv)
    try:
        assert main(argv, train_fn=fake, progress=False) == 0  # nothing for this worker; it does not wait
        out = capsys.readouterr().out
        assert f"trial 0 (cell rlhp-b50-s0): worker {socket.gethostname()}:{proc.pid} runs" in out
        assert "is gone" not in out
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# ================================================================================================
# End to end: the real learner, `python -m bench.sweep --preset quick` made tiny
# ================================================================================================
@pytest.mark.slow
def test_quick_preset_end_to_end_with_the_learner(tmp_path):
    import math

    import optuna

    d = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "bench.sweep", "--preset", "cartpole", "--study", "quick", "--dir", str(d), "--env-steps", "3072",
           "--budgets", "20", "--seeds", "1", "--set", "num_envs=2", "--set", "n_steps=128",
           "--set", "log_every=512", "--set", "reward_update_every=512", "--set", "pretrain_epochs=5"]
    r = subprocess.run(cmd, env=env(), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"mlflow ui --backend-store-uri sqlite:///{d / 'mlflow.db'}" in r.stdout
    assert "python -m bench.report" in r.stdout

    study = load(d)
    trials = study.get_trials()
    assert sorted(t.user_attrs["cell"] for t in trials) == ["rlhp-b20-s0", "true-reward-s0"]
    assert all(t.state == optuna.trial.TrialState.COMPLETE and math.isfinite(t.value) for t in trials)
    assert study.user_attrs["command"] == "python -m bench.sweep " + " ".join(cmd[3:])

    client = client_for(d)
    runs = trial_runs(d)
    for t in trials:
        run = runs[t.user_attrs["mlflow_run_id"]]
        assert run.info.status == "FINISHED"
        assert run.data.tags["optuna.trial_number"] == str(t.number)
        p = run.data.params
        assert p["env_id"] == "CartPole-v1" and p["total_steps"] == "3072" and p["num_envs"] == "2"
        assert any(k.startswith("env/") for k in p)  # the env's own description (env_info)
        returns = client.get_metric_history(run.info.run_id, "charts/episodic_return")
        steps = [m.step for m in returns]
        assert len(steps) >= 3 and steps == sorted(steps) and steps[-1] <= 3072 and all(s > 0 for s in steps)
        assert client.get_metric_history(run.info.run_id, "charts/SPS")
        art = {a.path for folder in ("plots", "run", "model", "labels")
               for a in client.list_artifacts(run.info.run_id, folder)}
        assert {"plots/learning_curves.png", "run/metrics.csv", "run/config.json"} <= art
        if t.user_attrs["cell"].startswith("rlhp"):
            assert {"model/reward_model.pt", "labels/labels.sqlite"} <= art
            labels = [m.value for m in client.get_metric_history(run.info.run_id, "labels/answered")]
            assert labels == sorted(labels) and 5 <= labels[-1] <= 20  # initial 5 (25% of 20) .. budget
            assert client.get_metric_history(run.info.run_id, "reward/pred_true_corr")
            assert t.user_attrs["labels"] == labels[-1]

    # rerunning the same command resumes: nothing left to do
    r2 = subprocess.run(cmd, env=env(), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert "2/2 cells done" in r2.stdout and len(load(d).trials) == 2

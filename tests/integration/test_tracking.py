"""MLflow tracking (bench/tracking.py): what a user of MLflow expects to find.

The experiment kind (MLflow 3's training view, not GenAI), the standard source tags (command,
user, git commit), artifacts that load (reward model, policy, config, metrics), sweep trials and
single ``python -m rlhp_core.train --tracking-uri`` runs, and how a run ends (FINISHED, FAILED,
KILLED). Every database and artifact store lives under pytest's tmp_path.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def client(tmp_path: Path):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri(tmp_path))


def artifacts(c, run_id: str, path: str | None = None) -> set[str]:
    out = set()
    for a in c.list_artifacts(run_id, path):
        out |= artifacts(c, run_id, a.path) if a.is_dir else {a.path}
    return out


def git_head() -> str | None:
    r = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else None


# ================================================================================================
# A stand-in learner: run_training's contract and files, a real checkpoint, no learning
# ================================================================================================
def fake_training(cfg, *, on_metrics=None, should_stop=None, labeler=None, crash_after: int | None = None,
                  interrupt: bool = False):
    import gymnasium as gym
    import numpy as np
    import torch

    from rlhp_core.checkpoint import save_checkpoint
    from rlhp_core.config import resolve, save_config
    from rlhp_core.rl import make_algo
    from rlhp_core.rl_settings import RLSettings

    cfg = resolve(cfg)
    run = Path(cfg.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run)
    (run / "env_info.json").write_text(json.dumps({"env_id": cfg.env_id, "frameskip": 1, "num_envs": cfg.num_envs}))
    step, n = 0, 0
    with open(run / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["env_steps", "charts/episodic_return", "charts/SPS"])
        while step < cfg.total_steps:
            step = min(cfg.total_steps, step + cfg.log_every)
            m = {"charts/episodic_return": 10.0 + step / 1000, "charts/SPS": 1000.0}
            w.writerow([step, m["charts/episodic_return"], m["charts/SPS"]])
            if on_metrics is not None:
                on_metrics(step, m)
            n += 1
            if crash_after is not None and n >= crash_after:
                raise RuntimeError("fake learner crashed on purpose")
            if interrupt and n >= 2:
                raise KeyboardInterrupt
    algo = make_algo("ppo", (4,), np.float32, gym.spaces.Discrete(2),
                     RLSettings(lr=3e-4, n_steps=8, num_envs=1, total_steps=cfg.total_steps), "cpu", cfg.seed)
    save_checkpoint(run, step, {"env_id": cfg.env_id, "algo": algo.state_dict()})
    if cfg.reward == "preferences":
        torch.save({"signature": "fake", "weights": torch.zeros(3)}, run / "reward_model.pt")
    (run / "status.json").write_text(json.dumps({"env_steps": step}))
    return {"final_return": 10.0 + step / 1000, "episodes": 3, "env_steps": step, "labels": cfg.label_budget,
            "wall_time_s": 0.01, "sps": 1000.0, "run_dir": str(run), "stopped_early": False,
            "env_info": {"env_id": cfg.env_id, "frameskip": 1}}


def tiny_cfg(run_dir: Path, **kw):
    from rlhp_core.config import TrainConfig

    base = dict(env_id="CartPole-v1", algo="ppo", num_envs=2, n_steps=64, total_steps=1_536, label_budget=24,
                pretrain_epochs=3, reward_update_every=256, log_every=256, checkpoint_every=512, segment_length=10,
                run_dir=str(run_dir), progress=False)
    base.update(kw)
    return TrainConfig(**base)


# ================================================================================================
# Experiments and tags
# ================================================================================================
def test_experiments_are_tagged_for_mlflows_training_view(tmp_path):
    from mlflow import MlflowClient

    from bench.tracking import EXPERIMENT_KIND_TAG, Tracker

    t = Tracker(uri(tmp_path), "made-here", None)
    exp = t.client.get_experiment(t.experiment_id)
    assert exp.tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
    assert exp.artifact_location == (tmp_path / "mlartifacts").as_uri()  # next to the database, not ./mlruns

    c = MlflowClient(tracking_uri=uri(tmp_path))
    older = c.create_experiment("made-by-an-older-version")
    chosen = c.create_experiment("kind-chosen-in-the-ui", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    Tracker(uri(tmp_path), "made-by-an-older-version", None)
    Tracker(uri(tmp_path), "kind-chosen-in-the-ui", None)
    assert c.get_experiment(older).tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
    assert c.get_experiment(chosen).tags[EXPERIMENT_KIND_TAG] == "genai_development"


def test_runs_carry_mlflows_source_tags(tmp_path):
    from bench.tracking import Tracker

    t = Tracker(uri(tmp_path), "tags", None, program="python -m bench.sweep",
                command="python -m bench.sweep --dir /somewhere/deep")
    run_id, _ = t.start_run("rlhp-b50-s0", tags={"rlhp.role": "trial"})
    tags = t.client.get_run(run_id).data.tags
    assert tags["mlflow.source.name"] == "python -m bench.sweep"  # the UI shows what follows the last '/'
    assert tags["mlflow.source.type"] == "LOCAL"
    assert tags["mlflow.user"]
    assert tags["rlhp.command"] == "python -m bench.sweep --dir /somewhere/deep"
    assert tags["mlflow.runName"] == "rlhp-b50-s0" and tags["rlhp.role"] == "trial"
    head = git_head()
    if head is not None:  # a git checkout (not an installed wheel)
        assert tags["mlflow.source.git.commit"] == head
        assert tags["mlflow.source.git.dirty"] in ("true", "false")
    # a reopened run (a retried trial) is renamed when the naming changed
    again, reopened = t.start_run("renamed", tags={}, reuse=run_id)
    assert (again, reopened) == (run_id, True)
    assert t.client.get_run(run_id).info.run_name == "renamed"


# ================================================================================================
# Sweeps: the parent run and every trial run
# ================================================================================================
@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    import contextlib
    import io

    from bench.sweep import main

    d = tmp_path_factory.mktemp("sweep") / "s"
    seen = []

    def train(cfg, **kw):
        seen.append(cfg)
        return fake_training(cfg, **kw)

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["--preset", "cartpole", "--study", "tagged", "--dir", str(d), "--methods", "rlhp,true-reward",
                   "--budgets", "50", "--seeds", "1", "--env-steps", "40000"], train_fn=train, progress=False)
    assert rc == 0, out.getvalue()
    return d, seen, out.getvalue()


@pytest.mark.slow  # the sweep fixture: two trials of 200 logged rows, ~50 s on a busy 2-core box
def test_sweep_runs_have_source_tags_meaningful_names_and_the_training_view(sweep):
    from mlflow import MlflowClient

    d, _, printed = sweep
    c = MlflowClient(tracking_uri=f"sqlite:///{d / 'mlflow.db'}")
    exp = c.get_experiment_by_name("tagged")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = c.search_runs([exp.experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["rlhp-b50-s0", "tagged (sweep)", "true-reward-s0"]
    head = git_head()
    for r in runs:
        tags = r.data.tags
        assert tags["mlflow.source.name"] == "python -m bench.sweep"
        assert tags["mlflow.source.type"] == "LOCAL" and tags["mlflow.user"]
        assert tags["rlhp.command"].startswith("python -m bench.sweep --preset cartpole --study tagged")
        if head is not None:
            assert tags["mlflow.source.git.commit"] == head
    # the printout opens MLflow in its training view, and names the dashboard extra
    assert f"#/experiments/{exp.experiment_id}?workflowType=machine_learning" in printed
    assert f"optuna-dashboard sqlite:///{d / 'optuna.db'}" in printed and ".[dashboard]" in printed


@pytest.mark.slow
def test_sweep_trials_log_about_200_points_per_curve(sweep):
    from mlflow import MlflowClient

    d, seen, _ = sweep
    assert {cfg.log_every for cfg in seen} == {40_000 // 200}
    c = MlflowClient(tracking_uri=f"sqlite:///{d / 'mlflow.db'}")
    run = next(r for r in c.search_runs([c.get_experiment_by_name("tagged").experiment_id])
               if r.info.run_name == "rlhp-b50-s0")
    steps = [m.step for m in c.get_metric_history(run.info.run_id, "charts/episodic_return")]
    assert len(steps) == 200 and steps[-1] == 40_000


@pytest.mark.slow
def test_sweep_trials_log_a_model_a_user_can_load(sweep, tmp_path):
    import torch
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts

    d, _, _ = sweep
    tracking = f"sqlite:///{d / 'mlflow.db'}"
    c = MlflowClient(tracking_uri=tracking)
    runs = {r.info.run_name: r for r in c.search_runs([c.get_experiment_by_name("tagged").experiment_id])}
    rlhp, baseline = runs["rlhp-b50-s0"], runs["true-reward-s0"]
    art = artifacts(c, rlhp.info.run_id)
    ckpt = "model/checkpoints/step-000000040000"
    assert {"model/config.json", "model/reward_model.pt", "model/policy.pt", f"{ckpt}/state.pt", f"{ckpt}/COMPLETE",
            "run/config.json", "run/env_info.json", "run/metrics.csv", "run/summary.json"} <= art
    assert "model/reward_model.pt" not in artifacts(c, baseline.info.run_id)  # no reward model to log
    assert "model/policy.pt" in artifacts(c, baseline.info.run_id)

    # as bench/README.md says: download model/, then torch.load (tensors only) or the project's loaders
    model = Path(download_artifacts(run_id=rlhp.info.run_id, artifact_path="model", tracking_uri=tracking,
                                    dst_path=str(tmp_path)))
    policy = torch.load(model / "policy.pt", weights_only=True)
    assert (policy["format"], policy["algo"], policy["env_id"], policy["env_steps"]) == (
        "rlhp-policy", "ppo", "CartPole-v1", 40_000)
    import gymnasium as gym
    import numpy as np

    from rlhp_core.checkpoint import load_latest
    from rlhp_core.rl import make_algo
    from rlhp_core.rl_settings import RLSettings

    algo = make_algo(policy["algo"], (4,), np.float32, gym.spaces.Discrete(2), RLSettings(**policy["settings"]),
                     "cpu", 0)
    algo.net.load_state_dict(policy["net"])
    assert algo.predict(np.zeros(4, np.float32)) in (0, 1)
    assert load_latest(model)["step"] == 40_000  # the logged checkpoint verifies (its COMPLETE record)


def test_the_artifact_size_cap_skips_the_checkpoint_whole(tmp_path):
    from bench.tracking import Tracker

    run = tmp_path / "run"
    fake_training(tiny_cfg(run, total_steps=512))
    t = Tracker(uri(tmp_path), "capped", None)
    run_id, _ = t.start_run("capped", tags={})
    skipped = t.log_run_dir(run_id, run, max_mb=0.01, title="capped")  # 10 KB: config.json fits, the rest not
    art = artifacts(t.client, run_id)
    assert "run/config.json" in art and not any(a.startswith("model/checkpoints") for a in art)
    assert any(s.startswith("state.pt:") for s in skipped)
    assert "state.pt" in t.client.get_run(run_id).data.tags["rlhp.artifacts_skipped"]


# ================================================================================================
# One tracked run: python -m rlhp_core.train ... --tracking-uri URI
# ================================================================================================
TINY_FLAGS = ["--env-id", "CartPole-v1", "--algo", "ppo", "--num-envs", "2", "--n-steps", "64",
              "--total-steps", "768", "--label-budget", "8", "--pretrain-epochs", "2", "--reward-update-every", "256",
              "--log-every", "128", "--checkpoint-every", "512", "--segment-length", "10", "--no-progress"]


@pytest.mark.slow
def test_a_single_tracked_training_run(tmp_path, capsys):
    from rlhp_core.cli import main
    from rlhp_core.config import TrainConfig

    run_dir = tmp_path / "run"
    argv = [*TINY_FLAGS, "--run-dir", str(run_dir), "--tracking-uri", uri(tmp_path), "--experiment", "single"]
    assert main(argv) == 0
    assert "workflowType=machine_learning" in capsys.readouterr().err

    c = client(tmp_path)
    exp = c.get_experiment_by_name("single")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    (run,) = c.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "CartPole-v1-ppo-rlhp-b8-s0"
    tags = run.data.tags
    assert tags["mlflow.source.name"] == "python -m rlhp_core.train" and tags["mlflow.source.type"] == "LOCAL"
    assert tags["rlhp.command"].startswith("python -m rlhp_core.train --env-id CartPole-v1")
    assert tags["rlhp.run_dir"] == str(run_dir.resolve())
    if git_head() is not None:
        assert tags["mlflow.source.git.commit"] == git_head()
    params = run.data.params
    assert {f.name for f in dataclasses.fields(TrainConfig)} <= set(params)
    assert params["total_steps"] == "768" and params["label_budget"] == "8" and params["initial_labels"] == "2"
    assert params["env/env_id"] == "CartPole-v1"
    steps = [m.step for m in c.get_metric_history(run.info.run_id, "charts/SPS")]
    assert len(steps) >= 4 and steps == sorted(set(steps)) and steps[-1] == 768 and all(s % 128 == 0 for s in steps)
    assert c.get_metric_history(run.info.run_id, "labels/answered")[-1].value == 8
    assert run.data.metrics["summary/labels"] == 8
    assert {"model/config.json", "model/reward_model.pt", "model/policy.pt", "run/config.json", "run/env_info.json",
            "run/metrics.csv", "plots/learning_curves.png", "labels/labels.sqlite",
            "evaluation/agent.gif", "evaluation/evaluation.json"} <= artifacts(c, run.info.run_id)
    # the trained agent on video: a real GIF of CartPole's frames, and its episode's numbers
    from mlflow.artifacts import download_artifacts
    from PIL import Image

    ev_dir = Path(download_artifacts(run_id=run.info.run_id, artifact_path="evaluation", tracking_uri=uri(tmp_path),
                                     dst_path=str(tmp_path / "ev")))
    with Image.open(ev_dir / "agent.gif") as gif:
        assert gif.n_frames >= 8 and gif.size[0] >= 100  # CartPole 600x400 shown at a third
    ev = json.loads((ev_dir / "evaluation.json").read_text())
    assert ev["episodes"] == 1 and ev["deterministic"] and ev["length"]["mean"] >= gif.n_frames - 1
    assert run.data.metrics["eval/return"] == ev["return"]["mean"]
    # a point per episode, at the step it ended, as episodes.csv has them
    with open(run_dir / "episodes.csv", newline="") as f:
        episodes = list(csv.DictReader(f))
    history = c.get_metric_history(run.info.run_id, "charts/episode_return")
    assert len(episodes) > len(steps) and len(history) == len(episodes)
    assert sorted((h.step, h.value) for h in history) == sorted(
        (int(e["end_step"]), float(e["return"])) for e in episodes)

    # rerunning the command resumes the run directory, and with it the same MLflow run
    assert main(argv) == 0
    (again,) = c.search_runs([exp.experiment_id])
    assert again.info.run_id == run.info.run_id and again.info.status == "FINISHED"
    assert json.loads((run_dir / "mlflow_run.json").read_text())["run_id"] == run.info.run_id


def test_a_run_that_raises_ends_failed_and_ctrl_c_ends_killed(tmp_path):
    from bench.tracking import track_training

    with pytest.raises(RuntimeError, match="on purpose"):
        track_training(lambda cfg, **kw: fake_training(cfg, crash_after=2, **kw), tiny_cfg(tmp_path / "a"),
                       tracking_uri=uri(tmp_path), experiment="ends")
    with pytest.raises(KeyboardInterrupt):
        track_training(lambda cfg, **kw: fake_training(cfg, interrupt=True, **kw), tiny_cfg(tmp_path / "b"),
                       tracking_uri=uri(tmp_path), experiment="ends")
    summary = track_training(fake_training, tiny_cfg(tmp_path / "c"), tracking_uri=uri(tmp_path), experiment="ends")
    c = client(tmp_path)
    runs = {Path(r.data.tags["rlhp.run_dir"]).name: r for r in
            c.search_runs([c.get_experiment_by_name("ends").experiment_id])}
    failed, killed, done = runs["a"], runs["b"], runs["c"]
    assert failed.info.status == "FAILED"
    assert failed.data.tags["rlhp.error"] == "RuntimeError: fake learner crashed on purpose"
    assert [m.step for m in c.get_metric_history(failed.info.run_id, "charts/SPS")] == [256, 512]
    assert "run/config.json" in artifacts(c, failed.info.run_id)  # what there is, for the post-mortem
    assert killed.info.status == "KILLED" and "Ctrl-C" in killed.data.tags["rlhp.stop_reason"]
    assert done.info.status == "FINISHED" and summary["mlflow_run_id"] == done.info.run_id
    assert "workflowType=machine_learning" in summary["mlflow_page"]


def test_the_learners_own_refusal_ends_the_run_failed_with_exit_status_2(tmp_path, capsys):
    from rlhp_core.cli import main

    run_dir = tmp_path / "run"
    fake_training(tiny_cfg(run_dir, total_steps=256, seed=5))  # a run directory of another config
    rc = main([*TINY_FLAGS, "--run-dir", str(run_dir), "--tracking-uri", uri(tmp_path)])
    assert rc == 2 and "belongs to a different configuration" in capsys.readouterr().err
    c = client(tmp_path)
    (run,) = c.search_runs([c.get_experiment_by_name("rlhp-train").experiment_id])
    assert run.info.status == "FAILED" and "different configuration" in run.data.tags["rlhp.error"]
    assert not (run_dir / "mlflow_run.json").exists()  # the learner never took the directory: no run to reopen


@pytest.mark.parametrize("argv, match", [
    (["--experiment", "x"], "--experiment 'x': names the MLflow experiment of --tracking-uri, which is not given"),
    (["--tracking-uri", "ftp://host/x"], "--tracking-uri: tracking URI 'ftp://host/x' has scheme 'ftp'"),
    (["--tracking-uri", "sqlite:////no/such/folder/mlflow.db"], "a file in an existing folder"),
    (["--tracking-uri", "sqlite:///mlflow.db", "--experiment", " "], "--experiment '': expected a name"),
])
def test_bad_tracking_flags_exit_2_before_anything_is_written(tmp_path, capsys, argv, match):
    from rlhp_core.cli import main

    assert main([*TINY_FLAGS, "--run-dir", str(tmp_path / "run"), *argv]) == 2
    assert match in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_the_command_line_recorded_hides_secrets():
    from rlhp_core.cli import _command_line

    line = _command_line(["--token", "s3cret", "--port=8000", "--token=other", "--tracking-uri",
                          "http://me:pw@host:5000"])
    assert "s3cret" not in line and "other" not in line and "pw" not in line
    assert line == ("python -m rlhp_core.train --token '***' --port=8000 '--token=***' "
                    "--tracking-uri http://me:***@host:5000")

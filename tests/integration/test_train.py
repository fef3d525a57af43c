"""The learner end to end: determinism, resume, bad input, and an Enduro smoke run."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from rlhp_core.checkpoint import CheckpointError, CheckpointWarning, complete_checkpoints
from rlhp_core.config import TrainConfig
from rlhp_core.label_store import LabelStore, LabelStoreError
from rlhp_core.cli import train
from tests.helpers.learner import answers, episode_rows, make_learner, metrics_rows, tiny



@pytest.mark.slow  # three learner runs: 30 s on a busy 2-core box
def test_same_seed_same_labels_losses_parameters(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    train(tiny(a))
    train(tiny(b))
    assert answers(a) == answers(b) and len(answers(a)) == 24  # the label budget, exactly
    strip = lambda rows: [{k: v for k, v in r.items() if k != "charts/SPS"} for r in rows]  # noqa: E731
    assert strip(metrics_rows(a)) == strip(metrics_rows(b))
    sa = torch.load(complete_checkpoints(a)[-1] / "state.pt", weights_only=False)["state"]
    sb = torch.load(complete_checkpoints(b)[-1] / "state.pt", weights_only=False)["state"]
    for key in ("algo", "ensemble"):
        flat_a, flat_b = _tensors(sa[key]), _tensors(sb[key])
        assert len(flat_a) == len(flat_b) > 0
        for x, y in zip(flat_a, flat_b):
            assert torch.equal(x, y)
    c = tmp_path / "c"
    train(tiny(c, seed=1))
    assert answers(c) != answers(a)


def _tensors(obj) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for k in sorted(obj, key=str) for t in _tensors(obj[k])]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in _tensors(v)]
    return []


def test_resume_continues_every_counter(tmp_path):
    run = tmp_path / "run"
    first = train(tiny(run, total_steps=768))
    assert first["env_steps"] >= 768 and first["labels"] == 24  # a run ends with its whole budget asked
    labels_before = first["labels"]
    # predictions of the saved reward model are identical after reloading the run
    learner = make_learner(tiny(run, total_steps=1_536))
    obs = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
    act = np.zeros(32, dtype=np.int64)
    reloaded = learner.reward.ensemble.predict(obs, act)
    saved = torch.load(run / "reward_model.pt", weights_only=False)
    learner.reward.ensemble.load_state_dict(saved)
    np.testing.assert_array_equal(reloaded, learner.reward.ensemble.predict(obs, act))
    assert learner.env_steps == first["env_steps"] and learner.resume_count == 1
    learner.close()
    second = train(tiny(run, total_steps=1_536))
    assert second["env_steps"] >= 1_536
    assert labels_before == second["labels"] == 24  # the budget was spent: none asked twice
    steps = [int(r["env_steps"]) for r in metrics_rows(run)]
    assert steps == sorted(set(steps)), "no step is logged twice after a resume"


def test_resume_after_an_interrupted_pretraining(tmp_path, monkeypatch):
    """Ctrl-C while the reward model pretrains: the initial labels are in the store, the
    segment buffer (not checkpointed) is empty on resume; the rerun pretrains and trains."""
    from rlhp_core.fit_schedule import Plateau

    run = tmp_path / "run"
    real = Plateau.run

    def interrupted(self, *a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(Plateau, "run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(run, total_steps=768))
    assert complete_checkpoints(run) and len(answers(run)) == 6  # 25% of 24 up front
    monkeypatch.setattr(Plateau, "run", real)
    second = train(tiny(run, total_steps=768))
    assert second["env_steps"] >= 768 and second["labels"] > 6


def test_changed_config_refused_on_resume(tmp_path):
    run = tmp_path / "run"
    train(tiny(run, total_steps=256, label_budget=8, pretrain_epochs=1))
    with pytest.raises(ValueError, match="belongs to a different configuration .*seed: run has 0, asked 5"):
        make_learner(tiny(run, total_steps=256, label_budget=8, pretrain_epochs=1, seed=5))


def test_bad_input_names_the_value(tmp_path):
    with pytest.raises(ValueError, match="NoSuchEnv-v0"):
        make_learner(tiny(tmp_path / "x", env_id="NoSuchEnv-v0"))
    with pytest.raises(ValueError, match="label_budget 100 is below initial_labels 200"):
        make_learner(tiny(tmp_path / "y", label_budget=100, initial_labels=200))
    with pytest.raises(ValueError, match=r"segment_length 300 is longer than an episode of Pendulum-v1 \(200 steps\)"):
        make_learner(tiny(tmp_path / "z", env_id="Pendulum-v1", segment_length=300, total_steps=20_000))
    with pytest.raises(ValueError, match="algo 'dqn' is not one of"):
        make_learner(tiny(tmp_path / "w", algo="dqn"))


def test_damaged_checkpoint_falls_back_then_is_refused_and_labels_kept(tmp_path):
    run = tmp_path / "run"
    train(tiny(run, total_steps=512))
    n_labels = len(LabelStore(run / "labels.sqlite").current_answers())
    *_, previous, newest = complete_checkpoints(run)
    (newest / "state.pt").write_bytes(b"not a checkpoint")
    with pytest.warns(CheckpointWarning, match=f"(?s)resuming from .*{previous.name}.*{newest.name}: .*truncated"):
        learner = make_learner(tiny(run, total_steps=512))
    assert learner.env_steps == int(previous.name.split("-")[1])
    learner.close()
    for ckpt in complete_checkpoints(run):
        torch.save({"model": {}}, ckpt / "state.pt")  # fails the checksum before the format check
    with pytest.raises(CheckpointError, match="refusing to start over from step 0"):
        make_learner(tiny(run, total_steps=512))
    assert len(LabelStore(run / "labels.sqlite").current_answers()) == n_labels


def test_label_store_from_another_env_refused(tmp_path):
    other = tmp_path / "other.sqlite"
    LabelStore(other, env_id="Pendulum-v1", obs_shape=(3,))
    with pytest.raises(LabelStoreError, match="cannot seed labels for env 'CartPole-v1'"):
        make_learner(tiny(tmp_path / "run", seed_labels=str(other)))
    run = tmp_path / "run2"
    run.mkdir()
    LabelStore(run / "labels.sqlite", env_id="Pendulum-v1", obs_shape=(3,)).close()
    with pytest.raises(LabelStoreError, match="holds labels for env 'Pendulum-v1'"):
        make_learner(tiny(run))


def test_seed_labels_reused(tmp_path):
    src = tmp_path / "src"
    train(tiny(src, total_steps=512, label_budget=12))
    dst = tmp_path / "dst"
    learner = make_learner(tiny(dst, total_steps=512, label_budget=12, seed_labels=str(src / "labels.sqlite")))
    src_answers = LabelStore(src / "labels.sqlite").current_answers()
    assert learner.reward.store.num_queries() == len(src_answers) > 0
    assert sorted(a.query_id for a in learner.reward.store.current_answers()) == sorted(a.query_id for a in src_answers)
    learner.close()


def test_true_reward_baseline_has_no_labels(tmp_path):
    out = train(tiny(tmp_path / "t", reward="true", total_steps=512))
    assert out["labels"] == 0 and not (tmp_path / "t" / "labels.sqlite").exists()


def test_cli_reports_bad_values(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "rlhp_core.train", "--env-id", "CartPole-v1", "--label-budget", "10",
         "--initial-labels", "50", "--run-dir", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "label_budget 10 is below initial_labels 50" in proc.stderr


@pytest.mark.slow
def test_enduro_smoke_full_recipe(tmp_path):
    """A2C, 16 envs, 3-member CNN ensemble, the label schedule on: a few thousand steps."""
    cfg = TrainConfig(env_id="ALE/Enduro-v5", algo="a2c", total_steps=4_000, label_budget=40,
                      pretrain_epochs=2, reward_update_every=800, log_every=800, run_dir=str(tmp_path / "e"),
                      progress=False)
    out = train(cfg)
    assert out["env_steps"] >= 4_000
    store = LabelStore(tmp_path / "e" / "labels.sqlite")
    assert store.env_id == "ALE/Enduro-v5" and store.obs_shape == (4, 84, 84)
    answered = len(store.current_answers())
    assert 10 <= answered <= 40
    rows = metrics_rows(tmp_path / "e")
    # the metrics count the answers: a number in every row, never falling, none logged that the store lacks
    counts = [float(r["labels/answered"]) for r in rows]
    assert counts and counts == sorted(counts) and 0 < counts[-1] <= answered, counts
    info = out["env_info"]
    assert info["frameskip"] == 4 and info["sticky_actions"] == 0.0


@pytest.mark.parametrize("env_id,algo", [("Pendulum-v1", "a2c"), ("Hopper-v5", "ppo"), ("HalfCheetah-v5", "a2c")])
def test_continuous_and_mujoco_envs_run(tmp_path, env_id, algo):
    out = train(tiny(tmp_path / "r", env_id=env_id, algo=algo, total_steps=640, label_budget=8,
                            pretrain_epochs=1, n_steps=32 if algo == "a2c" else 64))
    assert out["env_steps"] >= 640 and out["labels"] >= 2
    rows = metrics_rows(tmp_path / "r")
    assert rows
    # the reward model trained and was validated: both columns hold numbers, each in its range
    accuracy, loss = float(rows[-1]["reward/val_accuracy"]), float(rows[-1]["losses/reward_train"])
    assert 0.0 <= accuracy <= 1.0, accuracy
    assert np.isfinite(loss) and loss > 0.0, loss


@pytest.mark.slow  # two Enduro learner runs
def test_enduro_resume_equals_the_uninterrupted_run(tmp_path):
    """The ale_loop backend saves its emulators (ALE cloneState with its RNG): an Enduro run stopped
    mid-episode and resumed continues those episodes, bit for bit (true reward: the reward model's
    resume is the test below)."""
    cfg = dict(env_id="ALE/Enduro-v5", reward="true", num_envs=2, n_steps=16, total_steps=384, log_every=64,
               sticky_actions=0.25, max_episode_steps=40)  # episodes that end and restart within the run
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    train(tiny(whole, **cfg))
    calls = iter(range(10**6))
    learner = make_learner(tiny(cut, **cfg), should_stop=lambda: next(calls) >= 5)
    assert learner.run()["stopped_early"]
    learner.close()
    resumed = make_learner(tiny(cut, **cfg))
    assert resumed._env_restored
    resumed.run()
    resumed.close()
    strip = lambda rows: [{k: v for k, v in r.items() if k != "charts/SPS"} for r in rows]  # noqa: E731
    assert strip(metrics_rows(cut)) == strip(metrics_rows(whole))
    assert episode_rows(cut) == episode_rows(whole) != []  # each episode once, as the uninterrupted run has it
    sa = torch.load(complete_checkpoints(whole)[-1] / "state.pt", weights_only=False)["state"]
    sb = torch.load(complete_checkpoints(cut)[-1] / "state.pt", weights_only=False)["state"]
    for x, y in zip(_tensors(sa["algo"]), _tensors(sb["algo"]), strict=True):
        assert torch.equal(x, y)


@pytest.mark.slow  # two learner runs per case: 28 s each on a busy 2-core box
@pytest.mark.parametrize("stop_after,fit", [(30, "sync"), (69, "sync"), (69, "background")])
def test_resume_equals_the_uninterrupted_run(tmp_path, stop_after, fit):
    """Stopped part-way (30: in the initial labels; 69: five updates into training) and resumed with
    the same command: the same labels, metrics and parameters as one uninterrupted run."""
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    train(tiny(whole, reward_fit=fit))
    calls = iter(range(10**6))
    learner = make_learner(tiny(cut, reward_fit=fit), should_stop=lambda: next(calls) >= stop_after)
    assert learner.run()["stopped_early"]
    learner.close()
    resumed = make_learner(tiny(cut, reward_fit=fit))
    assert resumed.resume_count == 1 and resumed._env_restored
    resumed.run()
    resumed.close()
    assert answers(cut) == answers(whole)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "charts/SPS"} for r in rows]  # noqa: E731
    assert strip(metrics_rows(cut)) == strip(metrics_rows(whole))
    assert episode_rows(cut) == episode_rows(whole) != []  # each episode once, as the uninterrupted run has it
    sa = torch.load(complete_checkpoints(whole)[-1] / "state.pt", weights_only=False)["state"]
    sb = torch.load(complete_checkpoints(cut)[-1] / "state.pt", weights_only=False)["state"]
    for key in ("algo", "ensemble"):
        for x, y in zip(_tensors(sa[key]), _tensors(sb[key]), strict=True):
            assert torch.equal(x, y)

"""Reward fits on a second thread: same result as a fit in place, no effect on the policy's
random stream, errors reach the loop, and whole runs stay reproducible and resumable."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from rlhp_core.background_fit import BackgroundFit
from rlhp_core.checkpoint import complete_checkpoints
from rlhp_core.reward import PreferenceDataset, RewardEnsemble
from rlhp_core.cli import train
from tests.helpers.learner import answers, make_learner, metrics_rows, tiny

torch.set_num_threads(1)
ATARI = (4, 84, 84)


def atari_dataset(n=24, t=4, seed=0):
    rng = np.random.default_rng(seed)
    ds = PreferenceDataset(capacity=100, n_members=3, seed=seed)
    for i in range(n):
        lo, ro = (rng.integers(0, 256, size=(t,) + ATARI, dtype=np.uint8) for _ in range(2))
        ds.add(lo, np.zeros(t, dtype=np.int64), ro, np.zeros(t, dtype=np.int64), ["left", "right"][i % 2], key=i)
    return ds


def test_a_background_fit_equals_a_fit_in_place_and_leaves_the_global_stream_alone():
    ds = atari_dataset()
    live = RewardEnsemble(ATARI, 6, dropout=0.5, reward_std=0.05, batch_size=8, eval_size=8, seed=3)
    in_place = copy.deepcopy(live)
    expected = in_place.train(ds, 40)
    fitter = BackgroundFit.copy_of(live)
    torch.manual_seed(11)
    fitter.start(ds, lambda ens, data: ens.train(data, 40))
    draws = torch.rand(2000)  # the policy's sampling, while the fit runs
    got = fitter.install(live)
    assert {k: v for k, v in got.items() if k != "seconds"} == {k: v for k, v in expected.items() if k != "seconds"}
    torch.manual_seed(11)
    assert torch.equal(draws, torch.rand(2000))
    for a, b in zip(live.net.state_dict().values(), in_place.net.state_dict().values()):
        assert torch.equal(a, b)
    assert live.train_steps == in_place.train_steps and list(live.l2) == list(in_place.l2)
    assert fitter.install(live) is None  # nothing pending any more


def test_a_failed_fit_is_raised_in_the_loop_and_one_fit_at_a_time():
    live = RewardEnsemble(ATARI, 6, seed=0)
    fitter = BackgroundFit.copy_of(live)
    fitter.start(PreferenceDataset(capacity=10, n_members=3), lambda ens, data: ens.train(data, 8))  # empty: train() refuses
    with pytest.raises(ValueError, match="empty"):
        fitter.install(live)
    ds = atari_dataset(n=6)
    fitter.start(ds, lambda ens, data: ens.train(data, 8))
    with pytest.raises(RuntimeError, match="not installed yet"):
        fitter.start(ds, lambda ens, data: ens.train(data, 8))
    fitter.install(live)


@pytest.mark.slow  # four learner runs: 65 s on a busy 2-core box
def test_background_runs_are_reproducible_and_resume(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    train(tiny(a, reward_fit="background"))
    train(tiny(b, reward_fit="background"))
    assert answers(a) == answers(b) and len(answers(a)) >= 12
    strip = lambda rows: [{k: v for k, v in r.items() if k != "charts/SPS"} for r in rows]  # noqa: E731
    assert strip(metrics_rows(a)) == strip(metrics_rows(b))
    assert len({r["losses/reward_train"] for r in metrics_rows(a)}) > 2  # background fits were installed
    sa = torch.load(complete_checkpoints(a)[-1] / "state.pt", weights_only=False)["state"]
    sb = torch.load(complete_checkpoints(b)[-1] / "state.pt", weights_only=False)["state"]
    assert "reward_trainer" in sa and sa["reward_fit_pending"] is None  # the last fit was installed
    for x, y in zip(sa["ensemble"]["net"].values(), sb["ensemble"]["net"].values()):
        assert torch.equal(x, y)
    # stopped between two refits with a fit in flight: the checkpoint holds it, the rerun installs it
    learner = make_learner(tiny(c, reward_fit="background"), should_stop=lambda: learner.reward.fitter is not None)
    try:
        first = learner.run()
    finally:
        learner.close()
    mid = torch.load(complete_checkpoints(c)[-1] / "state.pt", weights_only=False)["state"]
    assert first["stopped_early"] and mid["reward_fit_pending"] is not None
    second = train(tiny(c, reward_fit="background", total_steps=1_536))
    assert second["env_steps"] >= 1_536 and second["labels"] > first["labels"]
    with pytest.raises(ValueError, match="reward_fit 'later' is not one of"):
        train(tiny(tmp_path / "d", reward_fit="later"))


def test_auto_keeps_the_fit_mode_a_run_started_with(tmp_path):
    """reward_fit='auto' (the default) resumes a run in the mode it was started with; an explicit
    other mode is refused like any other changed setting."""
    train(tiny(tmp_path, reward_fit="background", total_steps=768))
    learner = make_learner(tiny(tmp_path))  # auto -> sync on CartPole, but the run is 'background'
    try:
        assert learner.cfg.reward_fit == "background"
    finally:
        learner.close()
    assert '"reward_fit": "background"' in (tmp_path / "config.json").read_text()
    with pytest.raises(ValueError, match="reward_fit: run has 'background', asked 'sync'"):
        make_learner(tiny(tmp_path, reward_fit="sync"))

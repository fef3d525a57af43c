"""Using a trained run outside the learner: the evaluate command, the load API, the reward wrapper.

One small CartPole preference run (100 labels, ~5 s) serves every test; Atari is checked on a
run directory holding an untrained checkpoint (no Atari training fits a test), which is enough
for what these tests look at: the observation pipeline, frames and video, r̂ on Atari frames.
"""

from __future__ import annotations

import json
import subprocess
import sys
import types
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from rlhp_core.checkpoint import save_checkpoint
from rlhp_core.config import TrainConfig, resolve, save_config
from rlhp_core.evaluate import (
    EVAL_SEED_OFFSET,
    evaluate,
    ffmpeg_executable,
    main,
    run_dir_of_mlflow_run,
)
from rlhp_core.reward import RewardEnsemble
from rlhp_core.reward_wrapper import LearnedRewardWrapper
from rlhp_core.rl import Rollout, make_algo
from rlhp_core.rl_settings import RLSettings
from rlhp_core.cli import train
from rlhp_core.trained import (
    RunError,
    load_policy,
    load_reward_model,
    make_env,
    make_vec_env_for,
)
from tests.helpers.learner import tiny

LEARN = {"num_envs": 4, "total_steps": 2_048, "label_budget": 100, "initial_labels": 80, "pretrain_epochs": 20,
         "reward_update_every": 512, "log_every": 512, "checkpoint_every": 2_048}
"""tiny() with 100 labels, 80 of them from the untrained policy: enough for r̂ to prefer the pole upright."""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("cartpole")
    train(tiny(path, **LEARN))
    return path


def untrained_run(path, env_id: str):
    """A run directory as the learner lays it out, with an untrained checkpoint at step 0."""
    cfg = resolve(TrainConfig(env_id=env_id, num_envs=1, total_steps=1_000, label_budget=10,
                              run_dir=str(path), progress=False))
    save_config(cfg, path)
    with make_vec_env_for(cfg, 1) as env:
        settings = RLSettings(lr=cfg.lr, n_steps=cfg.n_steps, num_envs=1, total_steps=cfg.lr_horizon)
        algo = make_algo(cfg.algo, env.obs_shape, env.obs_dtype, env.action_space, settings, "cpu", cfg.seed)
        ensemble = RewardEnsemble.from_config(cfg, env.obs_shape, env.action_space)
    save_checkpoint(path, 0, {"env_id": cfg.env_id, "algo": algo.state_dict(), "ensemble": ensemble.state_dict()})
    return path


@pytest.fixture(scope="module")
def atari_run(tmp_path_factory):
    """Pong: no Atari training fits a test, and an untrained policy is enough for frames and r̂."""
    return untrained_run(tmp_path_factory.mktemp("pong"), "ALE/Pong-v5")


@pytest.fixture(scope="module")
def box_run(tmp_path_factory):
    """Pendulum: continuous actions."""
    return untrained_run(tmp_path_factory.mktemp("pendulum"), "Pendulum-v1")


def quiet_check_env(env: gym.Env) -> None:
    """check_env, without its advice that does not apply here (unbounded CartPole observations,
    a wrapper under test, no registry spec to remake the env from)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        check_env(env, skip_render_check=True)


# -- evaluate ---------------------------------------------------------------------------------------------------------
def test_evaluate_plays_n_episodes_and_repeats_itself(run, tmp_path, capsys):
    first = evaluate(run, episodes=5, num_envs=2)
    assert len(first["per_episode"]) == 5 and first["episodes"] == 5
    assert sorted(e["env"] for e in first["per_episode"]) == [0, 0, 1, 1, 1]  # quotas (N + i) // K: 2 and 3
    assert first["seed"] == 0 + EVAL_SEED_OFFSET and first["checkpoint_step"] == 2_048
    returns = [e["return"] for e in first["per_episode"]]
    assert first["return"] == {"mean": np.mean(returns), "std": np.std(returns), "min": min(returns), "max": max(returns)}
    assert first["length"]["mean"] == first["return"]["mean"]  # CartPole: +1 per step
    assert "progress" not in first  # CartPole has no progress measure
    assert evaluate(run, episodes=5, num_envs=2)["per_episode"] == first["per_episode"]
    sampled = evaluate(run, episodes=5, num_envs=2, deterministic=False, seed=7)
    assert evaluate(run, episodes=5, num_envs=2, deterministic=False, seed=7)["per_episode"] == sampled["per_episode"]

    out = tmp_path / "summary.json"
    assert main([str(run), "--episodes", "5", "--num-envs", "2", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["per_episode"] == first["per_episode"]
    printed = capsys.readouterr().out
    assert "return" in printed and f"{first['return']['mean']:.2f}" in printed and str(out) in printed


def test_max_steps_cuts_episodes(run):
    s = evaluate(run, episodes=3, max_steps=7)
    assert s["length"]["max"] == 7 and s["truncated"] == 3 and s["max_episode_steps"] == 7


def test_video_of_an_atari_run_is_a_gif_with_frames(atari_run, tmp_path):
    from PIL import Image

    gif = tmp_path / "pong.gif"
    s = evaluate(atari_run, episodes=1, max_steps=30, video=gif)
    assert s["video"]["frames"] == 30  # the reset screen and 29 steps; the 30th ends the episode
    with Image.open(gif) as im:  # Pillow merges repeated frames into one shown longer: count the time
        durations = []
        for k in range(im.n_frames):
            im.seek(k)
            durations.append(im.info["duration"])
        assert im.size == (160, 210) and 1 < im.n_frames <= 30
    assert sum(durations) == 30 * 70  # 15 fps (60 / frameskip 4) in GIF's 10 ms steps


def test_video_of_a_classic_control_run(run, tmp_path):
    pytest.importorskip("pygame", reason="classic-control rendering needs pygame (gymnasium[classic-control]), "
                                         "not installed here; the Atari test covers the video path")
    s = evaluate(run, episodes=1, max_steps=10, video=tmp_path / "cartpole.gif")
    assert s["video"]["frames"] == 10


def test_mp4_needs_ffmpeg(atari_run, tmp_path, capsys):
    mp4 = tmp_path / "pong.mp4"
    code = main([str(atari_run), "--episodes", "1", "--max-steps", "8", "--video", str(mp4), "--json",
                 str(tmp_path / "s.json")])
    if ffmpeg_executable() is None:
        assert code == 2 and "pong.gif" in capsys.readouterr().err  # names the GIF alternative
        assert not mp4.exists()
    else:
        assert code == 0 and mp4.stat().st_size > 0


@pytest.mark.parametrize("args, named", [
    (["{tmp}/nowhere"], "nowhere"),
    (["{tmp}"], "no config.json"),
    (["{run}", "--episodes", "0"], "'0'"),
    (["{run}", "--seed", "-3"], "'-3'"),
    (["{run}", "--video", "{tmp}/clip.avi"], "clip.avi"),
    (["{run}", "--json", "{tmp}"], "is a folder"),
    (["{run}", "--device", "cuda:7"], "cuda:7"),
    (["{run}", "--mlflow-run", "abc"], "not both"),
    (["--mlflow-run", "abc"], "--tracking-uri"),
    (["--mlflow-run", "abc", "--tracking-uri", "sqlite:///{tmp}/none.db"], "none.db"),
    ([], "RUN_DIR"),
])
def test_bad_input_is_one_line_and_exit_2(run, tmp_path, capsys, args, named):
    argv = [a.format(tmp=tmp_path, run=run) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert named in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "none.db").exists()  # MLflow was not allowed to create a store


def test_the_command_itself_exits_2_without_a_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "rlhp_core.evaluate", str(tmp_path / "missing")],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "missing" in done.stderr


def test_run_without_checkpoint_is_refused(tmp_path):
    save_config(resolve(tiny(tmp_path)), tmp_path)
    with pytest.raises(RunError, match="no checkpoint yet"):
        load_policy(tmp_path)
    with pytest.raises(RunError, match="no reward model yet"):
        load_reward_model(tmp_path)


def test_mlflow_run_gives_its_run_dir(run, tmp_path):
    pytest.importorskip("mlflow")

    class Client:  # the part of MlflowClient used; a real store costs ~10 s to create
        def __init__(self, tags, params):
            self.data = types.SimpleNamespace(data=types.SimpleNamespace(tags=tags, params=params))

        def get_run(self, run_id):
            return self.data

    assert run_dir_of_mlflow_run("r", client=Client({"rlhp.run_dir": str(run)}, {})) == run
    assert run_dir_of_mlflow_run("r", client=Client({}, {"run_dir": str(run)})) == run
    with pytest.raises(ValueError, match="records no run directory"):
        run_dir_of_mlflow_run("r", client=Client({}, {}))
    with pytest.raises(ValueError, match="not on this machine"):
        run_dir_of_mlflow_run("r", client=Client({"rlhp.run_dir": str(tmp_path / "elsewhere")}, {}))


# -- the load API -----------------------------------------------------------------------------------------------------
def test_load_reward_model_predicts_as_the_saved_model(run):
    obs = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    act = np.arange(64) % 2
    saved = RewardEnsemble.from_config(resolve(tiny(run, **LEARN)), (4,), gym.spaces.Discrete(2))
    saved.load_state_dict(torch.load(run / "reward_model.pt", weights_only=True))
    want = saved.predict(obs, act)
    assert np.array_equal(load_reward_model(run).predict(obs, act), want)  # newest checkpoint's ensemble
    assert np.array_equal(load_reward_model(run / "reward_model.pt").predict(obs, act), want)
    step_dir = max((run / "checkpoints").iterdir())
    assert np.array_equal(load_reward_model(step_dir).predict(obs, act), want)
    with pytest.raises(RunError, match="neither a run directory"):
        load_reward_model(run / "checkpoints")


def test_load_policy_is_the_checkpoint_policy(run):
    policy = load_policy(run)
    blob = torch.load(max((run / "checkpoints").iterdir()) / "state.pt", weights_only=False)
    for name, tensor in blob["state"]["algo"]["net"].items():
        assert torch.equal(policy.algo.net.state_dict()[name], tensor)
    obs = np.zeros((3, 4), np.float32)
    assert policy.predict(obs).shape == (3,) and policy.predict(obs[0]).shape == ()


# -- the wrapper ------------------------------------------------------------------------------------------------------
def _rollout(env: gym.Env, steps: int, seed: int = 0):
    """Random play: the observations actions were taken in, the actions, and what step returned."""
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    seen, actions, results = [], [], []
    for _ in range(steps):
        a = env.action_space.sample()
        seen.append(obs)
        actions.append(a)
        result = env.step(a)
        results.append(result)
        obs = result[0]
        if result[2] or result[3]:
            obs, _ = env.reset()
    return np.stack(seen), np.array(actions), results


def test_wrapper_passes_check_env_and_gives_rhat(run):
    model = load_reward_model(run)
    env = LearnedRewardWrapper(make_env(run), model)
    quiet_check_env(env)
    obs, actions, results = _rollout(env, 60)
    np.testing.assert_allclose([r[1] for r in results], model.predict(obs, actions), rtol=1e-5, atol=1e-6)
    assert all(r[4]["true_reward"] == 1.0 for r in results)
    assert any(r[2] for r in results)  # random play ends CartPole episodes within 60 steps
    hidden = LearnedRewardWrapper(make_env(run), model, terminations_as_truncations=True)
    _, _, results = _rollout(hidden, 60)
    assert not any(r[2] for r in results)
    ended = [r for r in results if r[3]]
    assert ended and all(r[4]["terminated"] for r in ended)


def test_continuous_actions(box_run):
    s = evaluate(box_run, episodes=2, max_steps=15, deterministic=False)
    assert s["length"]["max"] == 15 and s["lost"]["mean"] > 0  # Pendulum's rewards are <= 0
    model = load_reward_model(box_run)
    wrapped = LearnedRewardWrapper(make_env(box_run), model)
    quiet_check_env(wrapped)
    obs, actions, results = _rollout(wrapped, 20)
    assert actions.shape == (20, 1)
    np.testing.assert_allclose([r[1] for r in results], model.predict(obs, actions), rtol=1e-5, atol=1e-6)


def test_wrapper_refuses_an_env_the_model_cannot_read(run):
    with pytest.raises(ValueError, match=r"observation space .* shape \(4,\)"):
        LearnedRewardWrapper(gym.make("Pendulum-v1"), load_reward_model(run))


def test_atari_env_and_wrapper(atari_run):
    env = make_env(atari_run)
    assert env.observation_space == gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    model = load_reward_model(atari_run)
    wrapped = LearnedRewardWrapper(env, model)
    quiet_check_env(wrapped)
    obs, actions, results = _rollout(wrapped, 12)
    assert obs.dtype == np.uint8 and (obs[..., :9, :] == 0).all() and obs[..., 9:, :].any()  # score rows blanked
    np.testing.assert_allclose([r[1] for r in results], model.predict(obs, actions), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="make_env"):
        LearnedRewardWrapper(gym.make("CartPole-v1"), model)
    wrapped.close()


# -- an outside agent learns from r̂ ----------------------------------------------------------------------------------
def test_learned_reward_trains_an_outside_agent(run):
    """PPO (rlhp_core.rl, as any agent would be) sees only r̂ through the wrapper, with the episode
    ends hidden as the learner hides them (terminations reported as truncations), so the reward is
    all it learns from. After 6,144 steps its greedy play holds the pole clearly longer than random
    play: 55-76 against 19.5 over three reward runs (seeds 1-3) when written."""
    model = load_reward_model(run)
    n, t, steps = 4, 128, 6_144
    envs = [LearnedRewardWrapper(make_env(run), model, terminations_as_truncations=True) for _ in range(n)]
    settings = RLSettings(lr=1e-3, n_steps=t, num_envs=n, total_steps=steps, update_epochs=4, num_minibatches=4)
    algo = make_algo("ppo", (4,), np.float32, envs[0].action_space, settings, "cpu", 0)
    obs = np.stack([env.reset(seed=100 + i)[0] for i, env in enumerate(envs)])
    for _ in range(steps // (n * t)):
        batch = {k: [] for k in ("obs", "actions", "rewards", "dones", "timeouts", "final", "values", "logprobs")}
        for _ in range(t):
            actions, extras = algo.act(obs)
            step = [env.step(int(a)) for env, a in zip(envs, actions)]
            ended = np.array([s[2] or s[3] for s in step])
            batch["obs"].append(obs)
            batch["actions"].append(actions)
            batch["rewards"].append(np.array([s[1] for s in step], np.float32))
            batch["dones"].append(ended)
            batch["timeouts"].append(np.array([s[3] for s in step]))
            batch["final"].append(np.stack([s[0] for s in step]))
            batch["values"].append(extras["values"])
            batch["logprobs"].append(extras["logprobs"])
            obs = np.stack([env.reset()[0] if end else s[0] for env, s, end in zip(envs, step, ended)])
        b = {k: np.stack(v) for k, v in batch.items()}
        algo.update(Rollout(obs=b["obs"], actions=b["actions"], rewards=b["rewards"], dones=b["dones"],
                            timeouts=b["timeouts"], final_values_obs=b["final"], last_obs=obs,
                            extras={"values": b["values"], "logprobs": b["logprobs"]}))

    def mean_return(act, episodes: int, seed: int) -> float:
        """Mean true return of ``act(obs, env)`` over seeded episodes."""
        env = make_env(run)
        env.action_space.seed(seed)
        total = 0.0
        for k in range(episodes):
            o, _ = env.reset(seed=seed + k)
            done = False
            while not done:
                o, r, term, trunc, _ = env.step(act(o, env))
                total += r
                done = term or trunc
        return total / episodes

    trained = mean_return(lambda o, env: int(algo.predict(o, True)), 10, 5_000)
    random = mean_return(lambda o, env: env.action_space.sample(), 30, 6_000)
    assert trained > 2 * random, (trained, random)

"""The positive control's peer: Stable-Baselines3 PPO with rl-zoo's Atari hyperparameters on Enduro.

Runs in its own virtualenv (``bash scripts/setup_sb3.sh`` makes ``.venv-sb3``): SB3 is a yardstick
for our PPO, not a dependency. The env is ours in every setting that changes the game:
``ALE/Enduro-v5`` made with frameskip 1 and sticky actions 0 (the paper's NoFrameskip-v4 setting,
our default), then SB3's ``AtariWrapper`` (up to 30 no-ops, frameskip 4 with a max over the last
two frames, 84x84 gray, rewards clipped to [-1, 1]) and a 4-frame stack. Two differences are
SB3's own and kept: it sees the whole screen (we blank the score and speedometer panel), and
its episodes end on life loss (Enduro has no lives, so this changes nothing).

rl-zoo ``hyperparams/ppo.yml`` (atari): 8 envs, n_steps 128, 4 epochs, batch 256, lr lin_2.5e-4,
clip lin_0.1, vf 0.5, ent 0.01. Like our runs, the linear decays run over the 10M-step horizon
of the reference runs, not over this run's length, so a 1M-step run is the first tenth of the
zoo's.

Writes ``episodes.csv`` (one row per finished episode: agent steps so far summed over envs, the
raw score, cars passed and times passed counted from the unclipped reward stream, length) under
``--out``. Usage::

    .venv-sb3/bin/python results/enduro-control/sb3_ppo.py --seed 0 --steps 1000000 --out runs/sb3-s0
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import time
from pathlib import Path

import ale_py
import gymnasium as gym
import numpy as np
import stable_baselines3
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.atari_wrappers import AtariWrapper
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack

HORIZON = 10_000_000
"""Agent steps over which the zoo's linear schedules decay (its n_timesteps for Atari)."""


class RawTally(gym.Wrapper):
    """Counts the unclipped reward stream per episode (innermost, before AtariWrapper clips it)."""

    def reset(self, **kwargs):
        self._gained = self._lost = self._ret = 0.0
        self._len = 0
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._ret += reward
        self._gained += max(reward, 0.0)
        self._lost += max(-reward, 0.0)
        self._len += 1
        if terminated or truncated:
            info["raw_episode"] = {"score": self._ret, "gained": self._gained, "lost": self._lost,
                                   "frames": self._len}
        return obs, reward, terminated, truncated, info


class EpisodeLog(BaseCallback):
    def __init__(self, path: Path):
        super().__init__()
        self.file = open(path, "w", newline="")
        self.writer = csv.writer(self.file)
        self.writer.writerow(["agent_steps", "score", "cars_passed", "times_passed", "length_agent_steps"])

    def _on_step(self) -> bool:
        for info in self.locals["infos"]:
            ep = info.get("raw_episode")
            if ep is not None:
                self.writer.writerow([self.num_timesteps, ep["score"], ep["gained"], ep["lost"], ep["frames"] // 4])
                self.file.flush()
        return True

    def _on_training_end(self) -> None:
        self.file.close()


def make_env(seed: int):
    def thunk():
        env = gym.make("ALE/Enduro-v5", frameskip=1, repeat_action_probability=0.0, full_action_space=False)
        env = RawTally(env)
        env = AtariWrapper(env, noop_max=30, frame_skip=4, screen_size=84, terminal_on_life_loss=True,
                           clip_reward=True)
        env.action_space.seed(seed)
        return env
    return thunk


def linear_over_horizon(start: float, total: int):
    """SB3 passes progress_remaining = 1 - t / total; the value decays to 0 at HORIZON steps."""
    return lambda remaining: start * (1.0 - (1.0 - remaining) * total / HORIZON)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=1_000_000, help="agent steps, summed over the 8 envs")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    torch.set_num_threads(1)
    gym.register_envs(ale_py)
    a.out.mkdir(parents=True, exist_ok=True)
    venv = VecFrameStack(DummyVecEnv([make_env(a.seed + i) for i in range(8)]), n_stack=4)
    venv.seed(a.seed)
    model = PPO("CnnPolicy", venv, n_steps=128, n_epochs=4, batch_size=256,
                learning_rate=linear_over_horizon(2.5e-4, a.steps), clip_range=linear_over_horizon(0.1, a.steps),
                vf_coef=0.5, ent_coef=0.01, seed=a.seed, device="cpu", verbose=0)
    t0 = time.time()
    model.learn(total_timesteps=a.steps, callback=EpisodeLog(a.out / "episodes.csv"))
    info = {"seed": a.seed, "steps": a.steps, "wall_s": time.time() - t0, "sb3": stable_baselines3.__version__,
            "ale_py": ale_py.__version__, "gymnasium": gym.__version__, "torch": torch.__version__,
            "machine": platform.platform(), "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "env": "ALE/Enduro-v5 frameskip=1 sticky=0 + AtariWrapper(noop 30, skip 4, 84x84, clip) + stack 4",
            "hyperparameters": "rl-zoo ppo.yml atari, decays over a 10M-step horizon"}
    (a.out / "run.json").write_text(json.dumps(info, indent=2))
    rows = np.genfromtxt(a.out / "episodes.csv", delimiter=",", names=True)
    print(json.dumps({**info, "episodes": int(np.size(rows))}))


if __name__ == "__main__":
    main()

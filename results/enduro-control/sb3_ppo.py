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
``--out``. Resumable: the model is saved every ``--save-every`` agent steps (write, then rename)
and rerunning the same command goes on from the last save. Episode rows written after it are
dropped, and the envs start fresh episodes, so a resumed run is a correct continuation, not a
bit-identical one. Usage::

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


EPISODE_COLUMNS = ["agent_steps", "score", "cars_passed", "times_passed", "length_agent_steps"]


def keep_rows_up_to(path: Path, steps: int) -> None:
    """Drop episode rows logged after the save we resume from (they will be played again)."""
    rows = []
    if path.exists():
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["agent_steps"]) <= steps]
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=EPISODE_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)


class EpisodeLog(BaseCallback):
    def __init__(self, path: Path):
        super().__init__()
        self.file = open(path, "a", newline="")
        self.writer = csv.writer(self.file)

    def _on_step(self) -> bool:
        for info in self.locals["infos"]:
            ep = info.get("raw_episode")
            if ep is not None:
                self.writer.writerow([self.num_timesteps, ep["score"], ep["gained"], ep["lost"], ep["frames"] // 4])
                self.file.flush()
        return True



def make_env(seed: int):
    def thunk():
        env = gym.make("ALE/Enduro-v5", frameskip=1, repeat_action_probability=0.0, full_action_space=False)
        env = RawTally(env)
        env = AtariWrapper(env, noop_max=30, frame_skip=4, screen_size=84, terminal_on_life_loss=True,
                           clip_reward=True)
        env.action_space.seed(seed)
        return env
    return thunk


class OverHorizon:
    """A linear decay to 0 at HORIZON agent steps of the model's own step count (SB3's
    progress_remaining is relative to one learn() call, and a resumed run makes several)."""

    def __init__(self, start: float):
        self.start, self.model = start, None

    def __getstate__(self):  # saved with the model: its start only (the model is set again on load)
        return {"start": self.start, "model": None}

    def __call__(self, _remaining: float) -> float:
        steps = self.model.num_timesteps if self.model is not None else 0
        return self.start * max(0.0, 1.0 - steps / HORIZON)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=1_000_000, help="agent steps, summed over the 8 envs")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--save-every", type=int, default=50_000, help="agent steps between saves of the model")
    a = p.parse_args()
    torch.set_num_threads(1)
    gym.register_envs(ale_py)
    a.out.mkdir(parents=True, exist_ok=True)
    venv = VecFrameStack(DummyVecEnv([make_env(a.seed + i) for i in range(8)]), n_stack=4)
    venv.seed(a.seed)
    lr, clip = OverHorizon(2.5e-4), OverHorizon(0.1)
    saved, progress = a.out / "model.zip", a.out / "progress.json"
    if saved.exists():
        model = PPO.load(saved, env=venv, device="cpu", custom_objects={"learning_rate": lr, "clip_range": clip})
        print(f"resuming at {model.num_timesteps} agent steps", flush=True)
    else:
        model = PPO("CnnPolicy", venv, n_steps=128, n_epochs=4, batch_size=256, learning_rate=lr, clip_range=clip,
                    vf_coef=0.5, ent_coef=0.01, seed=a.seed, device="cpu", verbose=0)
    lr.model = clip.model = model
    keep_rows_up_to(a.out / "episodes.csv", model.num_timesteps)
    wall = json.loads(progress.read_text())["wall_s"] if progress.exists() else 0.0
    log = EpisodeLog(a.out / "episodes.csv")
    while model.num_timesteps < a.steps:
        t0 = time.time()
        model.learn(total_timesteps=min(a.save_every, a.steps - model.num_timesteps), callback=log,
                    reset_num_timesteps=False)
        wall += time.time() - t0
        model.save(a.out / "model.tmp.zip")
        (a.out / "model.tmp.zip").replace(saved)
        progress.write_text(json.dumps({"agent_steps": model.num_timesteps, "wall_s": wall}))
        print(f"{model.num_timesteps} agent steps, {wall:.0f} s", flush=True)
    log.file.close()
    info = {"seed": a.seed, "steps": a.steps, "wall_s": wall, "sb3": stable_baselines3.__version__,
            "ale_py": ale_py.__version__, "gymnasium": gym.__version__, "torch": torch.__version__,
            "machine": platform.platform(), "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "env": "ALE/Enduro-v5 frameskip=1 sticky=0 + AtariWrapper(noop 30, skip 4, 84x84, clip) + stack 4",
            "hyperparameters": "rl-zoo ppo.yml atari, decays over a 10M-step horizon"}
    (a.out / "run.json").write_text(json.dumps(info, indent=2))
    rows = np.genfromtxt(a.out / "episodes.csv", delimiter=",", names=True)
    print(json.dumps({**info, "episodes": int(np.size(rows))}))


if __name__ == "__main__":
    main()

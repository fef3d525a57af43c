"""What a sweep runs: presets (grids of budgets x methods x seeds, or a TPE search) and methods.

A *method* is the paper's algorithm or one of its ablations (Christiano et al. 2017, section
3.3), expressed as TrainConfig overrides. A *preset* picks the environment, the algorithm, the
teacher, the run length and either a grid of cells or a search space; every field can be
resized from the command line (``python -m bench.sweep --help``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import optuna


@dataclass(frozen=True)
class Method:
    summary: str
    """One line for --help and the report."""
    overrides: Callable[[int], dict]
    """label budget -> TrainConfig overrides."""
    uses_labels: bool = True
    """False for the true-reward baseline: it has no budget axis (one cell per seed, budget 0)."""


METHODS: dict[str, Method] = {
    "rlhp": Method(
        "the paper's method: ensemble of 3, disagreement queries, labels asked throughout training",
        lambda budget: {},
    ),
    "true-reward": Method(
        "baseline: the same RL on the environment's reward (no labels)",
        lambda budget: {"reward": "true"},
        uses_labels=False,
    ),
    "random-queries": Method(
        "ablation: queries drawn uniformly instead of by ensemble disagreement",
        lambda budget: {"query_selection": "random"},
    ),
    "no-ensemble": Method(
        "ablation: one predictor (ensemble_size=1); queries random, as there is no disagreement to measure",
        lambda budget: {"ensemble_size": 1, "query_selection": "random"},
    ),
    "offline-labels": Method(
        "ablation 'no online queries': every label up front (initial_labels = label budget)",
        lambda budget: {"initial_labels": budget},
    ),
    "no-regularization": Method(
        "ablation: adaptive L2 off (dropout kept, as in the paper)",
        lambda budget: {"adaptive_l2": False},
    ),
}
METHOD_NAMES = tuple(METHODS)
"""The choices of the 'method' trial parameter. Append only: Optuna refuses a changed categorical space."""


def uses_labels(method: str) -> bool:
    """Whether ``method`` learns from labels; a name this code does not know (a study of a newer version)
    is taken to."""
    return not (method in METHODS and not METHODS[method].uses_labels)


MEASURED_SPS: dict[tuple[str, str, bool], tuple[float, str]] = {
    ("ALE", "a2c", True): (130.0, "results/speed/loop_speed.csv: Enduro, A2C, the full recipe at ratio 0.1, "
                                  "background fit, tcmalloc, 2 idle cores"),
    ("ALE", "a2c", False): (600.0, "results/speed/loop_speed.csv: Enduro, A2C on the true reward, 2 idle cores"),
    ("ALE", "ppo", False): (210.0, "results/enduro-true-long: Enduro, PPO on the true reward, 1M steps, one worker"),
    ("Pendulum-v1", "ppo", True): (600.0, "results/quick: the quick preset's preference cells, 346-824 steps/s "
                                          "beside another training job"),
    ("Pendulum-v1", "ppo", False): (1000.0, "results/quick: its true-reward cells, 699-1,361 steps/s beside another "
                                            "training job"),
    ("ALE", "ppo", True): (100.0, "results/enduro-budgets (150k-step cells at ratio 0.03, two workers: 47-49) "
                                  "scaled by the later tcmalloc and background-fit gains: a rough guess until a cell has run"),
}
"""Agent steps/s measured on this project's 2-core machine, by (env family, algo, uses labels): the plan's
wall-time estimate before a sweep has finished trials of its own (then their median steps/s is used)."""


@dataclass(frozen=True)
class Preset:
    name: str
    summary: str
    kind: str
    """'grid' (every budget x method x seed once) or 'search' (TPE over SEARCH_SPACE)."""
    env_id: str
    algo: str
    teacher: str
    """Scripted teacher preset (TrainConfig.labeler)."""
    env_steps: int
    budgets: tuple[int, ...]
    methods: tuple[str, ...] = ("rlhp",)
    seeds: int = 1
    trials: int = 0
    """Search presets: completed (or pruned) trials to reach."""
    pruner: str = "none"
    overrides: dict = field(default_factory=dict)
    """TrainConfig fields the preset sets (``--set`` overrides them)."""
    teachers: tuple[str, ...] = ()
    """A teacher axis: scripted teacher specs, one grid cell per teacher (x budget x seed) for every method that
    uses labels. Empty: every cell uses ``teacher``. ``--teachers`` sets it."""


NOISE_TEACHERS: tuple[str, ...] = (
    "rational",
    "stoc", "stoc:beta=0.1", "stoc:beta=0.03", "stoc:beta=0.01",
    "mistake", "mistake:eps_mistake=0.2", "mistake:eps_mistake=0.3",
    "skip:skip_threshold=-150",
    "equal",
    "myopic",
)
"""The ``noise`` preset's teachers (oracles.teacher specs), chosen for Pendulum-v1's reward scale.

Pendulum's reward is -(theta^2 + 0.1 theta_dot^2 + 0.001 u^2) per step, in [-16.3, 0]. Measured on
25-step segments (random policy: median segment return -157, |R1 - R2| of a random pair: median 36,
5%-95% 3..105; a swing-up-and-balance controller: most segments -1..0, half of all pairs within 1.9):

- ``stoc`` ladder: P(left) = sigmoid(beta (R1 - R2)), so a pair is a coin flip when |R1 - R2| << 1/beta.
  On random-policy pairs the expected disagreement with the rational teacher is about 1% (beta=1),
  10% (beta=0.1), 26% (beta=0.03) and 40% (beta=0.01): the range of the ``mistake`` ladder (eps 0.1,
  0.2, 0.3).
  beta=10 would be indistinguishable from rational at this scale. (On a balancing policy's near-tied
  pairs every finite beta is close to a coin: those pairs carry little information anyway.)
- ``skip``: B-Pref's relative form (skip_eps=0.1) gives skip_threshold = 0.1 x (-0.75 x 25) = -1.875 here:
  "skip unless one segment is balanced almost perfectly", which skips every query about the untrained
  policy (all of them on random-policy pairs) -- with negative rewards "10% of a typical segment" is not
  a low bar but a very high one. We use an absolute threshold instead: skip when both segments are
  below -150 (about the median random-policy segment: both spent the segment hanging and swinging),
  about a fifth of random-policy pairs (22% measured), fewer as the agent learns.
- ``equal``: the relative form is meaningful (|R1 - R2| <= 1.875: ~3% of random-policy pairs, about
  half of a balancing policy's pairs), so B-Pref's preset is kept.
- ``myopic``: gamma=0.9 (B-Pref's preset).
"""


PENDULUM_PPO = {"num_envs": 4, "n_steps": 512, "gamma": 0.9, "ent_coef": 0.0, "lr": 1e-3, "pretrain_epochs": 50,
                "reward_fit_schedule": "ratio", "reward_train_ratio": 1.0}
"""PPO on Pendulum-v1 that swings up in ~60k steps (gamma 0.9: its reward is dense and the swing-up is short), and a
reward model trained on one comparison per agent step (the paper's fixed-ratio schedule at 1.0: its MLP is cheap, and
1.0 gave the best label efficiency measured on Pendulum, results/speed/README.md; the presets' published results were
made with it)."""


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            name="quick",
            summary="Pendulum-v1, PPO: 100 and 500 rational-teacher labels against the true-reward baseline, 2 seeds: "
                    "preferences close to the true reward within minutes on a laptop CPU (the default)",
            kind="grid",
            env_id="Pendulum-v1",
            algo="ppo",
            teacher="rational",
            env_steps=61_440,
            budgets=(100, 500),
            methods=("rlhp", "true-reward"),
            seeds=2,
            overrides=PENDULUM_PPO,
        ),
        Preset(
            name="cartpole",
            summary="CartPole-v1, PPO, 2 label budgets + the true-reward baseline, 2 seeds: what hidden terminations "
                    "cost (the paper's continuous stream: the learned reward never sees the pole fall)",
            kind="grid",
            env_id="CartPole-v1",
            algo="ppo",
            teacher="rational",
            env_steps=40_000,
            budgets=(50, 200),
            methods=("rlhp", "true-reward"),
            seeds=2,
            overrides={"num_envs": 4, "n_steps": 256, "reward_update_every": 2_048, "pretrain_epochs": 50},
        ),
        Preset(
            name="enduro-budgets",
            summary="Enduro, PPO, 140k agent steps a cell on the 10M-step lr horizon: 290 vs 5,500 labels from the "
                    "progress teacher, and the true-reward baseline, 3 seeds (results/enduro-budgets/; about 2 hours "
                    "with two workers on 2 CPU cores: --dry-run prints the estimate; --env-steps 1000000 --set "
                    "pretrain_epochs=200 is the paper-sized run, a day or more)",
            kind="grid",
            env_id="ALE/Enduro-v5",
            algo="ppo",
            teacher="progress",
            env_steps=140_000,  # the least that holds 5,500 distinct 25-step segments to label
            budgets=(290, 5_500),
            methods=("true-reward", "rlhp"),
            seeds=3,
            # the paper's fit schedule, pinned: the cheaper ones cost label efficiency at sparse label rates
            # (results/speed/fit_schedule.md), which would handicap the 290-label cells against the 5,500.
            # 20 pretraining epochs instead of the paper's 200: 200 over the 5,500-label cells' 500 initial labels
            # is 100k comparisons, over an hour on this CPU before the first agent step, longer than the cell.
            overrides={"checkpoint_every": 20_480, "log_every": 2_048, "reward_fit_schedule": "ratio",
                       "pretrain_epochs": 20},
        ),
        Preset(
            name="hparams",
            summary="TPE search (median pruning) over the reward model's and the label schedule's hyperparameters",
            kind="search",
            env_id="CartPole-v1",
            algo="ppo",
            teacher="rational",
            env_steps=40_000,
            budgets=(200,),
            trials=20,
            pruner="median",
            overrides={"num_envs": 4, "n_steps": 256, "reward_update_every": 2_048, "pretrain_epochs": 50},
        ),
        Preset(
            name="noise",
            summary="noise robustness: Pendulum-v1, PPO, 500 labels, one cell per scripted teacher (B-Pref presets "
                    "and noise ladders) + the true-reward baseline",
            kind="grid",
            env_id="Pendulum-v1",
            algo="ppo",
            teacher="rational",
            env_steps=61_440,
            budgets=(500,),
            methods=("rlhp", "true-reward"),
            seeds=3,
            teachers=NOISE_TEACHERS,
            overrides=PENDULUM_PPO,
        ),
    )
}


# -- the hparams search space ----------------------------------------------------------------------
def suggest_hparams(trial: optuna.Trial, *, total_frames: int, fixed: set[str]) -> dict:
    """TPE's search space; fields the user fixed with ``--set`` are left out.

    label_schedule_constant is searched relative to the run's length in frames (its effect is
    C / (T + C) over T in [0, total frames]); the value logged is the absolute constant.
    """
    space: dict[str, Callable[[], object]] = {
        "reward_lr": lambda: trial.suggest_float("reward_lr", 3e-5, 3e-3, log=True),
        "label_schedule_constant": lambda: trial.suggest_float(
            "label_schedule_constant", max(1.0, total_frames / 30), max(2.0, total_frames * 3.0), log=True),
        "segment_length": lambda: trial.suggest_categorical("segment_length", (10, 15, 25, 40, 50)),
        "reward_batch": lambda: trial.suggest_categorical("reward_batch", (16, 32, 64)),
        "candidate_factor": lambda: trial.suggest_categorical("candidate_factor", (2, 5, 10, 20)),
        "reward_train_ratio": lambda: trial.suggest_float("reward_train_ratio", 0.02, 0.5, log=True),
        "initial_fraction": lambda: trial.suggest_float("initial_fraction", 0.1, 0.5),
    }
    return {name: draw() for name, draw in space.items() if name not in fixed}


SEARCHED = ("reward_lr", "label_schedule_constant", "segment_length", "reward_batch", "candidate_factor",
            "reward_train_ratio", "initial_fraction")
"""Parameter names of suggest_hparams (initial_fraction: initial_labels = ceil(fraction x budget))."""


def hparams_to_config(params: dict, budget: int) -> dict:
    """Searched values -> TrainConfig overrides."""
    out = {k: v for k, v in params.items() if k != "initial_fraction"}
    if "reward_train_ratio" in params:  # a searched ratio means the fixed-ratio fit schedule
        out["reward_fit_schedule"] = "ratio"
    if "initial_fraction" in params:
        out["initial_labels"] = max(1, math.ceil(params["initial_fraction"] * budget))
    return out

"""Run configuration. Defaults are the paper's (SPEC.md); each departure says why.

Fields left as ``None`` are filled per environment by :func:`resolve` (Atari and vector
envs differ in segment length, reward std, label schedule constant and initial batch).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

ALGOS = ("a2c", "ppo")
REWARD_SOURCES = ("preferences", "true")
QUERY_SELECTIONS = ("disagreement", "random")
REWARD_DTYPES = ("float32", "bfloat16")
REWARD_FITS = ("auto", "sync", "background")


def is_atari(env_id: str) -> bool:
    return env_id.startswith("ALE/") or env_id.endswith("NoFrameskip-v4")


@dataclass
class TrainConfig:
    # --- what to learn --------------------------------------------------------------
    env_id: str = "ALE/Enduro-v5"
    """gymnasium env id: ALE/<Game>-v5 for Atari, or any vector-observation env (CartPole-v1, Pendulum-v1, Hopper-v5...)."""
    reward: str = "preferences"
    """'preferences': RL on the learned reward; 'true': the same RL on the env reward (the baseline)."""
    labeler: str = "rational"
    """Who answers: a scripted teacher preset or spec (see oracles), 'human', or 'PRESET+human' (teacher answers the initial batch)."""
    algo: str = "a2c"
    """'a2c' (the paper's) or 'ppo'."""
    seed: int = 0
    device: str = "auto"
    """'auto' (CUDA when present), 'cpu', 'cuda', 'cuda:N'."""
    run_dir: str = "runs/default"
    """Everything of the run lives here; rerunning with the same run_dir resumes it."""

    # --- budgets ----------------------------------------------------------------------
    total_steps: int = 1_000_000
    """Agent steps (frames = 4x on Atari)."""
    label_budget: int = 5_500
    """Comparisons asked for over the whole run (paper: 5,500 on Atari)."""
    initial_labels: int | None = None
    """Labels from the untrained policy before RL. None: min(500, 25% of budget) on Atari (paper: 500 of 5,500), 25% of budget otherwise (paper's MuJoCo rule)."""
    pretrain_epochs: int = 200
    """Reward-model epochs on the initial labels before RL (paper: 200 on Atari)."""
    label_schedule_constant: float | None = None
    """C in rate ~ C / (T + C), T in frames. None: 5e6 on Atari, 2e6 otherwise (paper)."""
    label_buffer: int = 3_000
    """Train on the most recent this-many labels (paper: 3,000)."""
    seed_labels: str | None = None
    """Path to another run's labels.sqlite: its labels are copied in first (same env only)."""

    # --- env ----------------------------------------------------------------------------
    num_envs: int = 16
    sticky_actions: float = 0.0
    """repeat_action_probability. 0.0 = the paper's NoFrameskip-v4 setting; 0.25 = v5's default."""
    frameskip: int = 4
    max_episode_steps: int | None = None
    """Truncate episodes after this many agent steps (None: the env's own limit; ALE: 27,000 = 108k frames)."""
    episode_signal: bool | None = None
    """Let the agent see terminations (value bootstrapping cut there; time-limit ends are always
    bootstrapped as if the episode went on, which leaks nothing). None: off for
    preference runs and on Atari (the paper's one continuous stream: an end must not leak
    reward information), on for true-reward runs on vector envs (whose reward is defined by
    termination, e.g. CartPole)."""
    episode_end_penalty: float | None = None
    """Teacher's penalty per episode end inside a segment (the paper's synthetic-oracle rule). None: per-env default."""

    # --- queries -------------------------------------------------------------------------
    segment_length: int | None = None
    """Steps per segment. None: 25 on Atari (paper); 25 otherwise."""
    query_selection: str = "disagreement"
    """'disagreement' (variance of ensemble P(left>right) over a candidate pool) or 'random' (ablation)."""
    candidate_factor: int = 10
    """Candidate pairs drawn per query sent (paper: 10)."""

    # --- reward model ---------------------------------------------------------------------
    ensemble_size: int = 3
    reward_lr: float = 3e-4
    reward_batch: int = 32
    """Comparisons per reward-model minibatch."""
    reward_std: float | None = None
    """Each member's output is normalised to this std. None: 0.05 on Atari, 1.0 otherwise (paper)."""
    reward_train_ratio: float = 0.1
    """Comparisons the reward model trains on per RL agent step (paper: ~1 per 10 steps = 0.1)."""
    reward_update_every: int = 1_000
    """Agent steps between reward-model refits (labels are collected and trained in chunks)."""
    reward_fit: str = "auto"
    """'sync': the loop waits for each refit's training. 'background': the training runs on a second thread while RL goes on with the previous r̂ and is installed at the next refit, so r̂ lags one refit interval (the paper runs its parts asynchronously too); as reproducible as 'sync', and reward training gets a core of its own (results/speed/: same label efficiency as 'sync' on Pendulum over 8 seeds). 'auto': 'background' on Atari, where the reward CNN's training is most of the loop's work, 'sync' on vector envs, where the MLP's is cheap; a resumed run keeps the mode it started with."""
    adaptive_l2: bool = True
    """Keep val/train loss in [1.1, 1.5] by raising/lowering L2 (paper). False = the 'no regularisation' ablation's L2 part."""
    dropout: float | None = None
    """Dropout on conv layers (Atari: 0.5, paper). None: 0.5 on Atari, 0.0 otherwise."""
    reward_dtype: str = "float32"
    """Precision of the reward CNN's conv stack: 'float32' or 'bfloat16' (convs, batch norm and dropout in bf16 against float32 master weights; dense layers, loss and optimiser stay float32). bf16 makes reward training ~1.7x and inference ~1.9x faster on a CPU with AVX512-BF16 or AMX (results/speed/); without them it is emulated and slower. It cost some reward-model accuracy per label on an offline Enduro check, so it is for when wall time matters more than labels. The MLP reward model is always float32."""

    # --- RL ----------------------------------------------------------------------------------
    lr: float | None = None
    """Policy learning rate, decayed linearly. None: 7e-4 for A2C (paper), 2.5e-4 PPO on Atari, 3e-4 PPO otherwise."""
    gamma: float = 0.99
    ent_coef: float | None = None
    """None: 0.01 (paper, A2C and Atari PPO); 0.0 for PPO on continuous actions."""
    n_steps: int | None = None
    """Rollout length per env per update. None: 5 (A2C, paper); 128 (PPO Atari); 256 (PPO vector envs)."""

    # --- bookkeeping ----------------------------------------------------------------------
    checkpoint_every: int = 100_000
    """Agent steps between checkpoints (one is also written at the end and on Ctrl-C)."""
    log_every: int = 10_000
    """Agent steps between metric rows."""
    progress: bool = True
    """Show a progress bar (tqdm)."""

    extra: dict = field(default_factory=dict)
    """Free-form settings recorded with the run (e.g. the sweep that launched it)."""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        data = json.loads(text)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known keys: {sorted(names)}")
        return cls(**data)


def resolve(cfg: TrainConfig) -> TrainConfig:
    """Fill per-env defaults and validate. Returns a new config; raises ValueError naming the bad value."""
    atari = is_atari(cfg.env_id)
    c = dataclasses.replace(cfg)
    if c.algo not in ALGOS:
        raise ValueError(f"algo {c.algo!r} is not one of {ALGOS}")
    if c.reward not in REWARD_SOURCES:
        raise ValueError(f"reward {c.reward!r} is not one of {REWARD_SOURCES}")
    if c.query_selection not in QUERY_SELECTIONS:
        raise ValueError(f"query_selection {c.query_selection!r} is not one of {QUERY_SELECTIONS}")
    for name in ("total_steps", "num_envs", "ensemble_size", "candidate_factor", "reward_batch",
                 "label_buffer", "reward_update_every", "checkpoint_every", "log_every", "frameskip"):
        if getattr(c, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(c, name)}")
    if not 0.0 <= c.sticky_actions <= 1.0:
        raise ValueError(f"sticky_actions must be in [0, 1], got {c.sticky_actions}")
    if c.label_budget < 0:
        raise ValueError(f"label_budget must be >= 0, got {c.label_budget}")
    if c.segment_length is None:
        c.segment_length = 25
    if c.segment_length < 1:
        raise ValueError(f"segment_length must be >= 1, got {c.segment_length}")
    if c.initial_labels is None:
        c.initial_labels = min(500, math.ceil(0.25 * c.label_budget)) if atari else math.ceil(0.25 * c.label_budget)
    if c.reward == "preferences":
        if c.initial_labels < 1 and c.label_budget > 0:
            raise ValueError(f"initial_labels must be >= 1 for a preference run, got {c.initial_labels}")
        if c.label_budget < c.initial_labels:
            raise ValueError(
                f"label_budget {c.label_budget} is below initial_labels {c.initial_labels}; "
                f"allowed: label_budget >= initial_labels (or lower initial_labels)"
            )
        if c.label_budget < 1:
            raise ValueError("label_budget must be >= 1 for a preference run (use reward='true' for none)")
    if c.label_schedule_constant is None:
        c.label_schedule_constant = 5e6 if atari else 2e6
    if c.reward_fit not in REWARD_FITS:
        raise ValueError(f"reward_fit {c.reward_fit!r} is not one of {REWARD_FITS}")
    if c.reward_fit == "auto":
        c.reward_fit = "background" if atari else "sync"
    if c.reward_dtype not in REWARD_DTYPES:
        raise ValueError(f"reward_dtype {c.reward_dtype!r} is not one of {REWARD_DTYPES}")
    if c.reward_std is None:
        c.reward_std = 0.05 if atari else 1.0
    if c.dropout is None:
        c.dropout = 0.5 if atari else 0.0
    if c.lr is None:
        c.lr = 7e-4 if c.algo == "a2c" else (2.5e-4 if atari else 3e-4)
    if c.n_steps is None:
        c.n_steps = 5 if c.algo == "a2c" else (128 if atari else 256)
    if c.episode_signal is None:
        c.episode_signal = c.reward == "true" and not atari
    if c.ent_coef is None:
        c.ent_coef = 0.01
    return c


def save_config(cfg: TrainConfig, run_dir: Path) -> None:
    path = run_dir / "config.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(cfg.to_json())
    tmp.replace(path)

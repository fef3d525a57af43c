"""Run configuration. Defaults are the paper's (SPEC.md); each departure says why.

Fields left as ``None`` are filled per environment by :func:`resolve` (Atari and vector
envs differ in segment length, reward std, label schedule constant and initial batch).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from .fit_schedule import canonical_fit_schedule
from .paths import write_atomic

ALGOS = ("a2c", "ppo")
REWARD_SOURCES = ("preferences", "true")
QUERY_SELECTIONS = ("disagreement", "random")
REWARD_DTYPES = ("float32", "bfloat16")
REWARD_FITS = ("auto", "sync", "background")
LR_SCHEDULES = ("linear", "constant")
ATARI_LR_HORIZON = 10_000_000
"""Agent steps of the reference Atari runs (paper A2C, baselines, CleanRL, SB3 zoo: 10M steps = 40M frames):
the default horizon of the policy's linear lr decay on Atari, so a shorter run is the start of a reference run."""
DEFAULT_FIT_SCHEDULE = "ratio"
"""reward_fit_schedule's default (None resolves to it); results/speed/fit_schedule.md has the measurements behind it."""


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
    """Seeds torch, NumPy, the envs and the scripted teacher: the same seed and settings give the same run."""
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
    """Environments stepped in parallel (paper: 16); total_steps counts the steps of all of them together."""
    sticky_actions: float = 0.0
    """repeat_action_probability. 0.0 = the paper's NoFrameskip-v4 setting; 0.25 = v5's default."""
    frameskip: int = 4
    """Atari only: frames per agent step, the action repeated over them (paper: 4)."""
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
    """Reward-model members, each trained on its own bootstrap of the labels (paper: 3); their disagreement
    picks the queries."""
    reward_lr: float = 3e-4
    """Adam learning rate of the reward model."""
    reward_batch: int = 32
    """Comparisons per reward-model minibatch."""
    reward_std: float | None = None
    """Each member's output is normalised to this std. None: 0.05 on Atari, 1.0 otherwise (paper)."""
    reward_train_ratio: float = 0.1
    """Comparisons the reward model trains on per RL agent step (paper: ~1 per 10 steps = 0.1), under reward_fit_schedule 'ratio' only."""
    reward_update_every: int = 1_000
    """Agent steps between reward-model refits (labels are collected and trained in chunks)."""
    reward_fit_schedule: str | None = None
    """When the reward model trains and how much (rlhp_core/fit_schedule.py). 'ratio': the paper's, reward_train_ratio comparisons per agent step at every refit, and pretrain_epochs of pretraining. 'ratio:per_label=N': the same, but at most N comparisons per label new since the last refit and no refit without one, so no passes over unchanged labels when labels come slowly (3.2x the loop's speed on Enduro at a 290-label budget; while labels come fast it is the paper's). 'labels' (knobs 'labels:growth=0.25,patience=2,min_epochs=1,max_epochs=20,pretrain_min_epochs=10'): fits only when the label set has grown by a fraction, each running epochs until the validation loss stops improving. None: 'ratio' (results/speed/fit_schedule.md: the others were not yet shown to be as label-efficient everywhere). A run records its spec with every knob written out, and a resumed run keeps it (runs from before this field: 'ratio')."""
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
    """Policy learning rate at step 0. None: 7e-4 for A2C (paper), 2.5e-4 PPO on Atari, 3e-4 PPO otherwise."""
    lr_schedule: str = "linear"
    """'linear': decay the policy lr linearly to 0 at lr_horizon agent steps (paper, baselines, CleanRL); 'constant'."""
    lr_horizon: int | None = None
    """Agent steps over which the linear decay reaches 0, independent of the run's own length. None: 10M on Atari
    (the reference runs' length, so a 1M-step run is the first tenth of a reference run, not a different run),
    total_steps elsewhere."""
    gamma: float = 0.99
    """Discount factor of the policy's RL, in [0, 1] (paper: 0.99)."""
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
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object of TrainConfig fields, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known keys: {sorted(names)}")
        return cls(**data)


class ConfigError(ValueError):
    """A TrainConfig value that cannot run. The message names the field, the value and what is
    allowed; ``fields`` names the fields at fault, so a command line can point at its own flags
    (``--reward-lr``, ``--set reward_lr=...``) rather than at the dataclass."""

    def __init__(self, fields: str | tuple[str, ...], message: str):
        super().__init__(message)
        self.fields = (fields,) if isinstance(fields, str) else tuple(fields)


CHOICES = {"algo": ALGOS, "reward": REWARD_SOURCES, "query_selection": QUERY_SELECTIONS,
           "reward_dtype": REWARD_DTYPES, "reward_fit": REWARD_FITS, "lr_schedule": LR_SCHEDULES}
"""Fields with a fixed set of values (the command line offers them as choices)."""

INT64_MAX = 2**63 - 1
"""Every integer field ends up in an int64 somewhere (NumPy counters, torch seeds, SQLite rows)."""

_DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")
_BASE_TYPES = {"int": int, "float": float, "bool": bool, "str": str, "dict": dict}


def _field_kinds() -> dict[str, tuple[type, bool]]:
    """(base type, None allowed) of every TrainConfig field, read from its annotation."""
    out = {}
    for f in dataclasses.fields(TrainConfig):
        parts = [p.strip() for p in str(f.type).split("|")]
        base = [p for p in parts if p != "None"]
        out[f.name] = (_BASE_TYPES[base[0]], "None" in parts)
    return out


FIELD_KINDS = _field_kinds()
"""Field name -> (base type, whether None is allowed)."""


def kind_text(name: str) -> str:
    """What a field takes, in words: 'int', 'float or none', 'true/false', ..."""
    base, optional = FIELD_KINDS[name]
    text = {bool: "true/false", dict: "a JSON object"}.get(base, base.__name__)
    return f"{text} or none" if optional else text


def parse_int(text: str) -> int:
    """An integer as people write one: 1000000, 1_000_000 or 1e6, not 1.5, inf or nan (ValueError)."""
    try:
        return int(text)
    except ValueError:
        number = float(text)
        if not number.is_integer():
            raise ValueError(f"not an integer: {text!r}") from None
        return int(number)


def parse_field(name: str, text: str):
    """A TrainConfig field's value from command-line text, by the field's annotation.

    The one parser of config values typed by people: the training command's flags and the
    sweep's ``--set KEY=VALUE`` both use it. Integers may be written 1000000, 1_000_000 or 1e6
    (but not 1.5); optional fields take 'none'; booleans take true/false, yes/no, on/off, 1/0.
    Only the syntax is checked here (``nan`` is a float); :func:`resolve` checks the ranges.
    Raises ValueError("expected KIND, got 'TEXT'").
    """
    base, optional = FIELD_KINDS[name]
    word = text.strip().lower()
    if optional and word in ("none", "null"):
        return None
    try:
        if base is bool:
            if word in ("1", "true", "yes", "on"):
                return True
            if word in ("0", "false", "no", "off"):
                return False
        elif base is int:
            return parse_int(word)
        elif base is float:
            return float(word)
        elif base is dict:
            value = json.loads(text)
            if isinstance(value, dict):
                return value
        else:
            return text
    except ValueError:
        pass
    raise ValueError(f"expected {kind_text(name)}, got {text!r}")


def _check_types(c: TrainConfig) -> None:
    """Each field holds its annotated type (a config file or a caller may put anything there)."""
    for name, (base, optional) in FIELD_KINDS.items():
        value = getattr(c, name)
        if value is None and optional:
            continue
        accepted = (int, float) if base is float else base  # an int is a fine float; a bool no number
        if not isinstance(value, accepted) or (base is not bool and isinstance(value, bool)):
            raise ConfigError(name, f"{name} must be {kind_text(name)}, got {value!r} ({type(value).__name__})")
        if base is int and not -INT64_MAX - 1 <= value <= INT64_MAX:
            raise ConfigError(name, f"{name} must fit a 64-bit integer (|value| < 2**63), got {value}")
        if base is float and not math.isfinite(value):
            raise ConfigError(name, f"{name} must be a finite number, got {value}")


def _at_least(c: TrainConfig, name: str, low: int) -> None:
    value = getattr(c, name)
    if value is not None and value < low:
        raise ConfigError(name, f"{name} must be >= {low}, got {value}")


def _in_range(c: TrainConfig, name: str, text: str, ok) -> None:
    value = getattr(c, name)
    if value is not None and not ok(value):
        raise ConfigError(name, f"{name} must be {text}, got {value}")


def resolve(cfg: TrainConfig) -> TrainConfig:
    """Fill per-env defaults and validate. Returns a new config; raises ConfigError naming the bad value.

    Everything is checked that can be without the environment, the file system or torch (an
    unknown env id, a missing file or an absent GPU are the command line's and the learner's to
    find), so a bad value is refused before anything is written.
    """
    c = dataclasses.replace(cfg)
    _check_types(c)
    atari = is_atari(c.env_id)
    for name, allowed in CHOICES.items():
        if getattr(c, name) not in allowed:
            raise ConfigError(name, f"{name} {getattr(c, name)!r} is not one of {allowed}")
    for name in ("env_id", "labeler", "run_dir"):
        if not getattr(c, name).strip():
            raise ConfigError(name, f"{name} must not be empty")
    if c.seed_labels is not None and not c.seed_labels.strip():
        raise ConfigError("seed_labels", "seed_labels must be the path of a labels.sqlite or None, got ''")
    if not _DEVICE.fullmatch(c.device):
        raise ConfigError("device", f"device {c.device!r} is not valid; allowed: 'auto', 'cpu', 'cuda', 'cuda:N'")
    for name in ("total_steps", "num_envs", "ensemble_size", "candidate_factor", "reward_batch", "label_buffer",
                 "reward_update_every", "checkpoint_every", "log_every", "frameskip", "segment_length",
                 "max_episode_steps", "n_steps"):
        _at_least(c, name, 1)
    for name in ("seed", "label_budget", "initial_labels", "pretrain_epochs"):
        _at_least(c, name, 0)
    _in_range(c, "sticky_actions", "in [0, 1]", lambda v: 0.0 <= v <= 1.0)
    _in_range(c, "dropout", "in [0, 1)", lambda v: 0.0 <= v < 1.0)
    _in_range(c, "gamma", "in [0, 1]", lambda v: 0.0 <= v <= 1.0)
    _in_range(c, "ent_coef", ">= 0", lambda v: v >= 0.0)
    for name in ("reward_lr", "lr", "reward_std", "reward_train_ratio", "label_schedule_constant"):
        _in_range(c, name, "> 0", lambda v: v > 0.0)
    if c.num_envs > c.total_steps:
        raise ConfigError(("num_envs", "total_steps"),
                          f"num_envs {c.num_envs} is more than total_steps {c.total_steps}: one step of all envs "
                          f"would overrun the run; allowed: num_envs <= total_steps")
    if c.segment_length is None:
        c.segment_length = 25
    if c.initial_labels is None:
        c.initial_labels = min(500, math.ceil(0.25 * c.label_budget)) if atari else math.ceil(0.25 * c.label_budget)
    if c.reward == "preferences":
        _check_label_counts(c)
    if c.label_schedule_constant is None:
        c.label_schedule_constant = 5e6 if atari else 2e6
    if c.reward_fit == "auto":
        c.reward_fit = "background" if atari else "sync"
    if c.reward_fit_schedule is None:
        c.reward_fit_schedule = DEFAULT_FIT_SCHEDULE
    try:
        c.reward_fit_schedule = canonical_fit_schedule(c.reward_fit_schedule)
    except ValueError as exc:
        raise ConfigError("reward_fit_schedule", f"{exc}; allowed: 'ratio', 'ratio:per_label=N', 'labels' or 'labels:KNOB=VALUE,...'") from None
    if c.reward_std is None:
        c.reward_std = 0.05 if atari else 1.0
    if c.dropout is None:
        c.dropout = 0.5 if atari else 0.0
    if c.lr_horizon is None:
        c.lr_horizon = ATARI_LR_HORIZON if atari else c.total_steps
    if c.lr_horizon < 1:
        raise ConfigError("lr_horizon", f"lr_horizon must be >= 1 agent step, got {c.lr_horizon}")
    if c.lr is None:
        c.lr = 7e-4 if c.algo == "a2c" else (2.5e-4 if atari else 3e-4)
    if c.n_steps is None:
        c.n_steps = 5 if c.algo == "a2c" else (128 if atari else 256)
    if c.episode_signal is None:
        c.episode_signal = c.reward == "true" and not atari
    if c.ent_coef is None:
        c.ent_coef = 0.01
    return c


def _check_label_counts(c: TrainConfig) -> None:
    """A preference run's label counts against each other and against the run's length.

    The upper bounds follow from how the learner gathers labels. The initial labels compare
    segments of fresh experience of the untrained policy, two segments of segment_length steps
    per comparison, and RL starts only once they are all asked: beyond total_steps // (2 *
    segment_length) that phase alone outlasts the run (and a huge budget loops in it for ever).
    The rest are asked during RL about the recent experience; a budget above total_steps //
    segment_length asks more comparisons than the run has segments at all (each segment would
    be shown in two or more comparisons on average), which no setting in the paper or this
    project's results comes near (5,500 labels in 150k Enduro steps is 0.92 of it).
    """
    fields = ("label_budget", "initial_labels")
    if c.label_budget < 1:
        raise ConfigError("label_budget", f"label_budget must be >= 1 for a preference run, got {c.label_budget} "
                                          f"(use reward='true' for a run without labels)")
    if c.initial_labels < 1:
        raise ConfigError("initial_labels", f"initial_labels must be >= 1 for a preference run, got {c.initial_labels}")
    if c.label_budget < c.initial_labels:
        raise ConfigError(fields, f"label_budget {c.label_budget} is below initial_labels {c.initial_labels}; "
                                  f"allowed: label_budget >= initial_labels (or lower initial_labels)")
    length = ("total_steps", "segment_length")
    most_initial = c.total_steps // (2 * c.segment_length)
    if c.initial_labels > most_initial:
        raise ConfigError(("initial_labels", "label_budget", *length),
                          f"initial_labels {c.initial_labels} (of label_budget {c.label_budget}) need "
                          f"{2 * c.segment_length * c.initial_labels} agent "
                          f"steps of fresh experience before RL starts (2 segments of {c.segment_length} steps each), "
                          f"more than total_steps {c.total_steps}; allowed: initial_labels <= total_steps // "
                          f"(2 * segment_length) = {most_initial} (initial_labels defaults to 25% of label_budget)")
    most = c.total_steps // c.segment_length
    if c.label_budget > most:
        raise ConfigError(("label_budget", *length),
                          f"label_budget {c.label_budget} is more comparisons than the run has segments "
                          f"(total_steps {c.total_steps} // segment_length {c.segment_length}); allowed: "
                          f"label_budget <= {most}, or raise total_steps")


def save_config(cfg: TrainConfig, run_dir: Path) -> None:
    write_atomic(run_dir / "config.json", cfg.to_json())


RESUMABLE_CHANGES = {"total_steps", "device", "progress", "checkpoint_every", "log_every", "run_dir", "extra"}
"""Config fields that may differ when a run directory is resumed."""

REWARD_MODEL_ONLY = {"reward_fit_schedule"}
"""Settings a true-reward run never uses (it trains no reward model): resuming one with another
value of these is the same run (a sweep may pin them for its label-using cells)."""


def resumed_config(run_dir: Path, asked: TrainConfig, cfg: TrainConfig) -> TrainConfig:
    """The config to run in ``run_dir``: ``cfg`` (``asked``, resolved) when the folder holds no
    config.json; else the recorded run's, with the changes :data:`RESUMABLE_CHANGES` allows.

    A setting ``asked`` leaves to its per-env default (None, or reward_fit 'auto') goes on as the
    run started: the default may have changed since (reward_fit 'auto' did; lr_horizon follows
    total_steps off Atari, and total_steps may grow on resume). Any other difference raises
    ValueError naming each field, the run's value and the asked one.
    """
    path = Path(run_dir) / "config.json"
    if not path.exists():
        return cfg
    try:
        old = TrainConfig.from_json(path.read_text())
        recorded = json.loads(path.read_text())
        if "lr_horizon" not in recorded:  # written before it existed: decayed over the run
            old.lr_horizon = old.total_steps
        if "reward_fit_schedule" not in recorded:  # written before it existed: the paper's ratio
            old.reward_fit_schedule = "ratio"
        old = resolve(old)
    except (ValueError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not a config this code can read: {exc}") from exc
    kept = {f.name: getattr(old, f.name) for f in dataclasses.fields(TrainConfig)
            if getattr(asked, f.name) is None or (f.name == "reward_fit" and asked.reward_fit == "auto")}
    cfg = dataclasses.replace(cfg, **kept)
    diffs = {
        f.name: (getattr(old, f.name), getattr(cfg, f.name))
        for f in dataclasses.fields(TrainConfig)
        if f.name not in RESUMABLE_CHANGES and getattr(old, f.name) != getattr(cfg, f.name)
        and not (f.name in REWARD_MODEL_ONLY and old.reward == cfg.reward == "true")
    }
    if diffs:
        listing = ", ".join(f"{k}: run has {a!r}, asked {b!r}" for k, (a, b) in diffs.items())
        raise ValueError(
            f"run directory {run_dir} belongs to a different configuration ({listing}); "
            f"use a new run_dir, or repeat the original settings to resume"
        )
    return cfg

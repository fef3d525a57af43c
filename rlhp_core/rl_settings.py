"""The hyperparameters of A2C and PPO (:mod:`rlhp_core.rl`): :class:`RLSettings`, and
:func:`resolve_settings`, which fills the defaults that depend on the algorithm and the network
('cnn' or 'mlp') and validates every value.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

POLICIES = ("auto", "cnn", "mlp")
"""What ``RLSettings.policy`` may be."""


@dataclass(kw_only=True)
class RLSettings:
    """Hyperparameters of A2C and PPO. ``None`` fields are resolved per algorithm and network by
    :func:`resolve_settings` (``make_algo`` does it; the resolved copy is ``algo.settings``)."""

    lr: float
    """Initial learning rate (decayed linearly to 0 over ``total_steps`` agent steps when ``anneal_lr``)."""
    n_steps: int
    """Rollout length per env per update (paper A2C: 5; PPO Atari: 128)."""
    num_envs: int
    """Parallel envs N; every rollout must have N columns."""
    total_steps: int
    """Agent steps (summed over envs) at which the linear lr decay reaches 0: the lr horizon. The learner
    passes ``TrainConfig.lr_horizon`` (10M on Atari, the reference runs' length), not its run's length."""
    gamma: float = 0.99
    """Discount factor."""
    ent_coef: float = 0.01
    """Entropy bonus coefficient (paper: 0.01)."""
    vf_coef: float = 0.5
    """Value-loss coefficient."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip."""
    anneal_lr: bool = True
    """Decay the lr linearly from ``lr`` to 0 at ``total_steps`` (stays 0 afterwards)."""
    gae_lambda: float | None = None
    """GAE lambda. None: 1.0 for A2C (plain n-step returns, as baselines), 0.95 for PPO."""
    policy: str = "auto"
    """'cnn' (Nature-CNN), 'mlp', or 'auto': cnn for uint8 (C, H, W) observations, mlp otherwise."""
    mlp_hidden: int = 64
    """Width of each of the two tanh layers of the MLP actor and critic."""
    init_log_std: float = 0.0
    """Initial log standard deviation of the Gaussian policy (Box actions)."""

    # --- A2C -------------------------------------------------------------------------------------
    rms_alpha: float = 0.99
    """RMSProp decay (paper / baselines: 0.99)."""
    rms_eps: float = 1e-5
    """RMSProp epsilon (paper / baselines: 1e-5)."""
    rms_tf_like: bool | None = None
    """True: TensorFlow's RMSProp as in baselines (eps inside the sqrt, mean square starts at 1), what
    the paper's Atari settings were tuned with; False: torch.optim.RMSprop (SB3's default), which
    takes much larger steps at eps 1e-5. None: True for the CNN (Atari), False for the MLP (on
    CartPole TF-style A2C at lr 7e-4 needs ~3x the steps)."""

    # --- PPO -------------------------------------------------------------------------------------
    clip_coef: float | None = None
    """Surrogate (and value) clip range. None: 0.1 for the CNN (Atari), 0.2 for the MLP."""
    update_epochs: int | None = None
    """Passes over each rollout. None: 4 for the CNN (Atari), 10 for the MLP (CleanRL continuous / SB3)."""
    num_minibatches: int | None = None
    """Minibatches per epoch. None: 4 for the CNN (Atari), 32 for the MLP."""
    norm_adv: bool = True
    """Normalise advantages per minibatch."""
    clip_vloss: bool | None = None
    """Clip the value loss around the rollout's values by ``clip_coef`` (CleanRL / baselines ppo2).
    None: True for the CNN (Atari rewards are small: r̂ std 0.05 or clipped), False for the MLP
    (SB3's default): with unnormalised returns of size ~100 the clip lets V move only ~0.2 per
    update (Pendulum: -1000 instead of -220 after 100k steps)."""
    target_kl: float | None = None
    """Stop the epochs of an update early once approx KL exceeds this (None: never)."""
    adam_eps: float = 1e-5
    """Adam epsilon (CleanRL / baselines ppo2)."""


def resolve_settings(name: str, settings: RLSettings, policy: str) -> RLSettings:
    """Fill the ``None`` defaults of ``settings`` for algorithm ``name`` and network ``policy``
    ('cnn' or 'mlp'), and validate. Returns a new object; raises ValueError naming the bad value."""
    s = dataclasses.replace(settings)
    cnn = policy == "cnn"
    if s.gae_lambda is None:
        s.gae_lambda = 1.0 if name == "a2c" else 0.95
    if s.clip_coef is None:
        s.clip_coef = 0.1 if cnn else 0.2
    if s.update_epochs is None:
        s.update_epochs = 4 if cnn else 10
    if s.num_minibatches is None:
        s.num_minibatches = 4 if cnn else 32
    if s.rms_tf_like is None:
        s.rms_tf_like = cnn
    if s.clip_vloss is None:
        s.clip_vloss = cnn
    for key in ("n_steps", "num_envs", "total_steps", "update_epochs", "num_minibatches", "mlp_hidden"):
        if getattr(s, key) < 1:
            raise ValueError(f"{key} must be >= 1, got {getattr(s, key)}")
    for key in ("lr", "max_grad_norm", "rms_eps", "adam_eps", "clip_coef"):
        if not getattr(s, key) > 0:
            raise ValueError(f"{key} must be > 0, got {getattr(s, key)}")
    for key in ("gamma", "gae_lambda", "rms_alpha"):
        if not 0.0 <= getattr(s, key) <= 1.0:
            raise ValueError(f"{key} must be in [0, 1], got {getattr(s, key)}")
    for key in ("ent_coef", "vf_coef"):
        if getattr(s, key) < 0:
            raise ValueError(f"{key} must be >= 0, got {getattr(s, key)}")
    return s


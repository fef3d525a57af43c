"""The reward model r̂ as the learner uses it: an ensemble of predictors, normalised, averaged.

Paper, section 2.2.3 and appendix A. :class:`RewardEnsemble` holds the members' networks
(rlhp_core/reward/networks.py: the paper's CNN on Atari, an MLP on vector observations), maps
states to each member's raw output, normalises every member separately and averages them into
r̂ for the policy, and saves and loads all of it. Its training half (``train``, ``evaluate``,
``validation_loss``) is rlhp_core/reward/fitting.py.

Normalisation (paper: each member's output normalised separately, then averaged). Each member
m gets an affine map ``(raw_m - mean_m) / std_m * reward_std``; ``mean_m``/``std_m`` are set by
``update_normalization(obs, actions)`` from a sample of *recent agent states* (e.g. the last
rollouts) and replaced (not averaged) every time, because the network itself changed since the
previous statistics. The learner calls it after every fit (before RL starts,
``PreferenceDataset.normalization_sample`` gives states from the stored segments, which come
from the policy that is about to act). This keeps r̂ at zero mean and the configured std under
the *current* policy's state distribution even as that distribution moves. How a member that
learnt nothing is kept from being blown up to full size: rlhp_core/reward/normalization.py.

Threads: inference never changes module state (``training`` is passed explicitly), but a
``train`` running in another thread updates weights in place while ``predict`` reads them.
An asynchronous learner trains a copy and swaps (``load_state_dict``; rlhp_core/background_fit.py).

Checkpoints: ``state_dict()`` holds tensors and plain Python values only (``torch.load(...,
weights_only=True)`` reads it); its keys and layout are the run directories' ``reward_model.pt``
and ``checkpoints/step-N`` format, so they do not change without a version bump.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .fitting import EnsembleFitting, L2Rule
from .networks import FusedCNN, FusedMLP
from .normalization import member_weights, std_floor

__all__ = ["RewardEnsemble"]


def _space_to_action_spec(action_space) -> tuple[int | None, tuple[int, ...]]:
    """-> (n_discrete or None, box action shape). Accepts a gymnasium Discrete/Box, an int
    (number of discrete actions) or a tuple (Box action shape)."""
    if isinstance(action_space, (int, np.integer)):
        return int(action_space), ()
    if isinstance(action_space, tuple):
        return None, tuple(int(v) for v in action_space)
    n = getattr(action_space, "n", None)
    if n is not None and not hasattr(action_space, "nvec"):
        if int(getattr(action_space, "start", 0)) != 0:
            raise ValueError(f"Discrete action spaces must start at 0, got start={action_space.start}")
        return int(n), ()
    shape = getattr(action_space, "shape", None)
    if shape is not None and np.issubdtype(getattr(action_space, "dtype", np.float32), np.floating):
        return None, tuple(int(v) for v in shape)
    raise ValueError(f"unsupported action space {action_space!r}; expected Discrete, Box, int or shape tuple")


class RewardEnsemble(EnsembleFitting):
    """An ensemble of reward predictors r̂(o, a) trained on comparisons (see module docstring).

    obs_shape: one observation's shape ((4, 84, 84) uint8 on Atari).
    action_space: gymnasium Discrete/Box, an int (Discrete n) or a tuple (Box shape).
    arch: 'cnn' (the paper's Atari net), 'mlp' (vector net) or 'auto' (cnn for 3-D obs).
    reward_std: each member's output is normalised to this std (Atari 0.05, else 1.0).
    conv_dtype: 'float32' or 'bfloat16': the CNN's conv stack precision (see FusedCNN);
        the MLP always runs in float32.
    lr, batch_size, noise, l2_rule, eval_size: the fit's (rlhp_core/reward/fitting.py:
        ``EnsembleFitting._init_fitting`` and :class:`L2Rule`).
    """

    def __init__(
        self,
        obs_shape: Sequence[int],
        action_space,
        *,
        n_members: int = 3,
        arch: str = "auto",
        dropout: float = 0.0,
        lr: float = 3e-4,
        batch_size: int = 32,
        reward_std: float = 1.0,
        noise: float = 0.1,
        l2_rule: L2Rule = L2Rule(),
        eval_size: int | None | str = "auto",
        conv_dtype: str = "float32",
        seed: int = 0,
        device: str | torch.device = "cpu",
    ):
        self.obs_shape = tuple(int(v) for v in obs_shape)
        self.n_actions, self.act_shape = _space_to_action_spec(action_space)
        if arch == "auto":
            arch = "cnn" if len(self.obs_shape) == 3 else "mlp"
        if arch not in ("cnn", "mlp"):
            raise ValueError(f"arch must be 'cnn', 'mlp' or 'auto', got {arch!r}")
        if n_members < 1:
            raise ValueError(f"n_members must be >= 1, got {n_members}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if conv_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"conv_dtype must be 'float32' or 'bfloat16', got {conv_dtype!r}")
        if reward_std <= 0:
            raise ValueError(f"reward_std must be > 0, got {reward_std}")
        self.arch = arch
        self.n_members = int(n_members)
        self.dropout = float(dropout)
        self.reward_std = float(reward_std)
        self.seed = int(seed)
        self.device = torch.device(device)
        self.infer_chunk = 1024 if arch == "cnn" else 65536
        """States per forward pass in inference (bounds memory)."""

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            if arch == "cnn":
                self.net: nn.Module = FusedCNN(self.n_members, self.obs_shape, self.dropout,
                                               conv_dtype=getattr(torch, conv_dtype))
            else:
                obs_dim = int(np.prod(self.obs_shape)) if self.obs_shape else 1
                act_dim = self.n_actions if self.n_actions is not None else int(np.prod(self.act_shape))
                self.net = FusedMLP(self.n_members, obs_dim + act_dim, self.dropout)
        self.net.to(self.device)
        self.net.generator = self._torch_gen = torch.Generator(device=self.device)
        self.net.eval()  # the mode flag is unused: every call passes ``training`` explicitly
        self._init_fitting(lr, batch_size, noise, l2_rule, eval_size, self.seed)
        self.norm_mean = np.zeros(self.n_members, dtype=np.float64)
        self.norm_std = np.ones(self.n_members, dtype=np.float64)
        self.norm_weight = np.ones(self.n_members, dtype=np.float64)
        """Each member's weight in r̂: 0 for one whose last fit failed the chance test (normalization.py)."""
        self.raw_std = np.ones(self.n_members, dtype=np.float64)
        """Each member's raw per-step std on the last normalisation sample, before the floor (a health metric)."""
        self.norm_count = 0

    @classmethod
    def from_config(cls, cfg, obs_shape: Sequence[int], action_space, device: str | torch.device = "cpu", **overrides):
        """Build from a *resolved* TrainConfig (rlhp_core.config.resolve): ensemble_size,
        dropout, reward_lr, reward_batch, reward_std, reward_dtype, adaptive_l2 (False: no L2 at all, the
        paper's 'no regularisation' ablation), seed. ``overrides`` go to the constructor."""
        if cfg.reward_std is None or cfg.dropout is None:
            raise ValueError("from_config needs a resolved TrainConfig (reward_std/dropout are None); call config.resolve first")
        kw = dict(
            n_members=cfg.ensemble_size,
            dropout=cfg.dropout,
            lr=cfg.reward_lr,
            batch_size=cfg.reward_batch,
            reward_std=cfg.reward_std,
            # the config's adaptive_l2=False is the 'no regularisation' ablation's L2 part
            l2_rule=L2Rule() if cfg.adaptive_l2 else L2Rule(init=0.0, adaptive=False),
            conv_dtype=cfg.reward_dtype,
            seed=cfg.seed,
            device=device,
        )
        kw.update(overrides)
        return cls(obs_shape, action_space, **kw)

    # --- plumbing -------------------------------------------------------------------------
    @property
    def uses_actions(self) -> bool:
        return self.net.uses_actions

    def to(self, device: str | torch.device) -> "RewardEnsemble":
        self.device = torch.device(device)
        self.net.to(self.device)
        if self._torch_gen.device != self.device:  # reseeded at every train call
            self.net.generator = self._torch_gen = torch.Generator(device=self.device)
        for state in self.optimizer.state.values():
            for k, v in state.items():
                if isinstance(v, torch.Tensor) and v.dim() > 0:
                    state[k] = v.to(self.device)
        return self

    def _check_obs(self, obs, name: str = "obs") -> np.ndarray | torch.Tensor:
        if not isinstance(obs, torch.Tensor):
            obs = np.asarray(obs)
        shape = tuple(obs.shape)
        want = "(" + ", ".join(["B"] + [str(v) for v in self.obs_shape]) + ")"
        if len(shape) != 1 + len(self.obs_shape) or shape[1:] != self.obs_shape:
            raise ValueError(f"{name}: expected shape {want}, got {shape}")
        if self.arch == "cnn":
            ok = obs.dtype == (torch.uint8 if isinstance(obs, torch.Tensor) else np.uint8)
            if not ok:
                raise ValueError(f"{name}: expected dtype uint8 frames, got {obs.dtype}")
        else:
            if isinstance(obs, torch.Tensor):
                is_num = not obs.is_complex()
            else:
                is_num = (np.issubdtype(obs.dtype, np.number) and not np.issubdtype(obs.dtype, np.complexfloating)) or obs.dtype == np.bool_
            if not is_num:
                raise ValueError(f"{name}: expected a real numeric dtype, got {obs.dtype}")
        return obs

    def _check_actions(self, actions, batch_shape: tuple, name: str = "actions"):
        if actions is None:
            if self.uses_actions:
                raise ValueError(f"{name}: this reward model takes actions (r̂(o, a)); got None")
            return None
        if not isinstance(actions, torch.Tensor):
            actions = np.asarray(actions)
        shape = tuple(actions.shape)
        if self.n_actions is not None:
            if shape != batch_shape:
                raise ValueError(f"{name}: expected shape {batch_shape} (Discrete action indices), got {shape}")
            is_int = (not actions.is_floating_point()) if isinstance(actions, torch.Tensor) else np.issubdtype(actions.dtype, np.integer)
            if not is_int:
                raise ValueError(f"{name}: expected an integer dtype for Discrete actions, got {actions.dtype}")
            if actions.size if isinstance(actions, np.ndarray) else actions.numel():
                lo, hi = int(actions.min()), int(actions.max())
                if lo < 0 or hi >= self.n_actions:
                    raise ValueError(f"{name}: expected Discrete actions in [0, {self.n_actions}), got values in [{lo}, {hi}]")
        else:
            want = batch_shape + self.act_shape
            if shape != want:
                raise ValueError(f"{name}: expected shape {want} (Box actions), got {shape}")
        return actions

    def _tensor(self, x) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            if not x.flags.writeable or any(st < 0 for st in x.strides):
                x = np.array(x)  # torch.from_numpy takes neither read-only nor reversed arrays
            x = torch.from_numpy(x)
        return x.to(self.device, non_blocking=False)

    def _features(self, obs: torch.Tensor, actions: torch.Tensor | None, lead: int) -> torch.Tensor:
        """MLP input: concat(flat obs, one-hot or float action) over the ``lead`` batch dims."""
        shape = obs.shape[:lead]
        o = obs.reshape(*shape, -1).float()
        if self.n_actions is not None:
            a = F.one_hot(actions.long(), self.n_actions).float()
        else:
            a = actions.reshape(*shape, -1).float()
        return torch.cat([o, a], dim=-1)

    def _forward_members(self, obs, actions, training: bool) -> torch.Tensor:
        """obs (M, N, *obs_shape), actions (M, N, ...) -> raw (M, N)."""
        o = self._tensor(obs)
        if self.arch == "cnn":
            return self.net.forward_members(o, training=training)
        return self.net.forward_members(self._features(o, self._tensor(actions), 2), training=training)

    def _forward_shared(self, obs, actions) -> torch.Tensor:
        """obs (N, *obs_shape) shared by all members -> raw (M, N), eval mode, in chunks."""
        n = obs.shape[0]
        outs = []
        for s in range(0, max(n, 1), self.infer_chunk):
            o = self._tensor(obs[s : s + self.infer_chunk])
            if self.arch == "cnn":
                outs.append(self.net.forward_shared(o, training=False))
            else:
                a = self._tensor(actions[s : s + self.infer_chunk])
                outs.append(self.net.forward_shared(self._features(o, a, 1), training=False))
        return torch.cat(outs, dim=1) if outs else torch.zeros(self.n_members, 0, device=self.device)

    def raw_rewards(self, obs, actions=None) -> np.ndarray:
        """Unnormalised per-member rewards (M, B) for a batch of states (eval mode:
        batch-norm running statistics, no dropout; never changes the module's state)."""
        obs = self._check_obs(obs)
        actions = self._check_actions(actions, tuple(obs.shape[:1]))
        with torch.inference_mode():
            return self._forward_shared(obs, actions).double().cpu().numpy()

    # --- inference for the learner ------------------------------------------------------
    def predict_members(self, obs, actions=None) -> np.ndarray:
        """Normalised per-member rewards (M, B): (raw - mean_m) / std_m * reward_std * weight_m
        (std_m floored and weight_m set by :meth:`update_normalization`)."""
        raw = self.raw_rewards(obs, actions)
        return (raw - self.norm_mean[:, None]) / self.norm_std[:, None] * (self.reward_std * self.norm_weight[:, None])

    def predict(self, obs, actions=None) -> np.ndarray:
        """r̂ for a batch of states (all envs at once): (B,) float32, the mean over members of
        each member's normalised output. Eval mode (batch-norm running stats, no dropout)."""
        return self.predict_members(obs, actions).mean(axis=0).astype(np.float32)

    def update_normalization(self, obs, actions=None, *, segment_length: int = 25, fit_metrics: dict | None = None) -> dict:
        """Set each member's (mean, std) from the raw outputs on these states (a sample of
        recent agent states, e.g. the last rollouts). Replaces the previous statistics.
        Returns them. On this very batch each member's normalised output then has mean 0 and
        std ``reward_std``, unless its raw std is below the floor for ``segment_length``-step
        segments; ``fit_metrics`` (from :meth:`train`) set each member's weight by the chance
        test. Both rules: rlhp_core/reward/normalization.py."""
        raw = self.raw_rewards(obs, actions)
        if raw.shape[1] < 2:
            raise ValueError(f"update_normalization needs at least 2 states, got {raw.shape[1]}")
        self.norm_mean = raw.mean(axis=1)
        self.raw_std = raw.std(axis=1)
        self.norm_std = np.maximum(self.raw_std, std_floor(segment_length))
        if fit_metrics is not None and "val_decisive_members" in fit_metrics:
            self.norm_weight = member_weights(fit_metrics["val_accuracy_members"], fit_metrics["val_decisive_members"])
        self.norm_count = raw.shape[1]
        return {"norm_mean": self.norm_mean.tolist(), "norm_std": self.norm_std.tolist(),
                "norm_weight": self.norm_weight.tolist()}

    # --- save / load ----------------------------------------------------------------------
    def _signature(self) -> dict:
        return {
            "obs_shape": list(self.obs_shape),
            "n_actions": self.n_actions,
            "act_shape": list(self.act_shape),
            "arch": self.arch,
            "n_members": self.n_members,
        }

    def state_dict(self) -> dict:
        """Networks (incl. batch-norm statistics), optimiser, L2 coefficients, normalisation
        statistics, counters and the internal RNG. Tensors and plain Python values only, so
        ``torch.load(..., weights_only=True)`` reads it."""
        return {
            "version": 1,
            "signature": self._signature(),
            "net": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "l2": torch.from_numpy(self.l2.copy()),
            "norm_mean": torch.from_numpy(self.norm_mean.copy()),
            "norm_std": torch.from_numpy(self.norm_std.copy()),
            "norm_weight": torch.from_numpy(self.norm_weight.copy()),
            "raw_std": torch.from_numpy(self.raw_std.copy()),
            "norm_count": self.norm_count,
            "rng": self._rng.bit_generator.state,
            "train_steps": self.train_steps,
            "comparisons_seen": self.comparisons_seen,
        }

    def load_state_dict(self, sd: dict) -> None:
        if sd.get("signature") != self._signature():
            raise ValueError(f"reward model state is for {sd.get('signature')}, this model is {self._signature()}")
        self.net.load_state_dict(sd["net"])
        self.optimizer.load_state_dict(sd["optimizer"])
        self.l2 = sd["l2"].double().numpy().copy()
        self.norm_mean = sd["norm_mean"].double().numpy().copy()
        self.norm_std = sd["norm_std"].double().numpy().copy()
        ones = torch.ones(self.n_members, dtype=torch.float64)  # states saved before these existed
        self.norm_weight = sd.get("norm_weight", ones).double().numpy().copy()
        self.raw_std = sd.get("raw_std", sd["norm_std"]).double().numpy().copy()
        self.norm_count = int(sd["norm_count"])
        self._rng.bit_generator.state = sd["rng"]
        self.train_steps = int(sd["train_steps"])
        self.comparisons_seen = int(sd["comparisons_seen"])
        self.to(self.device)

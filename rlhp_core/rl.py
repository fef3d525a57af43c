"""Policy-gradient RL on a given reward: A2C (the paper's) and PPO.

The learner loop owns the environments and the reward (the predicted r̂, or the true reward for
the baseline); an algorithm here only *acts* on a batch of observations and *updates* from a
:class:`Rollout` of ``n_steps`` x ``num_envs`` transitions::

    algo = make_algo("a2c", obs_shape, obs_dtype, action_space, settings, device, seed)
    obs = envs.reset()
    for update in range(num_updates):
        for t in range(algo.n_steps):
            actions, extras = algo.act(obs)   # sampled; extras = {"values", "logprobs"}
            ...                               # step the envs, compute rewards, fill the Rollout
        metrics = algo.update(rollout)

References:
- A2C: Mnih et al. 2016 (A3C), synchronous as in OpenAI baselines ``a2c``; the paper's
  appendix A.2 settings: lr 7e-4 decayed linearly to 0, 5 steps x 16 envs, gamma 0.99,
  entropy 0.01, RMSProp (alpha 0.99, eps 1e-5), value coef 0.5, grad-norm clip 0.5.
  RMSProp is TensorFlow's (eps inside the square root, mean square initialised to 1), which the
  paper's numbers were tuned with; torch's RMSprop behaves differently at eps 1e-5.
- PPO: Schulman et al. 2017, as in CleanRL ``ppo_atari.py`` / ``ppo_continuous_action.py``.

Elsewhere: the settings and their per-network defaults in :mod:`rlhp_core.rl_settings`; the
networks (Nature-CNN, MLP) and action distributions in :mod:`rlhp_core.policies`; TensorFlow's
RMSProp in :mod:`rlhp_core.rmsprop_tf`.

Determinism: network init, action sampling and PPO's minibatch shuffling each use their own
generator seeded from ``seed`` (the global torch RNG is neither used nor disturbed), so the same
seed and the same inputs give the same actions and parameters on CPU. ``state_dict`` holds the
networks, optimizer, step counter (lr schedule) and generator states.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ALGOS
from .policies import MLPActorCritic, NatureCNN, Policy
from .rl_settings import POLICIES, RLSettings, resolve_settings
from .rmsprop_tf import RMSpropTF


# =================================================================================================
# Rollout
# =================================================================================================
@dataclass
class Rollout:
    """``n_steps`` x ``num_envs`` transitions, time-major. Built by the learner loop."""

    obs: np.ndarray
    """(T, N, *obs_shape) the observation each action was taken in."""
    actions: np.ndarray
    """(T, N) int for Discrete, (T, N, act_dim) float for Box (the unclipped sample from act())."""
    rewards: np.ndarray
    """(T, N) float32, the reward to optimise (predicted r̂ or the true reward)."""
    dones: np.ndarray
    """(T, N) bool: the episode ended after step t and the agent may know it (all False in the
    paper's no-episode-signal setting). No bootstrapping across a done."""
    timeouts: np.ndarray
    """(T, N) bool, a subset of ``dones``: truncations, bootstrapped with gamma * V(final obs)."""
    final_values_obs: np.ndarray | None
    """(T, N, *obs_shape) the final obs where ``timeouts`` (other entries ignored), or None if no timeouts."""
    last_obs: np.ndarray
    """(N, *obs_shape) the observation after the last step (for the bootstrap value)."""
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    """What act() returned, stacked to (T, N): 'values' and 'logprobs'."""


# =================================================================================================
# Shared actor-critic machinery
# =================================================================================================
class _ActorCritic:
    """act / predict / returns / lr schedule / state_dict, shared by A2C and PPO."""

    name = ""

    def __init__(self, obs_shape, obs_dtype, action_space: gym.Space, settings: RLSettings,
                 device: torch.device | str, seed: int):
        self.obs_shape = tuple(int(d) for d in obs_shape)
        self.obs_dtype = np.dtype(obs_dtype)
        self.device = torch.device(device)
        self.seed = int(seed)
        if isinstance(action_space, gym.spaces.Discrete):
            self.continuous, n_out, self.action_shape = False, int(action_space.n), ()
        elif isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
            self.continuous, n_out, self.action_shape = True, int(action_space.shape[0]), tuple(action_space.shape)
        else:
            raise ValueError(f"action_space {action_space} is not supported; expected Discrete or a 1-D Box")
        policy = settings.policy
        if policy not in POLICIES:
            raise ValueError(f"policy {policy!r} is not one of {POLICIES}")
        image = len(self.obs_shape) == 3
        if policy == "auto":
            policy = "cnn" if image and self.obs_dtype == np.uint8 else "mlp"
        if policy == "cnn" and not image:
            raise ValueError(f"policy 'cnn' needs (C, H, W) observations, got obs_shape {self.obs_shape}")
        self.policy_kind = policy
        self.settings = resolve_settings(self.name, settings, policy)
        self.n_steps = self.settings.n_steps

        # Networks are initialised from `seed` without touching the global torch RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            if policy == "cnn":
                body = NatureCNN(self.obs_shape, self.obs_dtype, n_out)
            else:
                body = MLPActorCritic(int(np.prod(self.obs_shape)), n_out, self.settings.mlp_hidden)
            self.net = Policy(body, self.continuous, n_out, self.settings.init_log_std).to(self.device)
        self.optimizer = self._make_optimizer()
        self._act_gen = torch.Generator(device=self.device).manual_seed(self.seed)
        self._eval_gen = torch.Generator(device=self.device).manual_seed(self.seed + 1)
        self._shuffle_gen = torch.Generator().manual_seed(self.seed + 2)
        self.steps_seen = 0
        """Agent steps consumed by update() so far (drives the lr schedule)."""
        self.num_updates = 0
        self._act_forwards: deque = deque(maxlen=self.n_steps)  # (obs, out, value) of the last acts

    def _make_optimizer(self) -> torch.optim.Optimizer:
        raise NotImplementedError

    # --- acting (hot path) -------------------------------------------------------------------------
    def _obs_tensor(self, obs: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(obs, device=self.device)

    keeps_act_graph = False
    """A2C: act() keeps its forward pass (with autograd) for the next update, which then needs no
    second forward over the same frames with the same weights (see :meth:`_forwards_of`)."""

    def act(self, obs: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Sample actions for a batch (N, *obs_shape). Returns actions (N,) int64 or (N, act_dim)
        float32 (unclipped), and extras {'values': (N,), 'logprobs': (N,)} float32."""
        keep = self.keeps_act_graph
        if keep:  # a private copy: the graph saves its input, and the caller may reuse its array
            obs = np.array(obs, copy=True)
        with torch.set_grad_enabled(keep):
            out, value = self.net(self._obs_tensor(obs))
        with torch.no_grad():
            action, logp = self.net.sample(out, self._act_gen)
        if keep:
            self._act_forwards.append((obs, out, value))
        return action.cpu().numpy(), {"values": value.detach().cpu().numpy(), "logprobs": logp.cpu().numpy()}

    @torch.no_grad()
    def predict(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """Actions for a batch (N, *obs_shape) or a single observation: the mode (argmax / Gaussian
        mean) when ``deterministic``, else a sample from a separate evaluation generator (so that
        evaluation does not change the training stream)."""
        obs = np.asarray(obs)
        single = obs.shape == self.obs_shape
        x = self._obs_tensor(obs[None] if single else obs)
        out, _ = self.net(x)
        action = self.net.mode(out) if deterministic else self.net.sample(out, self._eval_gen)[0]
        action = action.cpu().numpy()
        return action[0] if single else action

    @torch.no_grad()
    def value(self, obs: np.ndarray) -> np.ndarray:
        """V(obs) for a batch (N, *obs_shape), float32."""
        return self.net(self._obs_tensor(obs))[1].cpu().numpy()

    # --- update helpers --------------------------------------------------------------------------
    def _set_lr(self) -> float:
        s = self.settings
        frac = max(0.0, 1.0 - self.steps_seen / s.total_steps) if s.anneal_lr else 1.0
        lr = s.lr * frac
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def _check(self, r: Rollout) -> None:
        if r.rewards.ndim != 2:
            raise ValueError(f"rollout rewards must be (T, N), got shape {r.rewards.shape}")
        T, N = r.rewards.shape
        if N != self.settings.num_envs:
            raise ValueError(f"rollout has {N} envs, expected num_envs={self.settings.num_envs}")
        expect = {
            "obs": (T, N, *self.obs_shape),
            "actions": (T, N, *self.action_shape),
            "dones": (T, N),
            "timeouts": (T, N),
            "last_obs": (N, *self.obs_shape),
        }
        for key, shape in expect.items():
            got = np.shape(getattr(r, key))
            if got != shape:
                raise ValueError(f"rollout {key} has shape {got}, expected {shape}")
        for key in ("values", "logprobs"):
            if key not in r.extras:
                raise ValueError(f"rollout extras lack {key!r} (pass what act() returned, stacked to (T, N))")
            if np.shape(r.extras[key]) != (T, N):
                raise ValueError(f"rollout extras[{key!r}] has shape {np.shape(r.extras[key])}, expected {(T, N)}")
        timeouts = np.asarray(r.timeouts, dtype=bool)
        if timeouts.any():
            if (timeouts & ~np.asarray(r.dones, dtype=bool)).any():
                raise ValueError("rollout timeouts must be a subset of dones")
            if r.final_values_obs is None:
                raise ValueError("rollout has timeouts but final_values_obs is None; expected (T, N, *obs_shape)")
            if np.shape(r.final_values_obs) != (T, N, *self.obs_shape):
                raise ValueError(f"rollout final_values_obs has shape {np.shape(r.final_values_obs)}, "
                                 f"expected {(T, N, *self.obs_shape)}")

    def _advantages(self, r: Rollout) -> tuple[np.ndarray, np.ndarray]:
        """GAE(lambda) advantages and returns (T, N) float32. Truncations are bootstrapped SB3-style:
        r_t += gamma * V(final obs), then the step counts as terminal."""
        s = self.settings
        rewards = np.array(r.rewards, dtype=np.float32)  # copy: the caller's array stays untouched
        timeouts = np.asarray(r.timeouts, dtype=bool)
        if timeouts.any():
            rewards[timeouts] += s.gamma * self.value(np.asarray(r.final_values_obs)[timeouts])
        values = np.asarray(r.extras["values"], dtype=np.float32)
        nonterminal = 1.0 - np.asarray(r.dones, dtype=np.float32)
        next_value = self.value(r.last_obs)
        adv = np.zeros_like(rewards)
        last = np.zeros_like(next_value)
        for t in reversed(range(rewards.shape[0])):
            delta = rewards[t] + s.gamma * next_value * nonterminal[t] - values[t]
            last = delta + s.gamma * s.gae_lambda * nonterminal[t] * last
            adv[t] = last
            next_value = values[t]
        return adv, adv + values

    def _flat(self, r: Rollout) -> tuple[torch.Tensor, torch.Tensor]:
        T, N = r.rewards.shape
        obs = torch.as_tensor(np.asarray(r.obs), device=self.device).reshape(T * N, *self.obs_shape)
        act_dtype = torch.float32 if self.continuous else torch.int64
        actions = torch.as_tensor(np.asarray(r.actions), device=self.device, dtype=act_dtype)
        return obs, actions.reshape(T * N, *self.action_shape)

    def _forwards_of(self, r: Rollout, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The network's outputs (with autograd) on the rollout's T*N observations: those of the
        last T act() calls when they were made on exactly these observations (the learner's loop),
        else a fresh forward pass (any other caller, e.g. after a resume). The same numbers either
        way, with the same weights: nothing changes the weights between act() and update()."""
        kept, self._act_forwards = list(self._act_forwards), deque(maxlen=self.n_steps)
        if len(kept) == len(r.obs) and all(np.array_equal(o, r.obs[t]) for t, (o, _, _) in enumerate(kept)):
            return torch.cat([out for _, out, _ in kept]), torch.cat([v for _, _, v in kept])
        return self.net(obs)

    def _finish(self, r: Rollout) -> None:
        self.steps_seen += int(r.rewards.size)
        self.num_updates += 1

    @staticmethod
    def _explained_variance(values: np.ndarray, returns: np.ndarray) -> float:
        var = float(np.var(returns))
        return float("nan") if var == 0 else 1.0 - float(np.var(returns - values)) / var

    # --- persistence -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue identically: networks, optimizer, counters, RNG states.
        Only tensors and plain Python values (safe for ``torch.load(weights_only=True)``). Like
        ``nn.Module.state_dict`` it references live tensors: serialise it (torch.save) or deep-copy
        it to keep a snapshot while training goes on."""
        return {
            "algo": self.name,
            "settings": dataclasses.asdict(self.settings),
            "net": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "steps_seen": self.steps_seen,
            "num_updates": self.num_updates,
            "act_gen": self._act_gen.get_state(),
            "eval_gen": self._eval_gen.get_state(),
            "shuffle_gen": self._shuffle_gen.get_state(),
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        if d.get("algo") != self.name:
            raise ValueError(f"state is for algo {d.get('algo')!r}, this is {self.name!r}")
        self.net.load_state_dict(d["net"])
        self.optimizer.load_state_dict(d["optimizer"])
        self._act_forwards.clear()  # made with the weights before the load
        self.steps_seen = int(d["steps_seen"])
        self.num_updates = int(d["num_updates"])
        self._act_gen.set_state(d["act_gen"].cpu())
        self._eval_gen.set_state(d["eval_gen"].cpu())
        self._shuffle_gen.set_state(d["shuffle_gen"].cpu())

    def _prepare(self, rollout: Rollout):
        """What every update starts with: validate, set the decayed lr, advantages and returns,
        flattened obs/actions, and advantages/returns as flat tensors."""
        self._check(rollout)
        lr = self._set_lr()
        adv, returns = self._advantages(rollout)
        obs, actions = self._flat(rollout)
        adv_t = torch.as_tensor(adv.reshape(-1), device=self.device)
        ret_t = torch.as_tensor(returns.reshape(-1), device=self.device)
        return lr, returns, obs, actions, adv_t, ret_t

    def _step(self, loss: torch.Tensor) -> torch.Tensor:
        """One optimiser step on ``loss`` with the gradient clipped to ``max_grad_norm``; returns the
        norm before clipping."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(self.net.parameters(), self.settings.max_grad_norm, foreach=True)
        self.optimizer.step()
        return grad_norm


# =================================================================================================
# A2C
# =================================================================================================
class A2C(_ActorCritic):
    """Synchronous advantage actor-critic (baselines ``a2c``): one gradient step per rollout on
    n-step returns (gae_lambda 1), loss = pg - ent_coef * entropy + vf_coef * MSE(V, R)."""

    name = "a2c"
    keeps_act_graph = True

    def _make_optimizer(self) -> torch.optim.Optimizer:
        s = self.settings
        if s.rms_tf_like:
            return RMSpropTF(self.net.parameters(), lr=s.lr, alpha=s.rms_alpha, eps=s.rms_eps)
        return torch.optim.RMSprop(self.net.parameters(), lr=s.lr, alpha=s.rms_alpha, eps=s.rms_eps)

    def update(self, rollout: Rollout) -> dict[str, float]:
        s = self.settings
        lr, returns, obs, actions, adv_t, ret_t = self._prepare(rollout)

        out, value = self._forwards_of(rollout, obs)
        logp, entropy = self.net.log_prob_entropy(out, actions)
        pg_loss = -(adv_t * logp).mean()
        v_loss = F.mse_loss(value, ret_t)
        ent = entropy.mean()
        loss = pg_loss - s.ent_coef * ent + s.vf_coef * v_loss

        grad_norm = self._step(loss)
        self._finish(rollout)
        return {
            "losses/policy": pg_loss.item(),
            "losses/value": v_loss.item(),
            "losses/entropy": ent.item(),
            "losses/grad_norm": grad_norm.item(),
            "losses/explained_variance": self._explained_variance(rollout.extras["values"], returns),
            "charts/learning_rate": lr,
        }


# =================================================================================================
# PPO
# =================================================================================================
class PPO(_ActorCritic):
    """Clipped-surrogate PPO (CleanRL ``ppo_atari.py``): GAE, ``update_epochs`` passes of
    ``num_minibatches`` minibatches, per-minibatch advantage normalisation, clipped value loss
    0.5 * max((V-R)^2, (V_clip-R)^2), Adam (eps 1e-5), grad-norm clip."""

    name = "ppo"

    def _make_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.net.parameters(), lr=self.settings.lr, eps=self.settings.adam_eps, foreach=True)

    def update(self, rollout: Rollout) -> dict[str, float]:
        s = self.settings
        lr, returns, b_obs, b_actions, b_adv, b_ret = self._prepare(rollout)
        b_val = torch.as_tensor(np.asarray(rollout.extras["values"], np.float32).reshape(-1), device=self.device)
        b_logp = torch.as_tensor(np.asarray(rollout.extras["logprobs"], np.float32).reshape(-1), device=self.device)
        batch = b_adv.shape[0]
        n_mb = min(s.num_minibatches, batch)

        sums = torch.zeros(6, device=self.device)  # pg, v, ent, approx_kl, clipfrac, grad_norm (no per-step sync)
        n = 0
        for _epoch in range(s.update_epochs):
            perm = torch.randperm(batch, generator=self._shuffle_gen).to(self.device)
            for mb in torch.tensor_split(perm, n_mb):
                out, value = self.net(b_obs[mb])
                logp, entropy = self.net.log_prob_entropy(out, b_actions[mb])
                logratio = logp - b_logp[mb]
                ratio = logratio.exp()
                with torch.no_grad():
                    approx_kl = ((ratio - 1) - logratio).mean()  # http://joschu.net/blog/kl-approx.html
                    clipfrac = ((ratio - 1.0).abs() > s.clip_coef).float().mean()

                mb_adv = b_adv[mb]
                if s.norm_adv and mb_adv.numel() > 1:
                    mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
                pg_loss = torch.max(-mb_adv * ratio, -mb_adv * ratio.clamp(1 - s.clip_coef, 1 + s.clip_coef)).mean()

                if s.clip_vloss:
                    v_clipped = b_val[mb] + (value - b_val[mb]).clamp(-s.clip_coef, s.clip_coef)
                    v_loss = 0.5 * torch.max((value - b_ret[mb]).square(), (v_clipped - b_ret[mb]).square()).mean()
                else:
                    v_loss = 0.5 * (value - b_ret[mb]).square().mean()
                ent = entropy.mean()
                loss = pg_loss - s.ent_coef * ent + s.vf_coef * v_loss

                grad_norm = self._step(loss)
                sums += torch.stack([pg_loss.detach(), v_loss.detach(), ent.detach(), approx_kl,
                                     clipfrac, grad_norm.detach()])
                n += 1
            if s.target_kl is not None and approx_kl.item() > s.target_kl:
                break

        self._finish(rollout)
        m = (sums / max(n, 1)).tolist()
        return {
            "losses/policy": m[0],
            "losses/value": m[1],
            "losses/entropy": m[2],
            "losses/approx_kl": m[3],
            "losses/clipfrac": m[4],
            "losses/grad_norm": m[5],
            "losses/explained_variance": self._explained_variance(rollout.extras["values"], returns),
            "charts/learning_rate": lr,
        }


# =================================================================================================
# Factory
# =================================================================================================
def make_algo(name: str, obs_shape, obs_dtype, action_space: gym.Space, settings: RLSettings,
              device: torch.device | str, seed: int) -> A2C | PPO:
    """Build 'a2c' or 'ppo' for observations of ``obs_shape`` / ``obs_dtype`` and ``action_space``.
    ``algo.settings`` holds the resolved settings (None defaults filled)."""
    if name == "a2c":
        return A2C(obs_shape, obs_dtype, action_space, settings, device, seed)
    if name == "ppo":
        return PPO(obs_shape, obs_dtype, action_space, settings, device, seed)
    raise ValueError(f"algo {name!r} is not one of {ALGOS}")

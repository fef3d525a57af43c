"""The policy networks of A2C and PPO, and their action distributions.

Nature-CNN (Mnih et al. 2015) shared trunk for uint8 image stacks, orthogonal init as baselines;
two 64-unit tanh MLPs (separate actor and critic) for vector observations, as CleanRL.
Categorical policy for ``Discrete``, diagonal Gaussian with a state-independent log-std for
``Box`` (the unclipped sample is returned; the env layer clips). Sampling takes an explicit
generator, so the global torch RNG is neither used nor disturbed.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def _layer_init(layer: nn.Module, gain: float = math.sqrt(2), bias: float = 0.0) -> nn.Module:
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.constant_(layer.bias, bias)
    return layer


class NatureCNN(nn.Module):
    """Mnih et al. 2015 trunk (32 8x8/4, 64 4x4/2, 64 3x3/1, dense 512, ReLU) shared by a policy
    head (gain 0.01) and a value head (gain 1), orthogonal init as OpenAI baselines.
    Input (B, C, H, W); uint8 input is scaled by 1/255 on the fly."""

    def __init__(self, obs_shape: tuple[int, ...], obs_dtype: np.dtype, n_out: int):
        super().__init__()
        c = obs_shape[0]
        self.scale = 1.0 / 255.0 if obs_dtype == np.uint8 else 1.0
        self.convs = nn.Sequential(
            _layer_init(nn.Conv2d(c, 32, 8, stride=4)), nn.ReLU(),
            _layer_init(nn.Conv2d(32, 64, 4, stride=2)), nn.ReLU(),
            _layer_init(nn.Conv2d(64, 64, 3, stride=1)), nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            n_flat = self.convs(torch.zeros(1, *obs_shape)).shape[1]
        self.fc = nn.Sequential(_layer_init(nn.Linear(n_flat, 512)), nn.ReLU())
        self.pi = _layer_init(nn.Linear(512, n_out), gain=0.01)
        self.v = _layer_init(nn.Linear(512, 1), gain=1.0)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = obs.to(torch.float32)
        if self.scale != 1.0:  # uint8 input: .to() made a fresh tensor, scale it in place
            x = x.mul_(self.scale)
        h = self.fc(self.convs(x))
        return self.pi(h), self.v(h).squeeze(-1)


class MLPActorCritic(nn.Module):
    """Separate actor and critic, each two tanh layers, orthogonal init as CleanRL
    (hidden gain sqrt 2, actor output 0.01, critic output 1). Observations are flattened."""

    def __init__(self, obs_dim: int, n_out: int, hidden: int = 64):
        super().__init__()

        def mlp(out: int, gain: float) -> nn.Sequential:
            return nn.Sequential(
                _layer_init(nn.Linear(obs_dim, hidden)), nn.Tanh(),
                _layer_init(nn.Linear(hidden, hidden)), nn.Tanh(),
                _layer_init(nn.Linear(hidden, out), gain=gain),
            )

        self.actor = mlp(n_out, 0.01)
        self.critic = mlp(1, 1.0)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = obs.reshape(obs.shape[0], -1).to(torch.float32)
        return self.actor(x), self.critic(x).squeeze(-1)


class Policy(nn.Module):
    """A network plus the action distribution: Categorical over logits (Discrete) or a diagonal
    Gaussian with a state-independent, learned log-std (Box). Sampling takes an explicit generator."""

    def __init__(self, body: nn.Module, continuous: bool, act_dim: int, init_log_std: float):
        super().__init__()
        self.body = body
        self.continuous = continuous
        if continuous:
            self.log_std = nn.Parameter(torch.full((act_dim,), float(init_log_std)))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(policy output: logits or Gaussian mean, value)."""
        return self.body(obs)

    def sample(self, out: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Sampled action and its log-probability."""
        if self.continuous:
            noise = torch.randn(out.shape, generator=gen, device=out.device, dtype=out.dtype)
            std = self.log_std.exp()
            action = out + std * noise
            logp = (-0.5 * noise.square() - self.log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
            return action, logp
        logp_all = F.log_softmax(out, dim=-1)
        u = torch.rand(out.shape, generator=gen, device=out.device, dtype=out.dtype)
        gumbel = -torch.log(-torch.log(u.clamp_(min=1e-20)))  # Gumbel-max trick: exact sampling
        action = torch.argmax(logp_all + gumbel, dim=-1)
        return action, logp_all.gather(-1, action.unsqueeze(-1)).squeeze(-1)

    def mode(self, out: torch.Tensor) -> torch.Tensor:
        return out if self.continuous else torch.argmax(out, dim=-1)

    def log_prob_entropy(self, out: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.continuous:
            z = (actions - out) * torch.exp(-self.log_std)
            logp = (-0.5 * z.square() - self.log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
            ent = (0.5 + 0.5 * math.log(2 * math.pi) + self.log_std).sum().expand(out.shape[0])
            return logp, ent
        logp_all = F.log_softmax(out, dim=-1)
        logp = logp_all.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
        ent = -(logp_all.exp() * logp_all).sum(-1)
        return logp, ent


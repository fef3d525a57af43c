"""The preference model and its loss (paper, section 2.2.3): pure math, no networks.

Bradley-Terry over the *summed* predicted reward of each segment::

    P(left > right) = exp(R_l) / (exp(R_l) + exp(R_r)) = sigmoid(R_l - R_r)

with the paper's allowance for a labeler who answers uniformly at random 10% of the time::

    P' = (1 - noise) * P + noise / 2          (noise = 0.1: 0.9 * softmax + 0.05)

and the loss is the cross-entropy of P' against the label's target distribution ``mu``
(left (1, 0), right (0, 1), equal (0.5, 0.5)). Incomparable answers are not trained on.

Everything is computed in log space (``logsigmoid`` + ``logaddexp``), so a return gap of
1e4 gives a finite loss and finite gradients (no ``log(0)``).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .segments import ANSWER_MU, check_answer

__all__ = [
    "preference_log_probs",
    "preference_prob",
    "preference_loss_per_item",
    "preference_loss",
    "answers_to_mu",
]


def _as_tensor(x, like: torch.Tensor | None = None) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    t = torch.as_tensor(np.asarray(x))
    if like is not None:
        t = t.to(device=like.device)
    return t


def _check_noise(noise: float) -> float:
    noise = float(noise)
    if not 0.0 <= noise < 1.0:
        raise ValueError(f"noise must be in [0, 1), got {noise}")
    return noise


def preference_log_probs(returns_left, returns_right, noise: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log P'(left), log P'(right))``, each shaped like the broadcast of the inputs.

    ``log((1 - noise) * sigmoid(d) + noise / 2)`` is evaluated as
    ``logaddexp(log(1 - noise) + logsigmoid(d), log(noise / 2))``: stable for any gap ``d``.
    """
    noise = _check_noise(noise)
    rl = _as_tensor(returns_left)
    rr = _as_tensor(returns_right, like=rl)
    if not rl.is_floating_point():
        rl = rl.double()
    if not rr.is_floating_point():
        rr = rr.to(rl.dtype)
    d = rl - rr
    log_pl = F.logsigmoid(d)
    log_pr = F.logsigmoid(-d)
    if noise > 0.0:
        a = math.log1p(-noise)
        b = torch.tensor(math.log(noise / 2.0), dtype=d.dtype, device=d.device)
        log_pl = torch.logaddexp(log_pl + a, b)
        log_pr = torch.logaddexp(log_pr + a, b)
    return log_pl, log_pr


def preference_prob(returns_left, returns_right, noise: float = 0.0) -> torch.Tensor:
    """P'(left > right); ``noise=0`` gives the plain Bradley-Terry probability."""
    log_pl, _ = preference_log_probs(returns_left, returns_right, noise)
    return log_pl.exp()


def preference_loss_per_item(returns_left, returns_right, mu, noise: float = 0.1) -> torch.Tensor:
    """Cross-entropy ``-(mu_l log P'_l + mu_r log P'_r)`` per comparison.

    returns_left, returns_right: (..., ) summed predicted rewards of each segment.
    mu: (..., 2) target distribution over (left, right).
    Returns a tensor shaped like ``returns_left``.
    """
    rl = _as_tensor(returns_left)
    mu_t = _as_tensor(mu, like=rl)
    if mu_t.shape[-1:] != (2,):
        raise ValueError(f"mu must have a last dimension of 2 (left, right), got shape {tuple(mu_t.shape)}")
    rr = _as_tensor(returns_right, like=rl)
    if rl.shape != rr.shape or tuple(mu_t.shape[:-1]) != tuple(rl.shape):
        raise ValueError(
            f"shapes must agree: returns_left {tuple(rl.shape)}, returns_right {tuple(rr.shape)}, "
            f"mu {tuple(mu_t.shape)} (expected returns_left.shape + (2,))"
        )
    log_pl, log_pr = preference_log_probs(rl, rr, noise)
    mu_t = mu_t.to(dtype=log_pl.dtype)
    return -(mu_t[..., 0] * log_pl + mu_t[..., 1] * log_pr)


def preference_loss(returns_left, returns_right, mu, noise: float = 0.1) -> torch.Tensor:
    """Mean over the batch of :func:`preference_loss_per_item` (a scalar tensor)."""
    return preference_loss_per_item(returns_left, returns_right, mu, noise).mean()


def answers_to_mu(answers: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Map answers to ``(mu (K, 2) float32, trainable (K,) bool)``.

    'left' -> (1, 0), 'right' -> (0, 1), 'equal' -> (0.5, 0.5); 'incomparable' -> mu (0, 0)
    and trainable False (kept in the label store, never trained on). Unknown answers raise
    ValueError.
    """
    answers = list(answers)
    mu = np.zeros((len(answers), 2), dtype=np.float32)
    trainable = np.zeros(len(answers), dtype=bool)
    for i, a in enumerate(answers):
        check_answer(a)
        if a in ANSWER_MU:
            mu[i] = ANSWER_MU[a]
            trainable[i] = True
    return mu, trainable

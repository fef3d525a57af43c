"""The preference model (paper, section 2.2.3): Bradley-Terry over summed rewards, and its loss.

Pure math, no networks. A segment's return R is the sum of r̂ over its steps, and

    P(left > right) = exp(R_l) / (exp(R_l) + exp(R_r)) = sigmoid(R_l - R_r)

:func:`bt_prob` is that probability, the one definition every caller uses: the members'
probabilities that query selection compares (rlhp_core/queries.py), and the scripted teachers'
Boltzmann-rational answers (oracles/teacher.py), ``sigmoid(beta * (R_l - R_r))`` with
``beta`` their rationality (the reward model's is 1: its returns are in logit units).

Training adds the paper's allowance for a labeler who answers uniformly at random 10% of the
time::

    P' = (1 - noise) * P + noise / 2          (noise = 0.1: 0.9 * softmax + 0.05)

and the loss is the cross-entropy of P' against the label's target distribution ``mu``
(left (1, 0), right (0, 1), equal (0.5, 0.5): rlhp_core/segments.ANSWER_MU). Incomparable
answers are not trained on.

Two versions of the same function, side by side: :func:`bt_prob` in numpy, for callers that
hold numpy returns, and :func:`preference_log_probs` in torch, in log space (``logsigmoid`` +
``logaddexp``) so that the loss has autograd and a return gap of 1e4 still gives a finite loss
and finite gradients (no ``log(0)``); with ``noise=0`` it is ``log(bt_prob)`` (tested). torch
is imported inside the torch functions: the teachers, the labeling tools and the sweep's
argument checks import this module without loading torch (~3 s).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["bt_prob", "preference_log_probs", "preference_loss_per_item"]


def bt_prob(left_returns, right_returns, beta: float = 1.0) -> np.ndarray:
    """Bradley-Terry P(left > right) = sigmoid(beta * (R_l - R_r)), elementwise.

    ``beta`` in [0, inf]: 1 for the reward model (its returns are logits); a teacher's
    rationality, where 0 is a coin and inf the rational limit (1 where R_l > R_r, 0 where
    R_l < R_r, 1/2 on a tie). Overflow-free, as sigmoid(x) = (1 + tanh(x / 2)) / 2.
    """
    d = np.subtract(left_returns, right_returns)
    if math.isinf(beta):
        return np.where(d > 0, 1.0, np.where(d < 0, 0.0, 0.5))
    return 0.5 * (1.0 + np.tanh(0.5 * beta * d))


def _as_tensor(x, like: torch.Tensor | None = None) -> torch.Tensor:
    import torch

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
    import torch
    import torch.nn.functional as F

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

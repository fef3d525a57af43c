"""TensorFlow-style RMSProp, what baselines' A2C, and so the paper, used.

torch's RMSprop puts eps outside the square root and starts the mean square at 0, so at the
paper's eps 1e-5 it takes much larger steps than the optimiser the paper's settings were tuned
with. A2C uses this one for the CNN (Atari) by default (``RLSettings.rms_tf_like``).
"""

from __future__ import annotations

import torch


class RMSpropTF(torch.optim.Optimizer):
    """RMSProp as TensorFlow 1's ``RMSPropOptimizer``: ms = alpha*ms + (1-alpha)*g^2 with ms
    initialised to 1, update lr * g / sqrt(ms + eps). No momentum, not centred."""

    def __init__(self, params, lr: float, alpha: float = 0.99, eps: float = 1e-5):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, alpha, eps = group["lr"], group["alpha"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["square_avg"] = torch.ones_like(p)
                sq = state["square_avg"]
                sq.mul_(alpha).addcmul_(p.grad, p.grad, value=1 - alpha)
                p.addcdiv_(p.grad, (sq + eps).sqrt_(), value=-lr)
        return loss


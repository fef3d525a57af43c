"""When to ask for labels: an initial batch, then a rate that decays like C / (T + C).

The paper asks for labels at a rate roughly proportional to 5e6 / (T + 5e6) on Atari
(T = frames so far). Integrating that rate gives the cumulative count C * ln(1 + T / C);
we scale it so that the budget left after the initial batch is used up exactly at the end
of the run. That keeps the paper's shape and makes the budget a promise, not a guess.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class LabelSchedule:
    budget: int
    initial: int
    total_frames: int
    constant: float

    def __post_init__(self) -> None:
        if self.initial > self.budget:
            raise ValueError(f"initial labels {self.initial} exceed the label budget {self.budget}")
        if self.constant <= 0:
            raise ValueError(f"label schedule constant must be > 0, got {self.constant}")
        if self.total_frames < 1:
            raise ValueError(f"total_frames must be >= 1, got {self.total_frames}")

    def _integral(self, frames: float) -> float:
        return self.constant * math.log1p(max(frames, 0.0) / self.constant)

    def due(self, frames: int) -> int:
        """Labels that should have been asked for after ``frames`` frames of RL (initial batch included)."""
        share = min(1.0, self._integral(frames) / self._integral(self.total_frames))
        return min(self.budget, self.initial + int(math.floor((self.budget - self.initial) * share + 1e-9)))

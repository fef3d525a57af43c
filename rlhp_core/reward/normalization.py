"""How each ensemble member's output is scaled into r̂ — without amplifying what it did not learn.

The paper normalises each member's output to zero mean and a fixed std (0.05 on Atari) before
averaging. Read literally, (raw - mean) / std blows up *any* variation to full reward size,
including the leftover noise of a member that learnt nothing: on Enduro the rational teacher
answered "equal" to 94-99.8% of queries, the fit drove the members towards constant output, and
dividing by a std near 0 (floored only at 1e-8) turned what remained into full-sized reward the
policy then optimised. Two rules stop that:

1. **A floor on the raw spread.** The preference model compares the *sums* of raw outputs over
   two segments of H steps. If a member's per-step outputs vary by s (std) and steps were
   independent, two segment sums differ by about s * sqrt(2H) logits. Below
   ``MIN_PAIR_LOGIT_SPREAD`` = 0.1 logits the member's P(left > right) stays within
   sigmoid(±0.1) = 0.475..0.525 for a typical pair: it expresses no preference at all. So the
   std used for scaling is at least 0.1 / sqrt(2H); a member below it gets proportionally less
   than the full reward size instead of more.
2. **A chance test.** When a fit left a member with at least ``MIN_DECISIVE`` decisive
   validation comparisons (left or right, not equal) and its accuracy on them is not above
   chance (one-sided binomial test at ``CHANCE_P``), the member has shown nothing it learnt:
   its weight in r̂ is 0 until a later fit passes. With fewer decisive comparisons the test
   cannot tell, and only rule 1 applies. If every member fails, r̂ is 0 everywhere and the
   policy follows only its entropy bonus: no learning, rather than learning noise.

``RewardEnsemble.update_normalization`` (rlhp_core/reward/ensemble.py) applies both after
every fit; this module holds the rules and their constants only.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

MIN_PAIR_LOGIT_SPREAD = 0.1
"""Segment-pair logit spread below which a member expresses no preference (rule 1)."""
MIN_DECISIVE = 20
"""Decisive validation comparisons a member needs before the chance test applies (rule 2)."""
CHANCE_P = 0.05
"""One-sided binomial p-value above which a member's validation accuracy counts as chance."""


def std_floor(segment_length: int) -> float:
    """The smallest per-step raw std used to scale a member (rule 1)."""
    return MIN_PAIR_LOGIT_SPREAD / math.sqrt(2 * segment_length)


def binomial_tail(correct: int, n: int) -> float:
    """P(X >= correct) for X ~ Binomial(n, 1/2): the one-sided p-value of ``correct`` of ``n`` right."""
    if n == 0:
        return 1.0
    return sum(math.comb(n, k) for k in range(correct, n + 1)) / 2.0**n


def member_weights(val_accuracy: Sequence[float], val_decisive: Sequence[int]) -> np.ndarray:
    """(M,) 1.0 for members that passed (or could not take) the chance test, 0.0 for those that
    failed it (rule 2). Accuracy counts a predicted tie as half right, so it is rounded to the
    nearest count of correct answers."""
    out = np.ones(len(val_accuracy))
    for j, (acc, n) in enumerate(zip(val_accuracy, val_decisive)):
        if n >= MIN_DECISIVE and not math.isnan(acc):
            if binomial_tail(int(round(acc * n)), int(n)) > CHANCE_P:
                out[j] = 0.0
    return out

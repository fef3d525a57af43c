"""Which pairs to ask about (paper, section 2.2.4).

Draw ``factor`` times more candidate pairs than needed from the recent stream; each
ensemble member predicts P(left > right); send the pairs on which the members disagree
most (highest variance). ``random`` is the paper's "random queries" ablation, and what we
use for the initial batch, when the ensemble has not been trained on anything yet.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .buffer import SegmentBuffer

MemberProbs = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]
"""(left_obs, left_actions, right_obs, right_actions) -> (members, pairs) P(left > right)."""


def select_pairs(buffer: SegmentBuffer, count: int, length: int, rng: np.random.Generator, *,
                 mode: str, factor: int = 10, member_probs: MemberProbs | None = None,
                 newer_than: int = 0) -> list[tuple[int, int, int, int]]:
    """Return ``count`` pairs as (left env, left start, right env, right start)."""
    if count <= 0:
        return []
    if mode == "random" or member_probs is None:
        pool = count
    elif mode == "disagreement":
        pool = count * factor
    else:
        raise ValueError(f"query selection {mode!r} is not one of ('disagreement', 'random')")
    le, ls = buffer.sample_starts(pool, length, rng, newer_than)
    re, rs = buffer.sample_starts(pool, length, rng, newer_than)
    if pool > count:
        probs = member_probs(
            buffer.gather(le, ls, length, "obs"), buffer.gather(le, ls, length, "actions"),
            buffer.gather(re, rs, length, "obs"), buffer.gather(re, rs, length, "actions"),
        )
        # Stable sort on negated variance: ties keep draw order, so selection is reproducible.
        keep = np.argsort(-np.var(probs, axis=0), kind="stable")[:count]
        le, ls, re, rs = le[keep], ls[keep], re[keep], rs[keep]
    return [(int(a), int(b), int(c), int(d)) for a, b, c, d in zip(le, ls, re, rs)]

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
from .config import QUERY_SELECTIONS
from .reward.bradley_terry import bt_prob

PairScorer = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int], np.ndarray]
"""(left envs, left starts, right envs, right starts, length) -> (members, pairs) P(left > right):
candidate windows given by where they lie in the buffer, so a scorer reads what it needs."""


def select_pairs(buffer: SegmentBuffer, count: int, length: int, rng: np.random.Generator, *,
                 mode: str, factor: int = 10, score: PairScorer | None = None,
                 newer_than: int = 0) -> list[tuple[int, int, int, int]]:
    """Return ``count`` pairs as (left env, left start, right env, right start).

    'disagreement' draws ``count * factor`` candidates and keeps the ``count`` on which the
    members' P(left > right) (``score``) varies most; 'random' (or no ``score``) keeps the first
    ``count`` draws. Both draw the same windows from ``rng`` for the same arguments.
    """
    if mode not in QUERY_SELECTIONS:
        raise ValueError(f"query selection {mode!r} is not one of {QUERY_SELECTIONS}")
    if count <= 0:
        return []
    pool = count * factor if mode == "disagreement" and score is not None else count
    le, ls = buffer.sample_starts(pool, length, rng, newer_than)
    re, rs = buffer.sample_starts(pool, length, rng, newer_than)
    if pool > count:
        probs = score(le, ls, re, rs, length)
        # Stable sort on negated variance: ties keep draw order, so selection is reproducible.
        keep = np.argsort(-np.var(probs, axis=0), kind="stable")[:count]
        le, ls, re, rs = le[keep], ls[keep], re[keep], rs[keep]
    return [(int(a), int(b), int(c), int(d)) for a, b, c, d in zip(le, ls, re, rs)]


def ensemble_disagreement(buffer: SegmentBuffer,
                          raw_rewards: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> PairScorer:
    """A :data:`PairScorer` from the ensemble's per-member rewards on the buffer's states.

    Candidate windows overlap heavily (10 candidate pairs per query, drawn from the last
    ``capacity`` steps of N envs), so ``raw_rewards`` (obs, actions) -> (members, states) runs
    once per distinct state (row * num_envs + env) instead of once per window step; the
    per-member window sums then give P(left > right) (Bradley-Terry), as the members'
    preference probabilities on the gathered frames would (no noise term).
    """
    def score(le: np.ndarray, ls: np.ndarray, re: np.ndarray, rs: np.ndarray, length: int) -> np.ndarray:
        left = buffer.window_rows(ls, length) * buffer.num_envs + le[:, None]
        right = buffer.window_rows(rs, length) * buffer.num_envs + re[:, None]
        uniq, inverse = np.unique(np.concatenate([left.reshape(-1), right.reshape(-1)]), return_inverse=True)
        rows, envs = np.divmod(uniq, buffer.num_envs)
        raw = raw_rewards(buffer.obs[rows, envs], buffer.actions[rows, envs])  # (M, distinct states)
        returns = raw[:, inverse.reshape(-1)].reshape(raw.shape[0], 2, *left.shape).sum(axis=3)
        return bt_prob(returns[:, 0], returns[:, 1])

    return score

"""The comparisons the reward model trains on, with each member's bootstrap and hold-out split.

Paper, section 2.2.3 and appendix A: the reward model keeps the last 3,000 labels, each member
is trained on a bootstrap resample of them, and 1/e of the data is held out per member for
validation (the adaptive L2 rule and the fit schedules read that validation loss). See
:class:`PreferenceDataset`: how the splits are drawn so that they never reshuffle, and how
Atari segments are stored as their distinct frames.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..segments import ANSWER_MU, check_answer

__all__ = ["PreferenceDataset"]


def _compact(obs: np.ndarray) -> np.ndarray | None:
    """(T, C, H, W) stacked frames -> (T+C-1, H, W) distinct frames, or None when the stacks
    do not overlap (an episode reset inside the segment, or a stack that is not newest-last)."""
    if obs.ndim != 4 or obs.shape[0] < 2 or obs.shape[1] < 2:
        return None
    if not np.array_equal(obs[1:, :-1], obs[:-1, 1:]):
        return None
    return np.ascontiguousarray(np.concatenate([obs[0], obs[1:, -1]], axis=0))


def _expand(frames: np.ndarray, t: int, c: int) -> np.ndarray:
    """Inverse of :func:`_compact`: a read-only strided view (T, C, H, W), no copy."""
    s0, s1, s2 = frames.strides
    return np.lib.stride_tricks.as_strided(
        frames, shape=(t, c) + frames.shape[1:], strides=(s0, s0, s1, s2), writeable=False
    )


@dataclass
class _StoredSegment:
    obs: np.ndarray  # full (T, *obs_shape) or compact (T+C-1, H, W)
    actions: np.ndarray
    compact: bool

    def obs_view(self, t: int, c: int) -> np.ndarray:
        return _expand(self.obs, t, c) if self.compact else self.obs


@dataclass
class _Item:
    key: Any
    left: _StoredSegment
    right: _StoredSegment
    mu: np.ndarray  # (2,) float32
    weights: np.ndarray  # (M,) int: bootstrap multiplicity (Poisson(1))
    val: np.ndarray  # (M,) bool: held out for validation (== weights == 0)


class PreferenceDataset:
    """The most recent ``capacity`` trainable comparisons (paper: 3,000), oldest dropped first.

    Bootstrap and hold-out, drawn once per comparison on ``add`` from the dataset's own seeded
    generator, independently per member: ``k ~ Poisson(1)``. ``k == 0`` (probability exactly
    1/e) puts the comparison in that member's validation set; otherwise the member trains on it
    with multiplicity ``k``. The multiset over the whole buffer is a Poisson bootstrap resample
    (the standard online bootstrap: multiplicities of a size-n resample with replacement tend
    to independent Poisson(1)), and its out-of-bag part is exactly the paper's 1/e hold-out.
    Being per comparison, it never reshuffles when labels arrive or old ones drop out. With a
    ``key`` (the query id) the draw comes from a generator seeded by (seed, hash of the key),
    so a comparison gets the same split whenever and in whatever order it is added: a
    learner that rebuilds the dataset from the label store on resume (retractions dropped,
    order changed) gets identical splits. Without a key, draws come from one seeded stream.

    Memory (Atari): a segment is (25, 4, 84, 84) uint8 = 706 KB; 3,000 labels x 2 segments
    stored naively is 4.2 GB. Consecutive stacks overlap (stack t holds frames t-3..t, newest
    last), so a segment is stored as its 28 distinct frames (198 KB, 3.6x less: 1.19 GB at
    3,000 labels) and rebuilt as a zero-copy strided view when a minibatch is gathered. A
    segment whose stacks do not overlap (an episode reset inside it) is stored whole. Vector
    segments are stored as given. Storage grows with the labels actually held, so a 290-label
    run holds ~115 MB of frames.
    """

    def __init__(self, capacity: int = 3_000, n_members: int = 3, seed: int = 0):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if n_members < 1:
            raise ValueError(f"n_members must be >= 1, got {n_members}")
        self.capacity = int(capacity)
        self.n_members = int(n_members)
        self.seed = int(seed)
        self._rng = np.random.default_rng(seed)
        self._items: list[_Item] = []
        self.segment_length: int | None = None
        self.obs_shape: tuple[int, ...] | None = None
        self.obs_dtype: np.dtype | None = None
        self.act_shape: tuple[int, ...] | None = None
        self.act_dtype: np.dtype | None = None
        self._buffers: dict = {}

    @classmethod
    def from_config(cls, cfg) -> "PreferenceDataset":
        """capacity = cfg.label_buffer, n_members = cfg.ensemble_size, seed = cfg.seed."""
        return cls(capacity=cfg.label_buffer, n_members=cfg.ensemble_size, seed=cfg.seed)

    # --- adding -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._items)

    def keys(self) -> list:
        return [it.key for it in self._items]

    def _check_segment(self, obs: np.ndarray, act: np.ndarray, side: str) -> None:
        if obs.ndim < 2:
            raise ValueError(f"{side} obs must be (T, *obs_shape), got shape {obs.shape}")
        if len(act) != len(obs):
            raise ValueError(f"{side} actions have length {len(act)}, expected {len(obs)} (the segment length)")
        if self.segment_length is None:
            return
        if obs.shape[0] != self.segment_length:
            raise ValueError(f"{side} segment length: expected {self.segment_length}, got {obs.shape[0]}")
        if obs.shape[1:] != self.obs_shape or obs.dtype != self.obs_dtype:
            raise ValueError(
                f"{side} obs: expected shape (T, *{self.obs_shape}) dtype {self.obs_dtype}, "
                f"got shape {obs.shape} dtype {obs.dtype}"
            )
        if act.shape[1:] != self.act_shape or act.dtype != self.act_dtype:
            raise ValueError(
                f"{side} actions: expected shape (T, *{self.act_shape}) dtype {self.act_dtype}, "
                f"got shape {act.shape} dtype {act.dtype}"
            )

    def _store(self, obs: np.ndarray, act: np.ndarray) -> _StoredSegment:
        if obs.dtype == np.uint8 and obs.ndim == 4:
            c = _compact(obs)
            if c is not None:
                return _StoredSegment(c, np.array(act, copy=True), True)
        return _StoredSegment(np.array(obs, copy=True), np.array(act, copy=True), False)

    def add(self, left_obs, left_actions, right_obs, right_actions, mu, key: Any = None) -> bool:
        """Add one comparison. ``mu`` is (mu_left, mu_right) or an answer string; an
        'incomparable' answer is not trainable and is skipped (returns False). Returns True
        when stored. Shapes and dtypes must match the first comparison added."""
        if isinstance(mu, str):
            check_answer(mu)
            if mu not in ANSWER_MU:
                return False
            mu = ANSWER_MU[mu]
        mu = np.asarray(mu, dtype=np.float32)
        if mu.shape != (2,) or not np.isfinite(mu).all() or (mu < 0).any() or abs(float(mu.sum()) - 1.0) > 1e-5:
            raise ValueError(f"mu must be a distribution over (left, right), shape (2,), got {mu!r}")
        lo, ro = np.asarray(left_obs), np.asarray(right_obs)
        la, ra = np.asarray(left_actions), np.asarray(right_actions)
        self._check_segment(lo, la, "left")
        self._check_segment(ro, ra, "right")
        if self.segment_length is None:
            if ro.shape != lo.shape or ro.dtype != lo.dtype or ra.shape != la.shape or ra.dtype != la.dtype:
                raise ValueError(
                    f"left and right segments differ: obs {lo.shape} {lo.dtype} vs {ro.shape} {ro.dtype}, "
                    f"actions {la.shape} {la.dtype} vs {ra.shape} {ra.dtype}"
                )
            self.segment_length = lo.shape[0]
            self.obs_shape, self.obs_dtype = tuple(lo.shape[1:]), lo.dtype
            self.act_shape, self.act_dtype = tuple(la.shape[1:]), la.dtype
        w = self._draw_weights(key)
        item = _Item(key, self._store(lo, la), self._store(ro, ra), mu, w, w == 0)
        self._items.append(item)
        if len(self._items) > self.capacity:
            del self._items[: len(self._items) - self.capacity]
        return True

    def _draw_weights(self, key: Any) -> np.ndarray:
        if key is None:
            rng = self._rng
        else:
            digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
            rng = np.random.default_rng([self.seed, int.from_bytes(digest, "little")])
        return rng.poisson(1.0, size=self.n_members).astype(np.int64)

    def remove(self, key: Any) -> bool:
        """Drop the comparison stored under ``key`` (e.g. a retracted answer)."""
        for i, it in enumerate(self._items):
            if it.key == key:
                del self._items[i]
                return True
        return False

    # --- splits -------------------------------------------------------------------------
    def train_multiset(self, member: int) -> np.ndarray:
        """Indices member ``member`` trains on, each repeated by its bootstrap multiplicity.
        Falls back to every comparison once when the member's multiset is empty (tiny data)."""
        w = np.fromiter((it.weights[member] for it in self._items), dtype=np.int64, count=len(self._items))
        idx = np.repeat(np.arange(len(self._items)), w)
        return idx if len(idx) else np.arange(len(self._items))

    def val_indices(self, member: int) -> np.ndarray:
        return np.flatnonzero(np.fromiter((it.val[member] for it in self._items), dtype=bool, count=len(self._items)))

    # --- batches ------------------------------------------------------------------------
    def _buffer(self, name: str, shape: tuple, dtype) -> np.ndarray:
        """A reused array of ``shape`` (a view into one grown along axis 1 as needed)."""
        buf = self._buffers.get(name)
        if buf is None or buf.dtype != dtype or buf.shape[0] != shape[0] or buf.shape[2:] != shape[2:] \
                or buf.shape[1] < shape[1]:
            buf = np.empty(shape, dtype=dtype)
            self._buffers[name] = buf
        return buf[:, : shape[1]]

    def gather(self, idx: np.ndarray, with_actions: bool = True) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Member-major minibatch for the fused networks.

        idx: (M, B) comparison indices, row m = member m's minibatch.
        Returns obs (M, B*2*T, *obs_shape), actions (M, B*2*T, *act_shape) or None, and
        mu (M, B, 2); column n = (b*2 + side)*T + t. The arrays are reused between calls.
        """
        idx = np.asarray(idx)
        m, b = idx.shape
        t = self.segment_length
        c = self.obs_shape[0] if self.obs_shape else 1
        obs = self._buffer("obs", (m, b, 2, t) + self.obs_shape, self.obs_dtype)
        act = self._buffer("act", (m, b, 2, t) + self.act_shape, self.act_dtype) if with_actions else None
        mu = np.empty((m, b, 2), dtype=np.float32)
        items = self._items
        for j in range(m):
            for k in range(b):
                it = items[idx[j, k]]
                obs[j, k, 0] = it.left.obs_view(t, c)
                obs[j, k, 1] = it.right.obs_view(t, c)
                if act is not None:
                    act[j, k, 0] = it.left.actions
                    act[j, k, 1] = it.right.actions
                mu[j, k] = it.mu
        n = b * 2 * t
        obs = obs.reshape((m, n) + self.obs_shape)
        if act is not None:
            act = act.reshape((m, n) + self.act_shape)
        return obs, act, mu

    def normalization_sample(self, n: int, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``n`` states (obs, actions) from the most recently added segments: a stand-in
        for "recent agent states" before any rollout exists (e.g. after pretraining)."""
        if not self._items:
            raise ValueError("the dataset is empty")
        rng = rng if rng is not None else np.random.default_rng(0)
        t = self.segment_length
        c = self.obs_shape[0] if self.obs_shape else 1
        segs = []
        for it in reversed(self._items):
            segs += [it.left, it.right]
            if len(segs) * t >= 4 * n:
                break
        obs = np.concatenate([s.obs_view(t, c) for s in segs])
        act = np.concatenate([s.actions for s in segs])
        if len(obs) > n:
            pick = np.sort(rng.choice(len(obs), size=n, replace=False))
            obs, act = obs[pick], act[pick]
        return obs, act

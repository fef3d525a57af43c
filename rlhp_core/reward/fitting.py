"""Fitting the ensemble to comparisons: minibatch steps, evaluation, and the adaptive L2 rule.

Paper, section 2.2.3 and appendix A. Every member minimises the preference loss
(rlhp_core/reward/bradley_terry.py) on minibatches from its own bootstrap multiset
(rlhp_core/reward/dataset.py), with Adam, plus an explicit L2 penalty ``l2_m * sum(w**2)`` over
its conv and dense weights (not biases or batch-norm parameters). The paper gives no starting
value for the L2 coefficient; ours is 1e-3, then adapted after every :meth:`~EnsembleFitting.train`
call by x/÷ 1.1 so that validation loss / training loss stays within appendix A's 1.1-1.5
band (:class:`L2Rule`).

When and how much to train is decided elsewhere: rlhp_core/fit_schedule.py (the paper's ratio,
or epochs until the validation loss plateaus), in place or on a second thread
(rlhp_core/background_fit.py).

The methods are those of :class:`~rlhp_core.reward.ensemble.RewardEnsemble` (``ensemble.train``,
``ensemble.evaluate``, ``ensemble.validation_loss``), kept in this module by role:
:class:`EnsembleFitting` is its training half. Its state (optimiser, L2 coefficients, the
minibatch generator, counters) is saved with the ensemble's (``RewardEnsemble.state_dict``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .bradley_terry import preference_loss_per_item
from .dataset import PreferenceDataset

__all__ = ["EnsembleFitting", "L2Rule"]


@dataclass(frozen=True)
class L2Rule:
    """Each member's L2 coefficient: its start and how it adapts (paper, appendix A).

    ``adaptive``: after every train call, multiply a member's coefficient by ``factor`` when its
    validation loss / training loss (eval mode) is above ``band[1]``, divide it when below
    ``band[0]`` (paper: 1.1, 1.5), and keep it within ``bounds``. False keeps ``init`` fixed
    (``init=0``: no L2 at all, the config's 'no regularisation' ablation).
    """

    init: float = 1e-3
    adaptive: bool = True
    factor: float = 1.1
    band: tuple[float, float] = (1.1, 1.5)
    bounds: tuple[float, float] = (1e-6, 10.0)

    def __post_init__(self):
        if self.factor < 1.0 or not self.band[0] <= self.band[1]:
            raise ValueError(f"L2Rule needs factor >= 1 and band low <= high, got factor={self.factor}, band={self.band}")

    def adapt(self, l2: np.ndarray, train_losses: Sequence[float], val_losses: Sequence[float]) -> None:
        """Move each member's coefficient in ``l2`` (in place) by its val / train loss ratio."""
        lo, hi = self.band
        for j, (tr, va) in enumerate(zip(train_losses, val_losses)):
            if math.isnan(tr) or math.isnan(va) or tr <= 0:
                continue
            ratio = va / tr
            if ratio > hi:
                l2[j] *= self.factor
            elif ratio < lo:
                l2[j] /= self.factor
        np.clip(l2, self.bounds[0], self.bounds[1], out=l2)


class EnsembleFitting:
    """The training half of ``RewardEnsemble``; see the module docstring.

    The ensemble's constructor calls :meth:`_init_fitting` once its network exists. The
    methods read the ensemble's ``net``, ``n_members``, ``arch``, ``obs_shape``, ``n_actions``,
    ``act_shape``, ``uses_actions``, ``device``, its dropout generator ``_torch_gen`` and its
    member-major forward pass ``_forward_members``.
    """

    def _init_fitting(self, lr: float, batch_size: int, noise: float, l2_rule: L2Rule,
                      eval_size: int | None | str, seed: int) -> None:
        """lr: Adam's step size. batch_size: comparisons per member per step. noise: the
        preference model's random-answer probability (paper: 0.1). eval_size: comparisons per
        member scored (eval mode) on its train and on its validation part after each train call,
        for the L2 rule and the metrics; None = all of them; 'auto' = 32 for the CNN (scoring costs
        forward passes: 2 x 32 comparisons is ~15% of a 100-comparison train call) and 256 for
        the MLP (cheap)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if eval_size == "auto":
            eval_size = 32 if self.arch == "cnn" else 256
        if eval_size is not None and int(eval_size) < 1:
            raise ValueError(f"eval_size must be >= 1, None or 'auto', got {eval_size}")
        self.lr = float(lr)
        self.batch_size = int(batch_size)
        self.noise = float(noise)
        self.l2_rule = l2_rule
        self.eval_size = eval_size
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        self.l2 = np.full(self.n_members, float(l2_rule.init), dtype=np.float64)
        """Each member's current L2 coefficient."""
        self._rng = np.random.default_rng(seed)
        self.train_steps = 0
        self.comparisons_seen = 0

    def _check_dataset(self, dataset: PreferenceDataset) -> None:
        if dataset.n_members != self.n_members:
            raise ValueError(f"dataset has {dataset.n_members} members' splits, the ensemble has {self.n_members}")
        if len(dataset) == 0:
            raise ValueError("the dataset is empty")
        if dataset.obs_shape != self.obs_shape:
            raise ValueError(f"dataset obs shape {dataset.obs_shape} does not match the model's {self.obs_shape}")
        if self.arch == "cnn" and dataset.obs_dtype != np.uint8:
            raise ValueError(f"dataset obs dtype: expected uint8, got {dataset.obs_dtype}")
        if self.uses_actions:
            want = () if self.n_actions is not None else self.act_shape
            if dataset.act_shape != want:
                raise ValueError(f"dataset action shape {dataset.act_shape} does not match the model's {want}")

    def _member_loss(self, dataset: PreferenceDataset, idx: np.ndarray, training: bool
                     ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """Per-item loss (M, B), returns (M, B, 2) for the member-major batch ``idx``."""
        obs, act, mu = dataset.gather(idx, with_actions=self.uses_actions)
        m, b = idx.shape
        r = self._forward_members(obs, act, training)  # (M, B*2*T)
        rets = r.reshape(m, b, 2, dataset.segment_length).sum(-1)
        mu_t = torch.from_numpy(mu).to(self.device)
        loss = preference_loss_per_item(rets[..., 0], rets[..., 1], mu_t, self.noise)
        return loss, rets, mu

    def _l2_terms(self) -> torch.Tensor:
        sq = sum(w.reshape(self.n_members, -1).pow(2).sum(1) for w in self.net.l2_weights())
        return torch.as_tensor(self.l2, dtype=sq.dtype, device=sq.device) * sq

    def train(self, dataset: PreferenceDataset, num_comparisons: int, rng: np.random.Generator | None = None) -> dict:
        """Adam minibatch steps until ~``num_comparisons`` comparisons per member were used
        (ceil(num_comparisons / batch_size) steps; each member draws its own minibatch from its
        bootstrap multiset, reshuffled per pass). Then scores every member on (a sample of) its
        train and validation parts in eval mode and, if adaptive, moves its L2 coefficient.

        Returns metrics: train_loss (train-mode minibatch loss, mean over steps and members,
        without the L2 term), train_loss_eval / val_loss / val_accuracy (eval mode; accuracy
        on held-out non-equal comparisons), their per-member lists (``*_members``), l2 (list),
        steps, comparisons (per member), seconds.
        """
        self._check_dataset(dataset)
        if int(num_comparisons) < 1:
            raise ValueError(f"num_comparisons must be >= 1, got {num_comparisons}")
        rng = rng if rng is not None else self._rng
        t0 = time.perf_counter()
        n_steps = max(1, math.ceil(int(num_comparisons) / self.batch_size))
        multisets = [dataset.train_multiset(j) for j in range(self.n_members)]
        b = min(self.batch_size, min(len(ms) for ms in multisets))
        streams = [_Stream(ms, rng) for ms in multisets]
        torch_seed = int(rng.integers(2**62))
        losses = np.zeros(self.n_members)
        self._torch_gen.manual_seed(torch_seed)
        for _ in range(n_steps):
            idx = np.stack([s.take(b) for s in streams])
            loss_items, _, _ = self._member_loss(dataset, idx, training=True)
            loss_m = loss_items.mean(1)
            total = (loss_m + self._l2_terms()).sum()
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            self.optimizer.step()
            losses += loss_m.detach().double().cpu().numpy()
        self.train_steps += n_steps
        self.comparisons_seen += n_steps * b
        metrics = self.evaluate(dataset, rng)
        if self.l2_rule.adaptive:
            self.l2_rule.adapt(self.l2, metrics["train_loss_eval_members"], metrics["val_loss_members"])
        metrics.update(
            train_loss=float(losses.mean() / n_steps),
            train_loss_members=(losses / n_steps).tolist(),
            l2=self.l2.tolist(),
            l2_mean=float(self.l2.mean()),
            steps=n_steps,
            comparisons=n_steps * b,
            seconds=time.perf_counter() - t0,
        )
        return metrics

    @torch.no_grad()
    def evaluate(self, dataset: PreferenceDataset, rng: np.random.Generator | None = None,
                 max_items: int | None | str = "default") -> dict:
        """Eval-mode loss/accuracy per member on a sample (``eval_size``; None = all) of its
        training multiset and of its held-out comparisons."""
        self._check_dataset(dataset)
        rng = rng if rng is not None else self._rng
        cap = self.eval_size if max_items == "default" else max_items

        def sample(ix: np.ndarray) -> np.ndarray:
            if cap is not None and len(ix) > cap:
                return np.sort(rng.choice(ix, size=cap, replace=False))
            return ix

        train_sets = [sample(dataset.train_multiset(j)) for j in range(self.n_members)]
        val_sets = [sample(dataset.val_indices(j)) for j in range(self.n_members)]
        tr = self._score(dataset, train_sets)
        va = self._score(dataset, val_sets)
        return {
            "train_loss_eval": _nanmean(tr["loss"]),
            "val_loss": _nanmean(va["loss"]),
            "val_accuracy": _nanmean(va["acc"]),
            "train_accuracy": _nanmean(tr["acc"]),
            "train_loss_eval_members": tr["loss"],
            "val_loss_members": va["loss"],
            "val_accuracy_members": va["acc"],
            "val_size_members": va["n"],
            "val_decisive_members": va["decisive"],
            "dataset_size": len(dataset),
        }

    @torch.no_grad()
    def validation_loss(self, dataset: PreferenceDataset) -> float:
        """Mean over members of the eval-mode loss on all of each member's held-out comparisons
        (NaN where none has any): the early-stopping signal of rlhp_core/fit_schedule.py, which a
        sample of ``eval_size`` (32 on the CNN) would drown in noise."""
        self._check_dataset(dataset)
        return _nanmean(self._score(dataset, [dataset.val_indices(j) for j in range(self.n_members)])["loss"])

    def _score(self, dataset: PreferenceDataset, sets: list[np.ndarray]) -> dict:
        m = self.n_members
        length = max(len(s) for s in sets)
        out = {"loss": [float("nan")] * m, "acc": [float("nan")] * m, "n": [len(s) for s in sets], "decisive": [0] * m}
        if length == 0:
            return out
        # Pad every member's list to a common length (masked), then score in chunks.
        idx = np.zeros((m, length), dtype=np.int64)
        mask = np.zeros((m, length), dtype=bool)
        for j, s in enumerate(sets):
            if len(s):
                idx[j, : len(s)] = s
                idx[j, len(s):] = s[0]
                mask[j, : len(s)] = True
        chunk = self.batch_size if self.arch == "cnn" else 4096
        loss_sum = np.zeros(m)
        corr = np.zeros(m)
        n_decisive = np.zeros(m)
        for s0 in range(0, length, chunk):
            sl = slice(s0, s0 + chunk)
            loss, rets, mu = self._member_loss(dataset, idx[:, sl], training=False)
            mk = mask[:, sl]
            loss_sum += np.where(mk, loss.double().cpu().numpy(), 0.0).sum(1)
            r = rets.double().cpu().numpy()
            diff = r[..., 0] - r[..., 1]
            decisive = mk & (mu[..., 0] != mu[..., 1])
            right = np.where(diff == 0, 0.5, ((diff > 0) == (mu[..., 0] > mu[..., 1])).astype(float))
            corr += np.where(decisive, right, 0.0).sum(1)
            n_decisive += decisive.sum(1)
        for j in range(m):
            if mask[j].any():
                out["loss"][j] = float(loss_sum[j] / mask[j].sum())
            if n_decisive[j] > 0:
                out["acc"][j] = float(corr[j] / n_decisive[j])
            out["decisive"][j] = int(n_decisive[j])
        return out


def _nanmean(values: Sequence[float]) -> float:
    """Mean of the values that are not NaN (NaN when none is)."""
    kept = [x for x in values if not math.isnan(x)]
    return float(np.mean(kept)) if kept else float("nan")


class _Stream:
    """Endless shuffled passes over a multiset of indices (reshuffled at each pass)."""

    def __init__(self, items: np.ndarray, rng: np.random.Generator):
        self.items, self.rng = items, rng
        self.perm = rng.permutation(items)
        self.pos = 0

    def take(self, b: int) -> np.ndarray:
        out = []
        need = b
        while need:
            if self.pos == len(self.perm):
                self.perm = self.rng.permutation(self.items)
                self.pos = 0
            k = min(need, len(self.perm) - self.pos)
            out.append(self.perm[self.pos : self.pos + k])
            self.pos += k
            need -= k
        return np.concatenate(out)

"""The reward model: an ensemble of predictors of r̂(o, a), fitted to comparisons.

Paper, section 2.2.3 and appendix A; SPEC.md "Reward model". Three pieces:

* Networks. ``FusedCNN`` (Atari) and ``FusedMLP`` (vector observations) hold *all* ensemble
  members in one module with member-stacked parameters. Each member is exactly the paper's
  network; fusing only changes how the arithmetic is batched, never the math:

  - CNN, ``conv_mode='grouped'``: the members' minibatches are stacked as channel groups,
    ``(N, M*4, 84, 84)``, and every conv is ``Conv2d(groups=M)``: group m only sees member m's
    channels and weights. Batch norm over M*16 channels is per member over member m's own
    batch. For inference (all members see the same frames) the first conv runs ungrouped with
    M*16 outputs on the 4-channel input (the same weights), so frames are not replicated.
  - CNN, ``conv_mode='split'`` (the CPU default): one conv per member on its weight slice.
    On this CPU (oneDNN, 1 thread) grouped convs with 4-16 channels per group ran no faster
    than M plain convs, and the gains came from elsewhere: channels_last; uint8 frames
    transposed as bytes then widened once (the 1/255 scale folded into conv1's weights, as
    conv(x/255, W) == conv(x, W/255)); a bit-mask dropout (see :func:`dropout`) instead of
    ``bernoulli_``, which alone was ~20% of a step. 'auto' = 'split' on CPU, 'grouped' on
    CUDA (untested here: no GPU was available).
  - MLP: batched matmuls with per-member weights ``(M, in, out)``.

  Measured (tests/test_bench_reward.py, same run, 1 thread): training ~2x cheaper per
  comparison than 3 separate ``nn.Sequential`` nets (B=32: 152 -> 75 ms per comparison for
  all 3 members), inference ~15% cheaper; numbers in that file's docstring.
  ``reference_members(net)`` builds those M plain nets with the same weights; tests check
  fused == separate (outputs, batch-norm statistics, gradients) to 1e-5.

  Layer order per conv layer (the paper names the parts, not the order): conv -> batch norm ->
  leaky ReLU (0.01) -> dropout. The Atari net sees observations only (actions are accepted
  and checked but not used: the paper's Atari predictor takes the 84x84x4 frames; Ibarz et al.
  2018 report actions did not help). The vector net sees concat(flat obs, action) with
  Discrete actions one-hot and Box actions as floats.

* ``PreferenceDataset``: the last ``capacity`` comparisons (paper: 3,000), with per-member
  bootstrap weights and validation flags drawn incrementally on ``add`` (see its docstring),
  and a compact store for stacked Atari frames.

* ``RewardEnsemble``: training (Adam, minibatches, adaptive L2), normalised prediction for
  the policy, per-member preference probabilities for query selection, save/load.

Normalisation (paper: each member's output normalised separately, then averaged). Each member
m gets an affine map ``(raw_m - mean_m) / std_m * reward_std``; ``mean_m``/``std_m`` are set by
``update_normalization(obs, actions)`` from a sample of *recent agent states* (e.g. the last
rollouts) and replaced (not averaged) every time, because the network itself changed since the
previous statistics. The learner should call it after every ``train``/``pretrain`` (before RL
starts, ``PreferenceDataset.normalization_sample`` gives states from the stored segments, which
come from the policy that is about to act). This keeps r̂ at zero mean and the configured std
under the *current* policy's state distribution even as that distribution moves.

L2: an explicit penalty ``l2_m * sum(w**2)`` per member over conv and dense weights (not
biases or batch-norm parameters), added to that member's minibatch loss. The paper gives no
starting value; ours is 1e-3, then adapted (appendix A's 1.1x-1.5x band) by x/÷ 1.1 per
``train`` call.

Threads: inference never changes module state (``training`` is passed explicitly), but a
``train`` running in another thread updates weights in place while ``predict`` reads them.
An asynchronous learner should train a copy and swap (``load_state_dict``) or hold a lock.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .normalization import member_weights, std_floor
from .preference import preference_loss_per_item
from .segments import ANSWER_MU, Query, Segment, check_answer

__all__ = [
    "CNN_LAYERS",
    "FusedCNN",
    "FusedMLP",
    "reference_members",
    "PreferenceDataset",
    "RecentStates",
    "RewardEnsemble",
    "dropout",
]

LEAKY_SLOPE = 0.01
CNN_LAYERS = ((7, 3), (5, 2), (3, 1), (3, 1))
"""(kernel, stride) of the 4 conv layers (paper, appendix A)."""
CNN_FILTERS = 16
HIDDEN = 64


def _conv_out(size: int, k: int, s: int) -> int:
    return (size - k) // s + 1


def _init_linear_(w: torch.Tensor, b: torch.Tensor) -> None:
    """nn.Linear's default init, per member: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for w and b."""
    bound = 1.0 / math.sqrt(w.shape[-2])
    with torch.no_grad():
        w.uniform_(-bound, bound)
        b.uniform_(-bound, bound)


# =====================================================================================
# Networks (all members fused)
# =====================================================================================


def _half_mask(shape: tuple, device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
    """Dropout-0.5 multiplier as uint8 {0, 2}, i.i.d. 0 or 2 with probability 1/2 each.

    Every bit of a 64-bit random word is one fair coin (64 elements per draw, instead of one
    float draw per element as ``bernoulli_`` does); the scale 1/(1-p) = 2 is folded into
    the mask so applying it is a single multiply.
    """
    n = math.prod(shape)
    words = torch.empty((n + 63) // 64, dtype=torch.int64, device=device).random_(-(2**63), None, generator=generator)
    shifts = torch.arange(8, dtype=torch.uint8, device=device)
    out = torch.empty(words.numel() * 8, 8, dtype=torch.uint8, device=device)
    torch.bitwise_right_shift(words.view(torch.uint8).unsqueeze(1), shifts, out=out)
    return out.bitwise_and_(1).bitwise_left_shift_(1).view(-1)[:n].view(shape)


def dropout(h: torch.Tensor, p: float, training: bool, fast: bool = True,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Inverted dropout with the distribution of ``F.dropout`` (each element kept
    independently with probability 1-p and scaled by 1/(1-p)); only the random stream differs.

    ``generator``: the masks' own random stream, so that a reward model training on another
    thread never touches the global one the policy samples from (results/speed/).
    ``bernoulli_`` draws one float per element and took ~20% of a CNN training step on CPU.
    For p = 0.5 the mask comes from random bits (see :func:`_half_mask`); for p = k/256 from
    random bytes (``byte >= k`` has probability exactly 1-p); otherwise (or ``fast`` False)
    ``bernoulli_``. The mask is laid out like ``h`` (channels_last stays channels_last).
    """
    if not training or p == 0.0:
        return h
    cl = h.dim() == 4 and not h.is_contiguous() and h.is_contiguous(memory_format=torch.channels_last)
    shape = (h.shape[0], h.shape[2], h.shape[3], h.shape[1]) if cl else tuple(h.shape)
    if fast and p == 0.5:
        mask = _half_mask(shape, h.device, generator)
        scale = None
    elif fast and float(p * 256).is_integer():
        mask = torch.empty(shape, dtype=torch.uint8, device=h.device).random_(0, 256, generator=generator) >= int(p * 256)
        scale = 1.0 / (1.0 - p)
    else:
        mask = torch.empty(shape, dtype=h.dtype, device=h.device).bernoulli_(1.0 - p, generator=generator)
        scale = 1.0 / (1.0 - p)
    # A float mask: a mixed-dtype multiply would cast the mask again (a hidden copy) in the
    # forward and in the backward; converted once here, autograd reuses it.
    mask = mask.to(h.dtype)
    if cl:
        mask = mask.permute(0, 3, 1, 2)
    if scale is not None:
        mask.mul_(scale)
    return h * mask


class FusedCNN(nn.Module):
    """M Atari reward nets in one module. Input frames uint8.

    Parameters are stored member-stacked: conv weights ``(M*16, C_in, k, k)`` exactly as a
    ``Conv2d(M*C_in, M*16, groups=M)`` holds them; batch norm over M*16 channels; dense
    weights ``(M, in, out)``. Two ways to run the convs, the same math:

    * ``conv_mode='grouped'``: one grouped conv per layer over the channel-stacked members.
    * ``conv_mode='split'``: one conv per member on its weight slice (oneDNN on CPU runs
      grouped convs with these tiny channel counts slower than M plain ones: see
      tests/test_bench_reward.py), then the members are stacked for the dense layers.

    'auto' picks 'split' on CPU and 'grouped' on CUDA. The 1/255 input scale is folded into
    the first conv's weights (conv(x/255, W) == conv(x, W/255)), so uint8 frames are
    converted to float once and never rescaled.

    conv_dtype: the dtype the conv stack computes in. ``torch.bfloat16`` widens the uint8
    frames straight to bf16 (half the bytes of float32; exact, since 0..255 fit bf16's
    8-bit mantissa) and runs convs, batch norm and dropout in bf16 against bf16 copies of
    the float32 master weights; the dense layers, the loss and the optimiser stay float32.
    On a CPU with AVX512-BF16 a training minibatch is ~1.5x faster (results/speed/).
    """

    uses_actions = False

    def __init__(self, n_members: int, obs_shape: Sequence[int], dropout: float = 0.5,
                 conv_mode: str = "auto", channels_last: bool = True, fast_dropout: bool = True,
                 conv_dtype: torch.dtype = torch.float32):
        super().__init__()
        if len(obs_shape) != 3:
            raise ValueError(f"FusedCNN expects obs_shape (C, H, W), got {tuple(obs_shape)}")
        if conv_mode not in ("auto", "split", "grouped"):
            raise ValueError(f"conv_mode must be 'auto', 'split' or 'grouped', got {conv_mode!r}")
        c, h, w = (int(v) for v in obs_shape)
        self.n_members = m = int(n_members)
        self.obs_shape = (c, h, w)
        self.dropout = float(dropout)
        self.conv_mode = conv_mode
        self.channels_last = bool(channels_last)
        self.fast_dropout = bool(fast_dropout)
        self.generator: torch.Generator | None = None  # the dropout masks' stream (RewardEnsemble's)
        if conv_dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"conv_dtype must be torch.float32 or torch.bfloat16, got {conv_dtype}")
        self.conv_dtype = conv_dtype
        self.convs = nn.ModuleList()
        self.bns = nn.ModuleList()
        cin = c
        for k, s in CNN_LAYERS:
            h, w = _conv_out(h, k, s), _conv_out(w, k, s)
            if h < 1 or w < 1:
                raise ValueError(f"obs_shape {tuple(obs_shape)} is too small for the paper's conv stack")
            self.convs.append(nn.Conv2d(m * cin, m * CNN_FILTERS, k, s, groups=m))
            self.bns.append(nn.BatchNorm2d(m * CNN_FILTERS))
            cin = CNN_FILTERS
        self.flat = CNN_FILTERS * h * w
        self.fc_w = nn.Parameter(torch.empty(m, self.flat, HIDDEN))
        self.fc_b = nn.Parameter(torch.empty(m, HIDDEN))
        self.out_w = nn.Parameter(torch.empty(m, HIDDEN, 1))
        self.out_b = nn.Parameter(torch.empty(m, 1))
        _init_linear_(self.fc_w, self.fc_b)
        _init_linear_(self.out_w, self.out_b)

    def l2_weights(self) -> list[torch.Tensor]:
        """Weights under the L2 penalty (biases and batch-norm affine parameters are not)."""
        return [c.weight for c in self.convs] + [self.fc_w, self.out_w]

    @property
    def resolved_conv_mode(self) -> str:
        if self.conv_mode != "auto":
            return self.conv_mode
        return "split" if self.fc_w.device.type == "cpu" else "grouped"

    def _to_float(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (or float) NCHW -> ``conv_dtype``, channels_last if enabled. For channels_last the
        uint8 bytes are transposed first and then widened (2x faster than a strided widening copy)."""
        dt = self.conv_dtype
        if self.channels_last:
            if x.dtype == dt and x.is_contiguous(memory_format=torch.channels_last):
                return x
            return x.permute(0, 2, 3, 1).contiguous().to(dt).permute(0, 3, 1, 2)
        return x.to(dt).contiguous()

    def _conv(self, h: torch.Tensor, w: torch.Tensor, b: torch.Tensor, stride, groups: int = 1) -> torch.Tensor:
        """One conv in ``conv_dtype`` (weights cast per call: gradients reach the float32 masters)."""
        dt = self.conv_dtype
        return F.conv2d(h, w.to(dt), b.to(dt), stride, groups=groups)

    def _post(self, h: torch.Tensor, bn: nn.BatchNorm2d, sl: slice, training: bool) -> torch.Tensor:
        """Batch norm (member channels ``sl``) -> leaky ReLU -> dropout. ``training`` is
        explicit (not ``self.training``), so inference never flips a shared module mode."""
        if training and bn.track_running_stats and sl.start == 0:
            bn.num_batches_tracked.add_(1)
        use_batch = training or not bn.track_running_stats
        h = F.batch_norm(h, bn.running_mean[sl], bn.running_var[sl], bn.weight[sl], bn.bias[sl],
                         use_batch, bn.momentum if bn.momentum is not None else 0.0, bn.eps)
        # In place: batch norm's backward needs its input, not its output (autograd checks).
        h = F.leaky_relu_(h, LEAKY_SLOPE)
        return dropout(h, self.dropout, training, self.fast_dropout and h.device.type == "cpu", self.generator)

    def _dense(self, feats: torch.Tensor) -> torch.Tensor:
        # feats (M, N, flat) -> (M, N), in float32 whatever the convs ran in
        feats = feats.to(torch.float32)
        h = torch.baddbmm(self.fc_b.unsqueeze(1), feats, self.fc_w)
        h = F.leaky_relu(h, LEAKY_SLOPE)
        return torch.baddbmm(self.out_b.unsqueeze(1), h, self.out_w).squeeze(-1)

    def _member_convs(self, x: torch.Tensor, j: int, training: bool) -> torch.Tensor:
        """Member j's conv stack on float input x (N, C, H, W) -> flat features (N, flat)."""
        sl = slice(j * CNN_FILTERS, (j + 1) * CNN_FILTERS)
        h = x
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            w = conv.weight[sl]
            if i == 0:
                w = w * (1.0 / 255.0)
            h = self._post(self._conv(h, w, conv.bias[sl], conv.stride), bn, sl, training)
        return h.reshape(h.shape[0], self.flat)

    def _grouped_convs(self, x: torch.Tensor, shared: bool, training: bool) -> torch.Tensor:
        """x float (N, M*C, H, W) (or (N, C, H, W) when shared) -> features (M, N, flat)."""
        h = x
        every = slice(0, self.n_members * CNN_FILTERS)
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            w = conv.weight * (1.0 / 255.0) if i == 0 else conv.weight
            groups = 1 if (i == 0 and shared) else self.n_members
            h = self._post(self._conv(h, w, conv.bias, conv.stride, groups), bn, every, training)
        n = h.shape[0]
        return h.reshape(n, self.n_members, self.flat).transpose(0, 1)

    def forward_members(self, obs: torch.Tensor, actions: torch.Tensor | None = None,
                        training: bool | None = None) -> torch.Tensor:
        """obs (M, N, C, H, W): row n of member m is member m's own input. Returns (M, N).
        ``training`` None follows the module's mode."""
        training = self.training if training is None else training
        if not training:
            return self._forward_folded(obs)
        m, n = obs.shape[:2]
        if self.resolved_conv_mode == "split":
            feats = torch.stack([self._member_convs(self._to_float(obs[j]), j, training) for j in range(m)])
        else:
            x = obs.transpose(0, 1).reshape(n, m * self.obs_shape[0], *self.obs_shape[1:])
            feats = self._grouped_convs(self._to_float(x), False, training)
        return self._dense(feats)

    def forward_shared(self, obs: torch.Tensor, actions: torch.Tensor | None = None,
                       training: bool | None = None) -> torch.Tensor:
        """obs (N, C, H, W), the same for every member. Returns (M, N). The frames are
        converted once; in grouped mode the first conv runs ungrouped with all M*16 filters
        (the grouped weight (M*16, C, k, k) is exactly that conv), so nothing is replicated.
        In eval mode batch norm is folded into the convs (:meth:`folded_convs`)."""
        training = self.training if training is None else training
        if not training:
            return self._forward_folded(obs)
        x = self._to_float(obs)
        if self.resolved_conv_mode == "split":
            feats = torch.stack([self._member_convs(x, j, training) for j in range(self.n_members)])
        else:
            feats = self._grouped_convs(x, True, training)
        return self._dense(feats)

    def folded_convs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Eval-mode conv layers with batch norm folded in: per layer (weight, bias) with
        ``bn(conv(x, W) + b) == conv(x, W * s) + (b - mean) * s + beta``,
        ``s = gamma / sqrt(running_var + eps)`` per output channel; conv1 also takes the 1/255
        input scale. Exact up to float rounding (tests compare to the unfolded net)."""
        out = []
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            s = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
            w = conv.weight * s.view(-1, 1, 1, 1)
            if i == 0:
                w = w * (1.0 / 255.0)
            out.append((w, (conv.bias - bn.running_mean) * s + bn.bias))
        return out

    def _forward_folded(self, obs: torch.Tensor) -> torch.Tensor:
        """Inference (eval mode): conv (BN folded) -> leaky ReLU, no dropout.
        obs (N, C, H, W) shared by all members, or (M, N, C, H, W) one batch per member.
        Small batches (one step of the envs) run faster in NCHW, large ones in channels_last."""
        per_member = obs.dim() == 5
        n = obs.shape[1] if per_member else obs.shape[0]
        cl = self.channels_last and n >= 64

        def to_float(x):
            return self._to_float(x) if cl else x.to(self.conv_dtype).contiguous()

        layers = self.folded_convs()
        if self.resolved_conv_mode == "split" or per_member:
            shared = None if per_member else to_float(obs)
            feats = []
            for j in range(self.n_members):
                sl = slice(j * CNN_FILTERS, (j + 1) * CNN_FILTERS)
                h = to_float(obs[j]) if per_member else shared
                for (w, b), conv in zip(layers, self.convs):
                    h = F.leaky_relu_(self._conv(h, w[sl], b[sl], conv.stride), LEAKY_SLOPE)
                feats.append(h.reshape(n, self.flat))
            feats = torch.stack(feats)
        else:
            h = to_float(obs)
            for i, ((w, b), conv) in enumerate(zip(layers, self.convs)):
                h = F.leaky_relu_(self._conv(h, w, b, conv.stride, 1 if i == 0 else self.n_members), LEAKY_SLOPE)
            feats = h.reshape(n, self.n_members, self.flat).transpose(0, 1)
        return self._dense(feats)


class FusedMLP(nn.Module):
    """M vector reward nets: 2 hidden layers of 64, leaky ReLU, scalar output."""

    uses_actions = True

    def __init__(self, n_members: int, in_dim: int, dropout: float = 0.0, fast_dropout: bool = True):
        super().__init__()
        self.n_members = m = int(n_members)
        self.in_dim = int(in_dim)
        self.dropout = float(dropout)
        self.fast_dropout = bool(fast_dropout)
        self.generator: torch.Generator | None = None  # the dropout masks' stream (RewardEnsemble's)
        dims = [self.in_dim, HIDDEN, HIDDEN, 1]
        self.ws = nn.ParameterList([nn.Parameter(torch.empty(m, a, b)) for a, b in zip(dims[:-1], dims[1:])])
        self.bs = nn.ParameterList([nn.Parameter(torch.empty(m, b)) for b in dims[1:]])
        for w, b in zip(self.ws, self.bs):
            _init_linear_(w, b)

    def l2_weights(self) -> list[torch.Tensor]:
        return list(self.ws)

    def _run(self, x: torch.Tensor, training: bool) -> torch.Tensor:
        # x: (M, N, in) or (N, in) shared; matmul broadcasts the shared case over members.
        # Dropout (config; 0 by default on vector envs) follows each hidden layer, as in
        # rl-teacher's MLP; the paper names dropout for the Atari convs only.
        last = len(self.ws) - 1
        for i, (w, b) in enumerate(zip(self.ws, self.bs)):
            x = torch.matmul(x, w) + b.unsqueeze(1)
            if i < last:
                x = F.leaky_relu(x, LEAKY_SLOPE)
                x = dropout(x, self.dropout, training, self.fast_dropout and x.device.type == "cpu", self.generator)
        return x.squeeze(-1)

    def forward_members(self, x: torch.Tensor, actions: torch.Tensor | None = None,
                        training: bool | None = None) -> torch.Tensor:
        """x (M, N, in) features, row m = member m's own inputs. Returns (M, N)."""
        return self._run(x, self.training if training is None else training)

    def forward_shared(self, x: torch.Tensor, actions: torch.Tensor | None = None,
                       training: bool | None = None) -> torch.Tensor:
        """x (N, in) features, the same for every member. Returns (M, N)."""
        return self._run(x, self.training if training is None else training)


class _Scale(nn.Module):
    def forward(self, x):
        return x.float() / 255.0 if x.dtype == torch.uint8 else x


def reference_members(net: nn.Module) -> list[nn.Sequential]:
    """The M networks of a fused module as plain, separate ``nn.Sequential`` nets (same weights,
    batch-norm statistics and train/eval mode). Used for the equivalence test and as the
    benchmark's naive baseline; training never needs them."""
    m = net.n_members
    out = []
    with torch.no_grad():
        for j in range(m):
            if isinstance(net, FusedCNN):
                layers: list[nn.Module] = [_Scale()]
                cin = net.obs_shape[0]
                for conv, bn in zip(net.convs, net.bns):
                    c = nn.Conv2d(cin, CNN_FILTERS, conv.kernel_size, conv.stride)
                    sl = slice(j * CNN_FILTERS, (j + 1) * CNN_FILTERS)
                    c.weight.copy_(conv.weight[sl])
                    c.bias.copy_(conv.bias[sl])
                    b = nn.BatchNorm2d(CNN_FILTERS, momentum=bn.momentum, eps=bn.eps)
                    b.weight.copy_(bn.weight[sl])
                    b.bias.copy_(bn.bias[sl])
                    b.running_mean.copy_(bn.running_mean[sl])
                    b.running_var.copy_(bn.running_var[sl])
                    b.num_batches_tracked.copy_(bn.num_batches_tracked)
                    layers += [c, b, nn.LeakyReLU(LEAKY_SLOPE)]
                    if net.dropout > 0:
                        layers.append(nn.Dropout(net.dropout))
                    cin = CNN_FILTERS
                fc = nn.Linear(net.flat, HIDDEN)
                fc.weight.copy_(net.fc_w[j].T)
                fc.bias.copy_(net.fc_b[j])
                o = nn.Linear(HIDDEN, 1)
                o.weight.copy_(net.out_w[j].T)
                o.bias.copy_(net.out_b[j])
                layers += [nn.Flatten(), fc, nn.LeakyReLU(LEAKY_SLOPE), o]
            else:
                layers = []
                for i, (w, b) in enumerate(zip(net.ws, net.bs)):
                    lin = nn.Linear(w.shape[1], w.shape[2])
                    lin.weight.copy_(w[j].T)
                    lin.bias.copy_(b[j])
                    layers.append(lin)
                    if i < len(net.ws) - 1:
                        layers.append(nn.LeakyReLU(LEAKY_SLOPE))
                        if net.dropout > 0:
                            layers.append(nn.Dropout(net.dropout))
            seq = nn.Sequential(*layers)
            seq.train(net.training)
            out.append(seq.to(next(net.parameters()).device))
    return out


# =====================================================================================
# Preference dataset
# =====================================================================================


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

    @property
    def nbytes(self) -> int:
        return self.obs.nbytes + self.actions.nbytes


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

    def __init__(self, capacity: int = 3_000, n_members: int = 3, seed: int = 0, compact_frames: bool = True):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if n_members < 1:
            raise ValueError(f"n_members must be >= 1, got {n_members}")
        self.capacity = int(capacity)
        self.n_members = int(n_members)
        self.compact_frames = bool(compact_frames)
        self.seed = int(seed)
        self._rng = np.random.default_rng(seed)
        self._items: list[_Item] = []
        self.segment_length: int | None = None
        self.obs_shape: tuple[int, ...] | None = None
        self.obs_dtype: np.dtype | None = None
        self.act_shape: tuple[int, ...] | None = None
        self.act_dtype: np.dtype | None = None
        self.num_added = 0
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
        if self.compact_frames and obs.dtype == np.uint8 and obs.ndim == 4:
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
        self.num_added += 1
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

    def add_segments(self, left: Segment, right: Segment, answer_or_mu, key: Any = None) -> bool:
        return self.add(left.obs, left.actions, right.obs, right.actions, answer_or_mu, key=key)

    def add_query(self, query: Query, answer: str) -> bool:
        """Add a labelled :class:`Query` (key = query id). 'incomparable' -> not stored, False."""
        return self.add_segments(query.left, query.right, answer, key=query.id)

    def remove(self, key: Any) -> bool:
        """Drop the comparison stored under ``key`` (e.g. a retracted answer)."""
        for i, it in enumerate(self._items):
            if it.key == key:
                del self._items[i]
                return True
        return False

    @property
    def nbytes(self) -> int:
        return sum(it.left.nbytes + it.right.nbytes for it in self._items)

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

    # --- save / load ----------------------------------------------------------------------
    def state_dict(self, include_data: bool = True) -> dict:
        """RNG state and counters, plus (by default) every stored comparison as tensors.
        With ``include_data=False`` (Atari: the frames are up to 1.2 GB) the learner can
        rebuild the data by re-adding the labels, with their query ids as keys, to a dataset
        built with the same seed: the splits are the same (see the class docstring)."""
        sd: dict = {
            "capacity": self.capacity,
            "n_members": self.n_members,
            "seed": self.seed,
            "compact_frames": self.compact_frames,
            "rng": self._rng.bit_generator.state,
            "num_added": self.num_added,
        }
        if include_data:
            sd["meta"] = {
                "segment_length": self.segment_length,
                "obs_shape": self.obs_shape,
                "obs_dtype": None if self.obs_dtype is None else str(self.obs_dtype),
                "act_shape": self.act_shape,
                "act_dtype": None if self.act_dtype is None else str(self.act_dtype),
            }
            sd["items"] = [
                {
                    "key": it.key,
                    "left_obs": torch.from_numpy(it.left.obs),
                    "left_actions": torch.from_numpy(np.ascontiguousarray(it.left.actions)),
                    "left_compact": it.left.compact,
                    "right_obs": torch.from_numpy(it.right.obs),
                    "right_actions": torch.from_numpy(np.ascontiguousarray(it.right.actions)),
                    "right_compact": it.right.compact,
                    "mu": torch.from_numpy(it.mu),
                    "weights": torch.from_numpy(it.weights),
                }
                for it in self._items
            ]
        return sd

    def load_state_dict(self, sd: dict) -> None:
        if int(sd["n_members"]) != self.n_members:
            raise ValueError(f"dataset state has n_members {sd['n_members']}, expected {self.n_members}")
        self.capacity = int(sd["capacity"])
        self.seed = int(sd["seed"])
        self.compact_frames = bool(sd["compact_frames"])
        self._rng.bit_generator.state = sd["rng"]
        self.num_added = int(sd["num_added"])
        if "items" in sd:
            meta = sd["meta"]
            self.segment_length = meta["segment_length"]
            self.obs_shape = None if meta["obs_shape"] is None else tuple(meta["obs_shape"])
            self.obs_dtype = None if meta["obs_dtype"] is None else np.dtype(meta["obs_dtype"])
            self.act_shape = None if meta["act_shape"] is None else tuple(meta["act_shape"])
            self.act_dtype = None if meta["act_dtype"] is None else np.dtype(meta["act_dtype"])
            self._items = []
            for d in sd["items"]:
                w = d["weights"].numpy().astype(np.int64)
                self._items.append(
                    _Item(
                        d["key"],
                        _StoredSegment(d["left_obs"].numpy().copy(), d["left_actions"].numpy().copy(), bool(d["left_compact"])),
                        _StoredSegment(d["right_obs"].numpy().copy(), d["right_actions"].numpy().copy(), bool(d["right_compact"])),
                        d["mu"].numpy().astype(np.float32),
                        w,
                        w == 0,
                    )
                )


class RecentStates:
    """A ring buffer of the agent's most recent states (obs, actions), for
    :meth:`RewardEnsemble.update_normalization`. Add each rollout (or every k-th step); the
    buffer then always holds the current policy's state distribution. Atari: 2,048 states
    are 58 MB. Not saved in checkpoints: the normalisation statistics themselves are."""

    def __init__(self, capacity: int = 2048):
        if capacity < 2:
            raise ValueError(f"capacity must be >= 2, got {capacity}")
        self.capacity = int(capacity)
        self._obs: np.ndarray | None = None
        self._act: np.ndarray | None = None
        self._pos = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, obs, actions) -> None:
        """obs (B, *obs_shape), actions (B, ...): a batch of states (e.g. one step of all envs)."""
        obs, actions = np.asarray(obs), np.asarray(actions)
        if len(obs) != len(actions):
            raise ValueError(f"obs and actions batch sizes differ: {len(obs)} vs {len(actions)}")
        if self._obs is None:
            self._obs = np.empty((self.capacity,) + obs.shape[1:], dtype=obs.dtype)
            self._act = np.empty((self.capacity,) + actions.shape[1:], dtype=actions.dtype)
        elif obs.shape[1:] != self._obs.shape[1:] or actions.shape[1:] != self._act.shape[1:]:
            raise ValueError(
                f"expected obs (B, *{self._obs.shape[1:]}) and actions (B, *{self._act.shape[1:]}), "
                f"got {obs.shape} and {actions.shape}"
            )
        for o, a in zip(obs[-self.capacity:], actions[-self.capacity:]):
            self._obs[self._pos] = o
            self._act[self._pos] = a
            self._pos = (self._pos + 1) % self.capacity
        self._size = min(self.capacity, self._size + len(obs))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(obs, actions) of every state held (views; order is not meaningful)."""
        if self._obs is None:
            raise ValueError("no states added yet")
        return self._obs[: self._size], self._act[: self._size]


# =====================================================================================
# The ensemble
# =====================================================================================


def _space_to_action_spec(action_space) -> tuple[int | None, tuple[int, ...]]:
    """-> (n_discrete or None, box action shape). Accepts a gymnasium Discrete/Box, an int
    (number of discrete actions) or a tuple (Box action shape)."""
    if isinstance(action_space, (int, np.integer)):
        return int(action_space), ()
    if isinstance(action_space, tuple):
        return None, tuple(int(v) for v in action_space)
    n = getattr(action_space, "n", None)
    if n is not None and not hasattr(action_space, "nvec"):
        if int(getattr(action_space, "start", 0)) != 0:
            raise ValueError(f"Discrete action spaces must start at 0, got start={action_space.start}")
        return int(n), ()
    shape = getattr(action_space, "shape", None)
    if shape is not None and np.issubdtype(getattr(action_space, "dtype", np.float32), np.floating):
        return None, tuple(int(v) for v in shape)
    raise ValueError(f"unsupported action space {action_space!r}; expected Discrete, Box, int or shape tuple")


def bt_prob(left_returns: np.ndarray, right_returns: np.ndarray) -> np.ndarray:
    """Bradley-Terry P(left > right) from summed segment rewards: a sigmoid, overflow-free via tanh."""
    return 0.5 * (1.0 + np.tanh(0.5 * (left_returns - right_returns)))


class RewardEnsemble:
    """An ensemble of reward predictors r̂(o, a) trained on comparisons (see module docstring).

    obs_shape: one observation's shape ((4, 84, 84) uint8 on Atari).
    action_space: gymnasium Discrete/Box, an int (Discrete n) or a tuple (Box shape).
    arch: 'cnn' (the paper's Atari net), 'mlp' (vector net) or 'auto' (cnn for 3-D obs).
    reward_std: each member's output is normalised to this std (Atari 0.05, else 1.0).
    noise: the preference model's random-answer probability (paper: 0.1).
    adaptive_l2: adjust each member's L2 coefficient after every train call so that
        val loss / train loss stays in [l2_band[0], l2_band[1]] (paper: 1.1, 1.5), multiplying
        or dividing it by ``l2_factor``; False keeps ``l2_init`` fixed (0 = no L2).
    eval_size: comparisons per member scored (eval mode) on its train and on its validation
        part after each train call, for the L2 rule and the metrics; None = all of them;
        'auto' = 32 for the CNN (scoring costs forward passes: 2 x 32 comparisons is ~15% of
        a 100-comparison train call) and 256 for the MLP (cheap).
    infer_chunk: states per forward pass in inference (bounds memory).
    conv_dtype: 'float32' or 'bfloat16': the CNN's conv stack precision (see FusedCNN);
        the MLP always runs in float32.
    """

    def __init__(
        self,
        obs_shape: Sequence[int],
        action_space,
        *,
        n_members: int = 3,
        arch: str = "auto",
        dropout: float = 0.0,
        lr: float = 3e-4,
        batch_size: int = 32,
        reward_std: float = 1.0,
        noise: float = 0.1,
        adaptive_l2: bool = True,
        l2_init: float = 1e-3,
        l2_factor: float = 1.1,
        l2_band: tuple[float, float] = (1.1, 1.5),
        l2_range: tuple[float, float] = (1e-6, 10.0),
        eval_size: int | None | str = "auto",
        infer_chunk: int | None = None,
        conv_mode: str = "auto",
        channels_last: bool = True,
        fast_dropout: bool = True,
        conv_dtype: str = "float32",
        seed: int = 0,
        device: str | torch.device = "cpu",
    ):
        self.obs_shape = tuple(int(v) for v in obs_shape)
        self.n_actions, self.act_shape = _space_to_action_spec(action_space)
        if arch == "auto":
            arch = "cnn" if len(self.obs_shape) == 3 else "mlp"
        if arch not in ("cnn", "mlp"):
            raise ValueError(f"arch must be 'cnn', 'mlp' or 'auto', got {arch!r}")
        for name, v, lo in (("n_members", n_members, 1), ("batch_size", batch_size, 1)):
            if v < lo:
                raise ValueError(f"{name} must be >= {lo}, got {v}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if conv_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"conv_dtype must be 'float32' or 'bfloat16', got {conv_dtype!r}")
        if reward_std <= 0:
            raise ValueError(f"reward_std must be > 0, got {reward_std}")
        if l2_factor < 1.0 or not l2_band[0] <= l2_band[1]:
            raise ValueError(f"need l2_factor >= 1 and l2_band low <= high, got {l2_factor}, {l2_band}")
        self.arch = arch
        self.n_members = int(n_members)
        self.dropout = float(dropout)
        self.lr = float(lr)
        self.batch_size = int(batch_size)
        self.reward_std = float(reward_std)
        self.noise = float(noise)
        self.adaptive_l2 = bool(adaptive_l2)
        self.l2_factor = float(l2_factor)
        self.l2_band = (float(l2_band[0]), float(l2_band[1]))
        self.l2_range = (float(l2_range[0]), float(l2_range[1]))
        if eval_size == "auto":
            eval_size = 32 if arch == "cnn" else 256
        if eval_size is not None and int(eval_size) < 1:
            raise ValueError(f"eval_size must be >= 1, None or 'auto', got {eval_size}")
        self.eval_size = eval_size
        self.seed = int(seed)
        self.device = torch.device(device)
        self.infer_chunk = infer_chunk or (1024 if arch == "cnn" else 65536)

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            if arch == "cnn":
                self.net: nn.Module = FusedCNN(self.n_members, self.obs_shape, self.dropout, conv_mode=conv_mode,
                                               channels_last=channels_last, fast_dropout=fast_dropout,
                                               conv_dtype=getattr(torch, conv_dtype))
            else:
                obs_dim = int(np.prod(self.obs_shape)) if self.obs_shape else 1
                act_dim = self.n_actions if self.n_actions is not None else int(np.prod(self.act_shape))
                self.net = FusedMLP(self.n_members, obs_dim + act_dim, self.dropout, fast_dropout=fast_dropout)
        self.net.to(self.device)
        self.net.generator = self._torch_gen = torch.Generator(device=self.device)
        self.net.eval()  # the mode flag is unused: every call passes ``training`` explicitly
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        self.l2 = np.full(self.n_members, float(l2_init), dtype=np.float64)
        self.norm_mean = np.zeros(self.n_members, dtype=np.float64)
        self.norm_std = np.ones(self.n_members, dtype=np.float64)
        self.norm_weight = np.ones(self.n_members, dtype=np.float64)
        """Each member's weight in r̂: 0 for one whose last fit failed the chance test (normalization.py)."""
        self.raw_std = np.ones(self.n_members, dtype=np.float64)
        """Each member's raw per-step std on the last normalisation sample, before the floor (a health metric)."""
        self.norm_count = 0
        self._rng = np.random.default_rng(self.seed)
        self.train_steps = 0
        self.comparisons_seen = 0

    @classmethod
    def from_config(cls, cfg, obs_shape: Sequence[int], action_space, device: str | torch.device = "cpu", **overrides):
        """Build from a *resolved* TrainConfig (rlhp_core.config.resolve): ensemble_size,
        dropout, reward_lr, reward_batch, reward_std, reward_dtype, adaptive_l2 (False: no L2 at all, the
        paper's 'no regularisation' ablation), seed. ``overrides`` go to the constructor."""
        if cfg.reward_std is None or cfg.dropout is None:
            raise ValueError("from_config needs a resolved TrainConfig (reward_std/dropout are None); call config.resolve first")
        kw = dict(
            n_members=cfg.ensemble_size,
            dropout=cfg.dropout,
            lr=cfg.reward_lr,
            batch_size=cfg.reward_batch,
            reward_std=cfg.reward_std,
            adaptive_l2=cfg.adaptive_l2,
            conv_dtype=cfg.reward_dtype,
            seed=cfg.seed,
            device=device,
        )
        if not cfg.adaptive_l2:  # the config's meaning: the 'no regularisation' ablation's L2 part
            kw["l2_init"] = 0.0
        kw.update(overrides)
        return cls(obs_shape, action_space, **kw)

    # --- plumbing -------------------------------------------------------------------------
    @property
    def uses_actions(self) -> bool:
        return self.net.uses_actions

    def to(self, device: str | torch.device) -> "RewardEnsemble":
        self.device = torch.device(device)
        self.net.to(self.device)
        if self._torch_gen.device != self.device:  # reseeded at every train call
            self.net.generator = self._torch_gen = torch.Generator(device=self.device)
        for state in self.optimizer.state.values():
            for k, v in state.items():
                if isinstance(v, torch.Tensor) and v.dim() > 0:
                    state[k] = v.to(self.device)
        return self

    def _check_obs(self, obs, batch_dims: int, name: str = "obs") -> np.ndarray | torch.Tensor:
        if not isinstance(obs, torch.Tensor):
            obs = np.asarray(obs)
        shape = tuple(obs.shape)
        want = "(" + ", ".join(["B", "T"][:batch_dims] + [str(v) for v in self.obs_shape]) + ")"
        if len(shape) != batch_dims + len(self.obs_shape) or shape[batch_dims:] != self.obs_shape:
            raise ValueError(f"{name}: expected shape {want}, got {shape}")
        if self.arch == "cnn":
            ok = obs.dtype == (torch.uint8 if isinstance(obs, torch.Tensor) else np.uint8)
            if not ok:
                raise ValueError(f"{name}: expected dtype uint8 frames, got {obs.dtype}")
        else:
            if isinstance(obs, torch.Tensor):
                is_num = not obs.is_complex()
            else:
                is_num = (np.issubdtype(obs.dtype, np.number) and not np.issubdtype(obs.dtype, np.complexfloating)) or obs.dtype == np.bool_
            if not is_num:
                raise ValueError(f"{name}: expected a real numeric dtype, got {obs.dtype}")
        return obs

    def _check_actions(self, actions, batch_shape: tuple, name: str = "actions"):
        if actions is None:
            if self.uses_actions:
                raise ValueError(f"{name}: this reward model takes actions (r̂(o, a)); got None")
            return None
        if not isinstance(actions, torch.Tensor):
            actions = np.asarray(actions)
        shape = tuple(actions.shape)
        if self.n_actions is not None:
            if shape != batch_shape:
                raise ValueError(f"{name}: expected shape {batch_shape} (Discrete action indices), got {shape}")
            is_int = (not actions.is_floating_point()) if isinstance(actions, torch.Tensor) else np.issubdtype(actions.dtype, np.integer)
            if not is_int:
                raise ValueError(f"{name}: expected an integer dtype for Discrete actions, got {actions.dtype}")
            if actions.size if isinstance(actions, np.ndarray) else actions.numel():
                lo, hi = int(actions.min()), int(actions.max())
                if lo < 0 or hi >= self.n_actions:
                    raise ValueError(f"{name}: expected Discrete actions in [0, {self.n_actions}), got values in [{lo}, {hi}]")
        else:
            want = batch_shape + self.act_shape
            if shape != want:
                raise ValueError(f"{name}: expected shape {want} (Box actions), got {shape}")
        return actions

    def _tensor(self, x) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            if not x.flags.writeable or any(st < 0 for st in x.strides):
                x = np.array(x)  # torch.from_numpy takes neither read-only nor reversed arrays
            x = torch.from_numpy(x)
        return x.to(self.device, non_blocking=False)

    def _features(self, obs: torch.Tensor, actions: torch.Tensor | None, lead: int) -> torch.Tensor:
        """MLP input: concat(flat obs, one-hot or float action) over the ``lead`` batch dims."""
        shape = obs.shape[:lead]
        o = obs.reshape(*shape, -1).float()
        if self.n_actions is not None:
            a = F.one_hot(actions.long(), self.n_actions).float()
        else:
            a = actions.reshape(*shape, -1).float()
        return torch.cat([o, a], dim=-1)

    def _forward_members(self, obs, actions, training: bool) -> torch.Tensor:
        """obs (M, N, *obs_shape), actions (M, N, ...) -> raw (M, N)."""
        o = self._tensor(obs)
        if self.arch == "cnn":
            return self.net.forward_members(o, training=training)
        return self.net.forward_members(self._features(o, self._tensor(actions), 2), training=training)

    def _forward_shared(self, obs, actions) -> torch.Tensor:
        """obs (N, *obs_shape) shared by all members -> raw (M, N), eval mode, in chunks."""
        n = obs.shape[0]
        outs = []
        for s in range(0, max(n, 1), self.infer_chunk):
            o = self._tensor(obs[s : s + self.infer_chunk])
            if self.arch == "cnn":
                outs.append(self.net.forward_shared(o, training=False))
            else:
                a = self._tensor(actions[s : s + self.infer_chunk])
                outs.append(self.net.forward_shared(self._features(o, a, 1), training=False))
        return torch.cat(outs, dim=1) if outs else torch.zeros(self.n_members, 0, device=self.device)

    def raw_rewards(self, obs, actions=None) -> np.ndarray:
        """Unnormalised per-member rewards (M, B) for a batch of states (eval mode:
        batch-norm running statistics, no dropout; never changes the module's state)."""
        obs = self._check_obs(obs, 1)
        actions = self._check_actions(actions, tuple(obs.shape[:1]))
        with torch.inference_mode():
            return self._forward_shared(obs, actions).double().cpu().numpy()

    # --- inference for the learner ------------------------------------------------------
    def predict_members(self, obs, actions=None) -> np.ndarray:
        """Normalised per-member rewards (M, B): (raw - mean_m) / std_m * reward_std * weight_m
        (std_m floored and weight_m set by :meth:`update_normalization`)."""
        raw = self.raw_rewards(obs, actions)
        return (raw - self.norm_mean[:, None]) / self.norm_std[:, None] * (self.reward_std * self.norm_weight[:, None])

    def predict(self, obs, actions=None) -> np.ndarray:
        """r̂ for a batch of states (all envs at once): (B,) float32, the mean over members of
        each member's normalised output. Eval mode (batch-norm running stats, no dropout)."""
        return self.predict_members(obs, actions).mean(axis=0).astype(np.float32)

    __call__ = predict

    def update_normalization(self, obs, actions=None, *, segment_length: int = 25, fit_metrics: dict | None = None) -> dict:
        """Set each member's (mean, std) from the raw outputs on these states (a sample of
        recent agent states, e.g. the last rollouts). Replaces the previous statistics.
        Returns them. On this very batch each member's normalised output then has mean 0 and
        std ``reward_std``, unless its raw std is below the floor for ``segment_length``-step
        segments; ``fit_metrics`` (from :meth:`train`) set each member's weight by the chance
        test. Both rules: rlhp_core/normalization.py."""
        raw = self.raw_rewards(obs, actions)
        if raw.shape[1] < 2:
            raise ValueError(f"update_normalization needs at least 2 states, got {raw.shape[1]}")
        self.norm_mean = raw.mean(axis=1)
        self.raw_std = raw.std(axis=1)
        self.norm_std = np.maximum(self.raw_std, std_floor(segment_length))
        if fit_metrics is not None and "val_decisive_members" in fit_metrics:
            self.norm_weight = member_weights(fit_metrics["val_accuracy_members"], fit_metrics["val_decisive_members"])
        self.norm_count = raw.shape[1]
        return {"norm_mean": self.norm_mean.tolist(), "norm_std": self.norm_std.tolist(),
                "norm_weight": self.norm_weight.tolist()}

    def segment_returns(self, obs, actions=None, normalized: bool = False) -> np.ndarray:
        """Summed predicted reward of each segment per member: obs (S, T, *obs_shape),
        actions (S, T, ...) -> (M, S). Raw (the quantity the preference model compares)
        unless ``normalized``."""
        obs = self._check_obs(obs, 2)
        s, t = obs.shape[:2]
        actions = self._check_actions(actions, (s, t))
        flat_o = obs.reshape((s * t,) + self.obs_shape)
        flat_a = None if actions is None else actions.reshape((s * t,) + tuple(actions.shape[2:]))
        raw = self.raw_rewards(flat_o, flat_a).reshape(self.n_members, s, t)
        if normalized:
            raw = (raw - self.norm_mean[:, None, None]) / self.norm_std[:, None, None] * self.reward_std
        return raw.sum(axis=2)

    def member_probs(self, left_obs, left_actions, right_obs, right_actions, noise: float = 0.0) -> np.ndarray:
        """P(left > right) per member for P candidate pairs: (M, P). For query selection by
        disagreement (variance over axis 0). ``noise`` adds the random-answer term
        ((1-noise)*p + noise/2); the default 0 gives each member's Bradley-Terry probability."""
        rl = self.segment_returns(left_obs, left_actions)
        rr = self.segment_returns(right_obs, right_actions)
        if rl.shape != rr.shape:
            raise ValueError(f"left and right batches differ: {rl.shape[1]} vs {rr.shape[1]} pairs")
        return (1.0 - noise) * bt_prob(rl, rr) + noise / 2.0

    # --- training -----------------------------------------------------------------------
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
        if self.adaptive_l2:
            self._adapt_l2(metrics["train_loss_eval_members"], metrics["val_loss_members"])
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

        def mean(v):
            v = [x for x in v if not math.isnan(x)]
            return float(np.mean(v)) if v else float("nan")

        return {
            "train_loss_eval": mean(tr["loss"]),
            "val_loss": mean(va["loss"]),
            "val_accuracy": mean(va["acc"]),
            "train_accuracy": mean(tr["acc"]),
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
        losses = [x for x in self._score(dataset, [dataset.val_indices(j) for j in range(self.n_members)])["loss"]
                  if not math.isnan(x)]
        return float(np.mean(losses)) if losses else float("nan")

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

    def _adapt_l2(self, train_losses: Sequence[float], val_losses: Sequence[float]) -> None:
        lo, hi = self.l2_band
        for j, (tr, va) in enumerate(zip(train_losses, val_losses)):
            if math.isnan(tr) or math.isnan(va) or tr <= 0:
                continue
            ratio = va / tr
            if ratio > hi:
                self.l2[j] *= self.l2_factor
            elif ratio < lo:
                self.l2[j] /= self.l2_factor
        np.clip(self.l2, self.l2_range[0], self.l2_range[1], out=self.l2)

    # --- save / load ----------------------------------------------------------------------
    def _signature(self) -> dict:
        return {
            "obs_shape": list(self.obs_shape),
            "n_actions": self.n_actions,
            "act_shape": list(self.act_shape),
            "arch": self.arch,
            "n_members": self.n_members,
        }

    def state_dict(self) -> dict:
        """Networks (incl. batch-norm statistics), optimiser, L2 coefficients, normalisation
        statistics, counters and the internal RNG. Tensors and plain Python values only, so
        ``torch.load(..., weights_only=True)`` reads it."""
        return {
            "version": 1,
            "signature": self._signature(),
            "net": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "l2": torch.from_numpy(self.l2.copy()),
            "norm_mean": torch.from_numpy(self.norm_mean.copy()),
            "norm_std": torch.from_numpy(self.norm_std.copy()),
            "norm_weight": torch.from_numpy(self.norm_weight.copy()),
            "raw_std": torch.from_numpy(self.raw_std.copy()),
            "norm_count": self.norm_count,
            "rng": self._rng.bit_generator.state,
            "train_steps": self.train_steps,
            "comparisons_seen": self.comparisons_seen,
        }

    def load_state_dict(self, sd: dict) -> None:
        if sd.get("signature") != self._signature():
            raise ValueError(f"reward model state is for {sd.get('signature')}, this model is {self._signature()}")
        self.net.load_state_dict(sd["net"])
        self.optimizer.load_state_dict(sd["optimizer"])
        self.l2 = sd["l2"].double().numpy().copy()
        self.norm_mean = sd["norm_mean"].double().numpy().copy()
        self.norm_std = sd["norm_std"].double().numpy().copy()
        ones = torch.ones(self.n_members, dtype=torch.float64)  # states saved before these existed
        self.norm_weight = sd.get("norm_weight", ones).double().numpy().copy()
        self.raw_std = sd.get("raw_std", sd["norm_std"]).double().numpy().copy()
        self.norm_count = int(sd["norm_count"])
        self._rng.bit_generator.state = sd["rng"]
        self.train_steps = int(sd["train_steps"])
        self.comparisons_seen = int(sd["comparisons_seen"])
        self.to(self.device)


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

"""The reward networks: every ensemble member in one module (paper, section 2.2.3 and appendix A).

``FusedCNN`` (Atari) and ``FusedMLP`` (vector observations) hold *all* ensemble members in
one module with member-stacked parameters. Each member is exactly the paper's network; fusing
only changes how the arithmetic is batched, never the math:

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

Measured (tests/benchmarks/test_bench_reward.py, same run, 1 thread): training ~2x cheaper per
comparison than 3 separate ``nn.Sequential`` nets (B=32: 152 -> 75 ms per comparison for
all 3 members), inference ~15% cheaper; numbers in that file's docstring. The tests build
those M plain nets with the same weights (``reference_members`` in tests/helpers/reward.py)
and check fused == separate (outputs, batch-norm statistics, gradients) to 1e-5.

Layer order per conv layer (the paper names the parts, not the order): conv -> batch norm ->
leaky ReLU (0.01) -> dropout. The Atari net sees observations only (actions are accepted
and checked but not used: the paper's Atari predictor takes the 84x84x4 frames; Ibarz et al.
2018 report actions did not help). The vector net sees concat(flat obs, action) with
Discrete actions one-hot and Box actions as floats (built by rlhp_core/reward/ensemble.py).

The L2 penalty covers the weights ``l2_weights()`` returns: conv and dense weights, not biases
or batch-norm parameters (rlhp_core/reward/fitting.py).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CNN_FILTERS", "CNN_LAYERS", "HIDDEN", "LEAKY_SLOPE", "FusedCNN", "FusedMLP", "conv_out", "dropout"]

LEAKY_SLOPE = 0.01
"""Negative slope of every leaky ReLU (paper, appendix A: leaky ReLU, alpha = 0.01)."""
CNN_LAYERS = ((7, 3), (5, 2), (3, 1), (3, 1))
"""(kernel, stride) of the 4 conv layers (paper, appendix A)."""
CNN_FILTERS = 16
"""Filters per conv layer and member (paper, appendix A)."""
HIDDEN = 64
"""Width of the dense hidden layer(s) (paper, appendix A: a fully connected layer of size 64)."""


def conv_out(size: int, k: int, s: int) -> int:
    """Output size of an unpadded conv with kernel ``k`` and stride ``s`` on ``size`` inputs."""
    return (size - k) // s + 1


def _init_linear_(w: torch.Tensor, b: torch.Tensor) -> None:
    """nn.Linear's default init, per member: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for w and b."""
    bound = 1.0 / math.sqrt(w.shape[-2])
    with torch.no_grad():
        w.uniform_(-bound, bound)
        b.uniform_(-bound, bound)


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
      tests/benchmarks/test_bench_reward.py), then the members are stacked for the dense layers.

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
            h, w = conv_out(h, k, s), conv_out(w, k, s)
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

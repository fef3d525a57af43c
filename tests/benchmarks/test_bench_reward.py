"""Reward-model cost: naive M separate nets vs the fused ensemble, measured in the same run.

Run the numbers with
    OMP_NUM_THREADS=1 python -m pytest tests/benchmarks/test_bench_reward.py --benchmark-enable \\
        --benchmark-columns=min,median,rounds --benchmark-group-by=group -s
(the project's default ``--benchmark-disable`` runs each once, as a smoke test). Each
benchmark stores ms per comparison (training, all 3 members, 50 frames each) or per frame
(inference, all members) in ``extra_info`` and prints it with ``-s``.

Why it matters: the paper trains on ~1 comparison per 10 RL steps with 3 members; at the
naive cost that is several ms per RL step, the whole budget of a fast A2C loop.

Variants (the same math; see rlhp_core/reward/networks.py):
  naive          3 separate nn.Sequential nets (the textbook way): F.dropout, NCHW, /255 each.
  grouped        one grouped Conv2d(groups=3) per layer over channel-stacked members (with the
                 channels_last / dropout / conversion changes below).
  split_nchw     fused module, one conv per member, default memory format, F.dropout.
  fused          what RewardEnsemble uses on CPU: one conv per member, channels_last,
                 uint8 transposed before widening, 1/255 folded into conv1, bit-mask dropout,
                 in-place leaky ReLU; inference with batch norm folded into the convs.

Measured on the 2-core AMD EPYC dev box (1 torch thread, other jobs sharing the
machine, load ~2; min of 5 rounds, ms per comparison = all 3 members, 50 frames each):
  training, B=8  (default):  naive 111.8 | grouped 78.1 | split_nchw 111.8 | fused 56.9
  training, B=32 (paper):    naive 152.1 | grouped 82.8 |                  | fused 74.9
  inference, 16 frames (one step of 16 envs), ms per frame, all members:
                             naive 0.32  | grouped 0.25 |                  | fused 0.27
  vector MLP (14 inputs), B=32, ms per comparison: naive 0.13 | fused 0.14 (tiny nets:
  per-op overhead dominates; fusing buys nothing there).
At the paper's ratio (0.1 comparisons per RL step) the fused Atari model costs ~7.5 ms per
RL step for training (naive ~15 ms). Per-comparison cost rises with the batch (activations
of 1,600 frames per member no longer fit in cache).
"""

import os
import time

import numpy as np
import pytest
import torch

from rlhp_core.reward.bradley_terry import preference_loss_per_item
from rlhp_core.reward.networks import FusedCNN, FusedMLP
from tests.helpers.reward import reference_members

torch.set_num_threads(1)

M, T = 3, 25
B = int(os.environ.get("RLHP_BENCH_BATCH", "8"))  # comparisons per member per step (paper: 32)
N = B * 2 * T
ATARI = (4, 84, 84)
INFER_FRAMES = 16  # one predict() call for 16 parallel envs


@pytest.fixture(scope="module")
def frames():
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (M, N) + ATARI, dtype=torch.uint8, generator=g)


@pytest.fixture(scope="module")
def mu():
    return torch.tensor([1.0, 0.0]).expand(M, B, 2)


def _fused(**kw):
    torch.manual_seed(0)
    return FusedCNN(M, ATARI, dropout=0.5, **kw)


def _train_fn(variant, frames, mu):
    if variant == "naive":
        nets = reference_members(_fused())
        for n in nets:
            n.train()
        opt = torch.optim.Adam([p for n in nets for p in n.parameters()], lr=3e-4)

        def step():
            total = 0.0
            for j, net in enumerate(nets):
                r = net(frames[j]).reshape(B, 2, T).sum(-1)
                total = total + preference_loss_per_item(r[..., 0], r[..., 1], mu[j]).mean()
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()

        return step
    kw = {
        "grouped": dict(conv_mode="grouped"),
        "split_nchw": dict(conv_mode="split", channels_last=False, fast_dropout=False),
        "fused": dict(),
    }[variant]
    net = _fused(**kw)
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=3e-4)

    def step():
        r = net.forward_members(frames).reshape(M, B, 2, T).sum(-1)
        loss = preference_loss_per_item(r[..., 0], r[..., 1], mu).mean(1).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _report(benchmark, unit: str, per: int):
    stats = getattr(benchmark, "stats", None)
    if stats is None or not getattr(stats, "stats", None):
        return
    ms = stats.stats.min * 1000 / per
    benchmark.extra_info[f"ms_per_{unit}_min"] = round(ms, 3)
    benchmark.extra_info[f"ms_per_{unit}_median"] = round(stats.stats.median * 1000 / per, 3)
    print(f"\n  {benchmark.name}: {ms:.2f} ms per {unit} (min of {stats.stats.rounds})")


@pytest.mark.benchmark(group="reward-train-atari")
@pytest.mark.parametrize("variant", ["naive", "grouped", "split_nchw", "fused"])
def test_bench_train_per_comparison(benchmark, variant, frames, mu):
    step = _train_fn(variant, frames, mu)
    benchmark.extra_info.update(comparisons_per_member_per_round=B, members=M, frames_per_round=M * N)
    benchmark.pedantic(step, rounds=5, warmup_rounds=1)
    _report(benchmark, "comparison", B)


@pytest.mark.benchmark(group="reward-infer-atari")
@pytest.mark.parametrize("variant", ["naive", "grouped", "fused"])
def test_bench_infer_per_frame(benchmark, variant, frames):
    x = frames[0, :INFER_FRAMES].contiguous()
    if variant == "naive":
        nets = reference_members(_fused())
        for n in nets:
            n.eval()

        def run():
            with torch.inference_mode():
                return torch.stack([n(x).squeeze(-1) for n in nets]).mean(0)
    else:
        net = _fused(conv_mode="grouped" if variant == "grouped" else "auto")
        net.eval()

        def run():
            with torch.inference_mode():
                return net.forward_shared(x).mean(0)

    benchmark.extra_info.update(frames_per_round=INFER_FRAMES, members=M)
    out = benchmark.pedantic(run, rounds=20, warmup_rounds=2)
    assert out.shape == (INFER_FRAMES,)
    # every variant computes the same r-hat: the plain nets' mean over members (same weights)
    plain = reference_members(_fused())
    with torch.inference_mode():
        expected = torch.stack([n.eval()(x).squeeze(-1) for n in plain]).mean(0)
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)
    _report(benchmark, "frame", INFER_FRAMES)


@pytest.mark.benchmark(group="reward-train-vector")
@pytest.mark.parametrize("variant", ["naive", "fused"])
def test_bench_train_vector_per_comparison(benchmark, variant):
    """Vector envs (e.g. Hopper: 11 obs + 3 action dims), batch 32, T=25."""
    torch.manual_seed(0)
    b, d = 32, 14
    x = torch.randn(M, b * 2 * T, d)
    mu = torch.tensor([1.0, 0.0]).expand(M, b, 2)
    net = FusedMLP(M, d)
    if variant == "naive":
        nets = reference_members(net)
        opt = torch.optim.Adam([p for n in nets for p in n.parameters()], lr=3e-4)

        def step():
            total = 0.0
            for j, n in enumerate(nets):
                r = n(x[j]).reshape(b, 2, T).sum(-1)
                total = total + preference_loss_per_item(r[..., 0], r[..., 1], mu[j]).mean()
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
    else:
        opt = torch.optim.Adam(net.parameters(), lr=3e-4)

        def step():
            r = net.forward_members(x).reshape(M, b, 2, T).sum(-1)
            loss = preference_loss_per_item(r[..., 0], r[..., 1], mu).mean(1).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    benchmark.pedantic(step, rounds=20, warmup_rounds=2)
    _report(benchmark, "comparison", b)


@pytest.mark.slow
def test_bench_smoke_timing_is_sane(frames, mu):
    """Without pytest-benchmark: the fused step is not slower than the naive one (generous
    margin for a shared, noisy machine). Interleaved to share the noise."""
    naive, fused = _train_fn("naive", frames, mu), _train_fn("fused", frames, mu)
    naive(), fused()
    tn, tf = [], []
    for _ in range(2):
        t = time.perf_counter()
        naive()
        tn.append(time.perf_counter() - t)
        t = time.perf_counter()
        fused()
        tf.append(time.perf_counter() - t)
    assert min(tf) < 1.2 * min(tn), (tn, tf)
    assert np.isfinite(min(tf))

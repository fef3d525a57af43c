"""A2C update cost of the NatureCNN policy, float32 vs bf16 autocast (80 frames, forward + backward).

Not used by the learner: it measures what a bf16 policy would save (results/speed/README.md).

    OMP_NUM_THREADS=1 python results/speed/policy_bf16_microbench.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from rlhp_core.policies import NatureCNN  # noqa: E402

FRAMES = 80  # one A2C update: 16 envs x 5 steps


def main() -> int:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = NatureCNN((4, 84, 84), np.uint8, 9)
    opt = torch.optim.RMSprop(net.parameters(), lr=7e-4)
    x = torch.randint(0, 255, (FRAMES, 4, 84, 84), dtype=torch.uint8)

    def update(bf16: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits, value = net(x)
        loss = logits.float().logsumexp(-1).mean() + value.float().square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    for bf16 in (False, True) * 2:
        update(bf16)
        t = time.perf_counter()
        for _ in range(10):
            update(bf16)
        ms = (time.perf_counter() - t) / 10 * 1000
        print(f"{'bf16' if bf16 else 'float32':8s} {ms:6.1f} ms per update of {FRAMES} frames", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The arithmetic floor of the Enduro loop: how fast it could be if every multiply-add ran at
this CPU's own matrix-multiply speed.

Counts the multiply-adds (MACs) per agent step of each part of the full recipe from the layer
shapes (the paper's reward CNN, the Nature-CNN policy), measures what one core does on a large
float32 and bfloat16 matrix product (the best case for oneDNN/MKL, not a datasheet peak), and
divides. Convolutions with 4-16 channels never reach that speed, so the real loop is slower
than this floor; the floor is what no implementation on this CPU can beat.

    OMP_NUM_THREADS=1 python results/speed/compute_floor.py [--ratio 0.1] [--raw-cpu-us 600]

A step's MACs (per agent step, i.e. per env step; 16 envs step together):
- reward training: ratio comparisons x 2 segments x 25 frames x 3 members x (forward +
  backward); backward = weight gradients of every layer + input gradients of all but conv1;
- the post-refit evaluation (the L2 rule): 2 x eval_size comparisons per member, forward only,
  every reward_update_every steps;
- r̂ inference: every state once, 3 members, forward;
- the policy: act's forward (kept for the update) + the update's backward.
Query selection, normalisation and the quality metric (forward passes too) are left out, so the
floor is lower still than the real cost.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from rlhp_core.reward.networks import CNN_FILTERS, CNN_LAYERS, HIDDEN, conv_out  # noqa: E402


def reward_cnn_macs(size: int = 84, c: int = 4) -> dict[str, float]:
    """Per frame and member: forward MACs, and the backward's (weight + input gradients)."""
    fwd, first = 0.0, 0.0
    cin = c
    for i, (k, s) in enumerate(CNN_LAYERS):
        size = conv_out(size, k, s)
        layer = size * size * CNN_FILTERS * cin * k * k
        fwd += layer
        first = layer if i == 0 else first
        cin = CNN_FILTERS
    dense = size * size * CNN_FILTERS * HIDDEN + HIDDEN
    fwd += dense
    return {"forward": fwd, "backward": fwd + (fwd - first)}


def nature_cnn_macs() -> dict[str, float]:
    """Per frame: Nature-CNN (32 8x8/4, 64 4x4/2, 64 3x3/1, 512 dense) + policy and value heads."""
    layers = [(20 * 20 * 32 * 4 * 64), (9 * 9 * 64 * 32 * 16), (7 * 7 * 64 * 64 * 9), (3136 * 512), (512 * 10)]
    fwd = float(sum(layers))
    return {"forward": fwd, "backward": fwd + (fwd - layers[0])}


def matmul_gmacs(dtype: torch.dtype, n: int = 2048, windows: int = 5, seconds: float = 1.0) -> float:
    """The best of several one-second windows (a floor should use the fastest speed seen)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    best = 0.0
    for _ in range(windows):
        t0, reps = time.perf_counter(), 0
        while time.perf_counter() - t0 < seconds:
            a @ b
            reps += 1
        best = max(best, reps * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ratio", type=float, default=0.1, help="comparisons trained per agent step")
    p.add_argument("--eval-size", type=int, default=32)
    p.add_argument("--update-every", type=int, default=1000)
    p.add_argument("--raw-cpu-us", type=float, default=None,
                   help="the raw emulator's CPU microseconds per agent step (the loop harness's raw_cpu_us_per_step)")
    p.add_argument("--json")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    r, pol = reward_cnn_macs(), nature_cnn_macs()
    members, frames = 3, 50
    macs = {
        "reward training": a.ratio * frames * members * (r["forward"] + r["backward"]),
        "reward eval (L2 rule)": 2 * a.eval_size * frames * members * r["forward"] / a.update_every,
        "reward inference": members * r["forward"],
        "policy act + update": pol["forward"] + pol["backward"],
    }
    speed = {"float32": matmul_gmacs(torch.float32), "bfloat16": matmul_gmacs(torch.bfloat16)}
    out = {"ratio": a.ratio, "mmacs_per_step": {k: v / 1e6 for k, v in macs.items()},
           "matmul_gmacs_per_s_one_core": speed, "floor_ms_per_step": {}}
    total = sum(macs.values())
    print(f"MACs per agent step at ratio {a.ratio}: " + ", ".join(f"{k} {v / 1e6:.1f}M" for k, v in macs.items())
          + f"; total {total / 1e6:.1f}M")
    for name, g in speed.items():
        one = total / (g * 1e9) * 1e3
        out["floor_ms_per_step"][name] = {"cpu_ms_per_step": one}
        line = (f"{name}: large matmul {g:.1f} GMAC/s on one core -> the arithmetic alone takes {one:.2f} ms of "
                f"CPU per agent step")
        if a.raw_cpu_us:
            # the loop also runs the emulator; with both cores always busy and nothing else,
            # loop/raw = raw CPU per step / (raw CPU per step + arithmetic CPU per step)
            best = a.raw_cpu_us / (a.raw_cpu_us + one * 1e3)
            out["floor_ms_per_step"][name]["best_loop_over_raw"] = best
            line += f"; with the emulator's {a.raw_cpu_us:.0f} us: loop/raw <= {best:.3f}"
        print(line)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

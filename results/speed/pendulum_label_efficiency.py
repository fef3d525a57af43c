"""Label efficiency on Pendulum-v1: the same 500-label runs under different reward-fit settings.

Each run is the learning test's recipe (PPO, 4 envs, 61,440 steps, 500 rational labels,
50 pretraining epochs). Columns: final return, and, averaged over the metric rows at 30k
steps and later, held-out true-preference accuracy on fresh pairs of the current policy,
predicted-vs-true return correlation and the reward model's validation accuracy.

    OMP_NUM_THREADS=1 python results/speed/pendulum_label_efficiency.py --seeds 0-7 \\
        --variants sync:0.1,background:0.1 --csv results/speed/pendulum_label_efficiency_background.csv
    # sparse labels, at the paper's Enduro rate (150 labels: 38 up front, then ~1.8 per 1,000 steps)
    OMP_NUM_THREADS=1 python results/speed/pendulum_label_efficiency.py --seeds 0-7 --budget 150 \
        --variants sync:0.1,sync:0.03 --csv results/speed/pendulum_label_efficiency_sparse.csv
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from rlhp_core.config import TrainConfig  # noqa: E402
from rlhp_core.cli import train  # noqa: E402


def config(run_dir: Path, reward_fit: str, schedule: str, seed: int, budget: int = 500) -> TrainConfig:
    """``schedule``: a number (the 'ratio' fit schedule at that reward_train_ratio) or a 'labels' spec."""
    ratio = {"reward_fit_schedule": "ratio", "reward_train_ratio": float(schedule)} if schedule[0].isdigit() \
        else {"reward_fit_schedule": schedule}
    return TrainConfig(env_id="Pendulum-v1", algo="ppo", num_envs=4, n_steps=512, gamma=0.9, ent_coef=0.0, lr=1e-3,
                       label_budget=budget, pretrain_epochs=50, total_steps=61_440, **ratio,
                       reward_fit=reward_fit, seed=seed, log_every=2048, progress=False, run_dir=str(run_dir))


def late_mean(rows: list[dict], key: str, from_step: int = 30_000) -> float:
    vals = [float(r[key]) for r in rows if int(r["env_steps"]) >= from_step and r.get(key)]
    return float(np.mean(vals)) if vals else float("nan")


def one_run(reward_fit: str, schedule: str, seed: int, budget: int = 500) -> dict:
    with tempfile.TemporaryDirectory() as d:
        summary = train(config(Path(d) / "run", reward_fit, schedule, seed, budget))
        with open(Path(d) / "run" / "metrics.csv", newline="") as f:
            rows = list(csv.DictReader(f))
    returns = [float(r["charts/episodic_return"]) for r in rows if r.get("charts/episodic_return")]
    trained = [float(r["reward/comparisons_trained"]) for r in rows if r.get("reward/comparisons_trained")]
    name = f"r{schedule}" if schedule[0].isdigit() else schedule
    return dict(run=f"{reward_fit}_{name}_s{seed}", reward_fit=reward_fit, fit_schedule=schedule, seed=seed,
                label_budget=budget,
                final_return=summary["final_return"], return_last_3_rows=float(np.mean(returns[-3:])),
                true_pref_accuracy_late=late_mean(rows, "reward/true_pref_accuracy"),
                pred_true_corr_late=late_mean(rows, "reward/pred_true_corr"),
                val_accuracy_late=late_mean(rows, "reward/val_accuracy"),
                labels=summary["labels"], comparisons_trained=trained[-1] if trained else float("nan"),
                wall_time_s=summary["wall_time_s"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0-7", help="a range A-B or a list 0,1,2")
    p.add_argument("--variants", nargs="+", default=["sync:0.1,background:0.1"],
                   help="reward_fit:SCHEDULE, SCHEDULE a reward_train_ratio (the 'ratio' fit schedule) or a "
                        "'labels' spec, e.g. sync:0.1 sync:labels 'sync:labels:growth=0.25'; numeric ones may "
                        "also be given comma-separated (sync:0.1,background:0.1)")
    p.add_argument("--budget", type=int, default=500,
                   help="labels (25%% up front); 150 gives the paper's Enduro label rate, ~1.8 per 1,000 steps")
    p.add_argument("--csv", required=True)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    if "-" in a.seeds:
        lo, hi = (int(x) for x in a.seeds.split("-"))
        seeds = list(range(lo, hi + 1))
    else:
        seeds = [int(x) for x in a.seeds.split(",")]
    parts = [x for v in a.variants for x in (v.split(",") if "labels" not in v else [v])]
    variants = [tuple(v.split(":", 1)) for v in parts]
    rows = []
    for seed in seeds:
        for fit, ratio in variants:
            rows.append(one_run(fit, ratio, seed, a.budget))
            print(rows[-1], flush=True)
            tmp = Path(a.csv).with_suffix(".csv.tmp")
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(rows)
            tmp.replace(a.csv)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Label efficiency of the reward-training ratio on Enduro, with RL taken out of the picture.

One fixed set of Enduro segments (16 envs, each with its own throttle: random actions, FIRE
with probability 0.05..0.95, so segments pass different numbers of cars), answered by the
same rational teacher the learner uses. Labels then arrive as in the learner's loop: an
initial batch (pretrained for a few epochs), then ``labels_per_fit`` new labels before every
refit, every ``every`` agent steps, each refit training on round(ratio * every) comparisons
(RewardEnsemble.train: ceil(./B) minibatches of B = reward_batch, 32, per member). After given label counts
the ensemble's r̂ (normalised as the learner does) is scored on held-out pairs of other
segments: the share of decisive pairs (true returns differ; most random Enduro pairs early
on are 0-0 ties, so the test set keeps decisive pairs only) it orders like the true return.

Differences from the loop, on purpose: queries are random pairs (no disagreement selection)
and the segments do not move with a learning policy. Both ratios see the very same labels in
the same order, so the difference is the training ratio alone.

    OMP_NUM_THREADS=1 python results/speed/enduro_label_efficiency.py --ratios 0.1,0.03 --seeds 0,1 \\
        --csv results/speed/enduro_label_efficiency.csv
    # the label-driven fit schedule (rlhp_core/fit_schedule.py) against the paper's ratio, same labels
    ... --ratios 0.1,labels --seeds 0,1 --csv results/speed/fit_schedule_enduro_offline.csv
    ... --ratios 0.01 --every 3200 --seeds 0,1 --csv results/speed/enduro_label_efficiency_e3200.csv
    ... --ratios 0.1 --dtypes float32,bfloat16 --seeds 0,1,2 --csv results/speed/enduro_label_efficiency_bf16.csv
    ... --ratios 0.1 --dtypes bfloat16-train --seeds 0,1,2,3,4,5 --csv results/speed/enduro_label_efficiency_bf16_train.csv
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from oracles.teacher import teacher_for_env  # noqa: E402
from rlhp_core.config import TrainConfig, resolve  # noqa: E402
from rlhp_core.envs import make_vec_env  # noqa: E402
from rlhp_core.fit_schedule import make_fit_schedule  # noqa: E402
from rlhp_core.reward import PreferenceDataset, RewardEnsemble  # noqa: E402
from rlhp_core.segments import Query, Segment  # noqa: E402

ENV = "ALE/Enduro-v5"
L = 25
FIRE_ACTIONS = np.array([1, 7, 8])  # FIRE = accelerate (alone, right, left)
OTHER_ACTIONS = np.array([0, 2, 3, 4, 5, 6])


def collect(vector_steps: int, seed: int, num_envs: int = 16) -> list[Segment]:
    """Aligned 25-step windows of every env's stream."""
    env = make_vec_env(ENV, num_envs)
    rng = np.random.default_rng(seed)
    p_fire = np.linspace(0.05, 0.95, num_envs)
    obs, _ = env.reset(seed=seed)
    segs, win = [], []
    try:
        for t in range(vector_steps):
            fire = rng.random(num_envs) < p_fire
            a = np.where(fire, rng.choice(FIRE_ACTIONS, num_envs), rng.choice(OTHER_ACTIONS, num_envs))
            out = env.step(a)
            win.append((obs, a, out.reward, out.terminated | out.truncated))
            obs = out.obs
            if len(win) == L:
                o, acts, r, d = (np.stack(x, axis=1) for x in zip(*win))
                for i in range(num_envs):
                    segs.append(Segment(o[i], acts[i], r[i].astype(np.float32), d[i], env_index=i, start_step=t))
                win = []
    finally:
        env.close()
    return segs


def pairs_and_answers(segs: list[Segment], n: int, rng: np.random.Generator, teacher) -> list[tuple]:
    i = rng.integers(0, len(segs), n)
    j = rng.integers(0, len(segs), n)
    keep = i != j
    i, j = i[keep], j[keep]
    queries = [Query(f"q{k}", segs[a], segs[b]) for k, (a, b) in enumerate(zip(i, j))]
    answers = teacher.answer_batch(queries)
    return [(segs[a], segs[b], ans) for a, b, ans in zip(i, j, answers)]


def accuracy(ens: RewardEnsemble, test: list[tuple], penalty: float) -> float:
    lo = np.stack([a.obs for a, _, _ in test])
    ro = np.stack([b.obs for _, b, _ in test])
    pl = ens.predict(lo.reshape(-1, *lo.shape[2:])).reshape(len(test), L).sum(1)
    pr = ens.predict(ro.reshape(-1, *ro.shape[2:])).reshape(len(test), L).sum(1)
    tl = np.array([a.true_rewards.sum() - penalty * a.episode_ends.sum() for a, _, _ in test])
    tr = np.array([b.true_rewards.sum() - penalty * b.episode_ends.sum() for _, b, _ in test])
    decided = tl != tr
    return float(np.mean((pl > pr)[decided] == (tl > tr)[decided]))


def run(schedule: str, seed: int, train_pairs: list, test: list, norm_obs: np.ndarray, args, penalty: float,
        dtype: str = "float32") -> list[dict]:
    """``schedule``: a number (the paper's fixed-ratio fit schedule at that ratio) or a 'labels' spec."""
    ratio = float(schedule) if schedule[0].isdigit() else math.nan
    fit = {"reward_fit_schedule": "ratio", "reward_train_ratio": ratio} if schedule[0].isdigit() \
        else {"reward_fit_schedule": schedule}
    cfg = resolve(TrainConfig(env_id=ENV, seed=seed, reward_batch=args.batch, pretrain_epochs=args.pretrain_epochs,
                              reward_dtype="bfloat16" if dtype == "bfloat16-train" else dtype, **fit))
    plan = make_fit_schedule(cfg)
    ens = RewardEnsemble.from_config(cfg, (4, 84, 84), 9)
    if dtype == "bfloat16-train":  # train-mode passes in bf16, every eval-mode pass in float32
        folded = ens.net._forward_folded

        def float32_folded(obs):
            ens.net.conv_dtype = torch.float32
            try:
                return folded(obs)
            finally:
                ens.net.conv_dtype = torch.bfloat16

        ens.net._forward_folded = float32_folded
    data = PreferenceDataset.from_config(cfg)
    rows, added, steps, t0 = [], 0, 0, time.process_time()

    def add(k):
        nonlocal added
        for a, b, ans in train_pairs[added: added + k]:
            data.add(a.obs, a.actions, b.obs, b.actions, ans, key=f"{seed}-{added}")
            added += 1

    def record(metrics):
        ens.update_normalization(norm_obs)
        rows.append(dict(ratio=schedule, reward_dtype=dtype, every=args.every, batch=args.batch, seed=seed, labels=added, agent_steps=steps,
                         reward_train_steps=ens.train_steps, comparisons_per_member=ens.comparisons_seen,
                         heldout_pref_accuracy=accuracy(ens, test, penalty),
                         val_accuracy=metrics.get("val_accuracy", math.nan), cpu_s=time.process_time() - t0))
        print(rows[-1], flush=True)

    add(args.initial)
    m = plan.pretraining().run(ens, data)
    fitted = added
    record(m)
    marks = sorted(int(x) for x in args.marks.split(","))
    per_fit = args.labels_per_1000 * args.every / 1000
    owed = 0.0
    while added < marks[-1]:
        steps += args.every
        owed += per_fit
        k = int(owed)
        owed -= k
        add(k)
        job = plan.refit(args.every, fitted, added - fitted, final=any(added >= mk > added - k for mk in marks))
        if job is not None:
            m, fitted = job(ens, data), added
        if any(added >= mk > added - k for mk in marks):
            record(m)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ratios", default="0.1,0.03,0.01",
                   help="fit schedules, comma-separated: a number is the paper's fixed ratio, 'labels' the "
                        "label-driven schedule (its knobs after ':' separated by '/': labels:growth=0.1/patience=2)")
    p.add_argument("--every", type=int, default=1000, help="agent steps between refits")
    p.add_argument("--seeds", default="0")
    p.add_argument("--batch", type=int, default=32, help="reward_batch: comparisons per member per minibatch")
    p.add_argument("--initial", type=int, default=64)
    p.add_argument("--pretrain-epochs", type=int, default=5)
    p.add_argument("--labels-per-1000", type=float, default=7.0,
                   help="labels per 1,000 agent steps after the initial batch (the default schedule early on: ~7)")
    p.add_argument("--marks", default="64,120,190,260")
    p.add_argument("--vector-steps", type=int, default=1500, help="collection length per set (x16 envs)")
    p.add_argument("--test-pairs", type=int, default=400)
    p.add_argument("--dtypes", default="float32",
                   help="reward_dtype values to compare: float32, bfloat16, and bfloat16-train (bf16 in training "
                        "only; eval-mode passes: the L2 rule's scores, normalisation, the test, in float32)")
    p.add_argument("--csv")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    teacher = teacher_for_env("rational", np.random.default_rng(123), env_id=ENV, segment_length=L)
    penalty = float(teacher.params.episode_end_penalty)
    train_segs = collect(a.vector_steps, seed=1)
    test_segs = collect(a.vector_steps // 2, seed=2)
    rng = np.random.default_rng(7)
    marks = [int(x) for x in a.marks.split(",")]
    train_pairs = pairs_and_answers(train_segs, marks[-1] + 50, rng, teacher)
    test = [x for x in pairs_and_answers(test_segs, 20 * a.test_pairs, rng, teacher) if x[2] != "equal"][: a.test_pairs]
    rets = np.array([s.true_rewards.sum() for s in train_segs])
    print(f"{len(train_segs)} train segments (returns: mean {rets.mean():.2f}, min {rets.min()}, max {rets.max()}), "
          f"{sum(x[2] == 'equal' for x in train_pairs)} of {len(train_pairs)} train answers 'equal', "
          f"{sum(a_.true_rewards.sum() != b_.true_rewards.sum() for a_, b_, _ in test)} decisive test pairs", flush=True)
    pick = rng.choice(len(train_segs), size=64, replace=False)
    norm_obs = np.concatenate([train_segs[i].obs[::2] for i in pick])[:1024]
    rows = []
    for seed in (int(s) for s in a.seeds.split(",")):
        for ratio in (r.replace("/", ",") for r in a.ratios.split(",")):
            for dtype in a.dtypes.split(","):
                rows += run(ratio, seed, train_pairs, test, norm_obs, a, penalty, dtype)
            if a.csv:
                with open(a.csv, "w", newline="") as f:
                    w = csv.DictWriter(f, fieldnames=list(rows[0]))
                    w.writeheader()
                    w.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())

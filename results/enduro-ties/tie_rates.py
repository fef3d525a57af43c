"""How often Enduro segment pairs tie, for the rational and the progress teacher, and what the
teacher's tie answer (``tie=equal|coin|skip``, oracles/teacher.py rule 3b) makes of the ties.

For each scripted policy, 16 Enduro envs (the real emulator: ``make_vec_env("ALE/Enduro-v5", 16)``,
backend ``ale_loop``, the learner's settings: frameskip 4, no sticky actions) play
``--steps-per-env`` agent steps from a seeded reset. The stream is replayed into the learner's
own :class:`SegmentBuffer` (capacity ``max(4 * L, n_steps)``, n_steps = 128, the Enduro sweep's
PPO), and every ``L`` steps, once the buffer is full, query pairs are drawn as the learner draws
random queries (:func:`select_pairs`, mode ``random``: two random windows of the buffer's recent
stream, env and start uniform). The same pairs go to every teacher, each built for Enduro as the
learner builds it (:func:`teacher_for_env`: episode-end penalty 10).

Policies (Enduro's minimal action set; indices looked up in ``env.action_meanings``):
random (uniform over all actions), accelerate (always FIRE, Enduro's gas), accelerate+steer
(FIRE, LEFTFIRE or RIGHTFIRE, uniform each step). ``--policy-run NAME=RUN_DIR`` (repeatable) adds a
trained policy: the newest verified checkpoint of a run directory (:func:`rlhp_core.trained.load_policy`),
acting on the observations of the same envs with sampled actions (stochastic, as in training). The
run's env must be this script's: its ``env_info.json`` must match these envs' settings record
(backend, preprocessing, blanking, frameskip, sticky actions...) apart from the worker count.
``--only-runs`` leaves out the scripted policies.

    OMP_NUM_THREADS=1 python results/enduro-ties/tie_rates.py [--steps-per-env 800] [--pairs 4000]
        [--policy-run NAME=RUN_DIR ...] [--only-runs]

Writes ``tie_rates.csv`` next to this file (``tie_rates_trained.csv`` when a ``--policy-run`` is
given; one row per policy and segment length) and prints the tables of README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from oracles.teacher import teacher_for_env  # noqa: E402
from rlhp_core.buffer import SegmentBuffer  # noqa: E402
from rlhp_core.envs import make_vec_env  # noqa: E402
from rlhp_core.queries import select_pairs  # noqa: E402
from rlhp_core.segments import Query  # noqa: E402
from rlhp_core.trained import load_policy  # noqa: E402

ENV_ID = "ALE/Enduro-v5"
NUM_ENVS = 16
N_STEPS = 128  # the Enduro sweep's PPO rollout length: the learner's buffer holds max(4 * L, n_steps) steps
POLICIES = {
    "random": None,  # uniform over the whole minimal action set
    "accelerate": ("FIRE",),
    "accelerate+steer": ("FIRE", "LEFTFIRE", "RIGHTFIRE"),
}
TIES = ("equal", "coin", "skip")
MIN_SPEED_STEP = 12 / 2560  # odometer units one agent step drives at Enduro's minimum speed (rlhp_core/ram_progress.py)


def make_actor(policy: str | Path, env, seed: int) -> tuple:
    """(act(obs) -> actions, what to print, extra CSV columns) for a scripted policy's name or a run directory."""
    names = list(env.action_meanings)
    if not isinstance(policy, Path):
        allowed = np.arange(len(names)) if POLICIES[policy] is None else np.array(
            [names.index(a) for a in POLICIES[policy]])
        rng = np.random.default_rng(seed + 1)
        return (lambda obs: rng.choice(allowed, size=NUM_ENVS)), f"actions {[names[i] for i in allowed]}", {}
    # the run's observations are these envs' only if its settings record is theirs (the worker count aside)
    trained_on, here = json.loads((policy / "env_info.json").read_text()), json.loads(json.dumps(env.info))
    differ = sorted(k for k in set(trained_on) | set(here)
                    if k not in ("num_envs", "num_workers") and trained_on.get(k) != here.get(k))
    if differ:
        raise ValueError(f"{policy} was trained on another env than {ENV_ID} here: {differ} differ")
    trained = load_policy(policy, env=env, seed=seed + 1)
    return ((lambda obs: trained.predict(obs, deterministic=False)),
            f"checkpoint step {trained.step} of {policy}, sampled actions",
            {"run_dir": str(policy), "checkpoint_step": trained.step})


def record_stream(policy: str | Path, steps: int, seed: int) -> dict[str, np.ndarray | float]:
    """Play ``steps`` agent steps of 16 envs with a scripted policy (its name) or a run's policy (its
    directory); (steps, 16) arrays of what the buffer keeps."""
    env = make_vec_env(ENV_ID, NUM_ENVS, num_threads=1)  # 1 worker: stepped in this process, one core
    try:
        act, about, columns = make_actor(policy, env, seed)
        obs, _ = env.reset(seed)
        out = {k: np.zeros((steps, NUM_ENVS), dt) for k, dt in
               (("actions", np.int64), ("reward", np.float32), ("ends", bool), ("trunc", bool), ("progress", np.float32))}
        t0 = time.perf_counter()
        for t in range(steps):
            a = act(obs)
            b = env.step(a)
            obs = b.obs
            out["actions"][t], out["reward"][t], out["progress"][t] = a, b.reward, b.progress
            out["ends"][t], out["trunc"][t] = b.done, b.truncated & ~b.terminated
        out["seconds"] = time.perf_counter() - t0
        out["about"], out["columns"] = about, columns
        return out
    finally:
        env.close()


def draw_pairs(stream: dict, length: int, pairs: int, seed: int) -> list[Query]:
    """Replay the stream into the learner's SegmentBuffer and draw random query pairs as the learner does."""
    steps = len(stream["reward"])
    capacity = max(4 * length, N_STEPS)
    buf = SegmentBuffer(capacity, NUM_ENVS, (1,), np.uint8, (), np.int64)  # obs: teachers never look at them
    rounds = list(range(capacity, steps + 1, length))
    if not rounds:
        raise ValueError(f"--steps-per-env {steps} is shorter than the buffer ({capacity} steps for L={length})")
    per_round = math.ceil(pairs / len(rounds))
    rng = np.random.default_rng(seed)
    zeros = np.zeros((NUM_ENVS, 1), np.uint8)
    queries: list[Query] = []
    for t in range(steps):
        buf.add(zeros, stream["actions"][t], stream["reward"][t], stream["ends"][t],
                truncations=stream["trunc"][t], progress=stream["progress"][t])
        if t + 1 in rounds:
            chosen = select_pairs(buf, per_round, length, rng, mode="random",
                                  newer_than=max(0, buf.steps_written - buf.capacity))
            queries += [Query(f"L{length}-{len(queries) + i}", buf.segment(le, ls, length), buf.segment(re_, rs, length))
                        for i, (le, ls, re_, rs) in enumerate(chosen)]
    return queries[:pairs]


def measure(queries: list[Query], length: int, seed: int) -> dict[str, float]:
    def teacher(spec: str):
        return teacher_for_env(spec, np.random.default_rng(seed), env_id=ENV_ID, segment_length=length)

    n = len(queries)
    rational = np.array(teacher("rational").answer_batch(queries))
    progress = np.array(teacher("progress").answer_batch(queries))
    decisive = np.isin(rational, ("left", "right"))
    # score change (cars passed minus cars passed back, as Enduro scores it) without the teacher's end penalty
    score = np.array([[q.left.true_rewards.sum(), q.right.true_rewards.sum()] for q in queries], dtype=np.float64)
    more_cars = np.where(score[:, 0] > score[:, 1], "left", np.where(score[:, 0] < score[:, 1], "right", "tie"))
    has_end = np.array([q.left.episode_ends.any() or q.right.episode_ends.any() for q in queries])
    by_progress = ~decisive & np.isin(progress, ("left", "right"))
    gap = np.array([abs(float(q.left.progress.sum()) - float(q.right.progress.sum())) for q in queries])
    row = {
        "pairs": n,
        "segments_with_episode_end": sum(int(s.episode_ends.any()) for q in queries for s in (q.left, q.right)),
        "rational_equal": float(np.mean(rational == "equal")),
        "progress_equal": float(np.mean(progress == "equal")),
        "decided_by_reward": float(np.mean(decisive)),
        "decided_by_progress": float(np.mean(by_progress)),
        # progress-decided pairs whose odometers differ by less than one agent step at Enduro's minimum speed
        "progress_gap_below_one_slow_step": float(np.mean(gap[by_progress] < MIN_SPEED_STEP)) if by_progress.any() else math.nan,
        "median_progress_gap": float(np.median(gap[by_progress])) if by_progress.any() else math.nan,
        "progress_agrees_with_rational_when_decisive": float(np.mean(progress[decisive] == rational[decisive]))
        if decisive.any() else math.nan,
        "progress_agrees_with_more_cars_when_decisive": float(np.mean(progress[decisive] == more_cars[decisive]))
        if decisive.any() else math.nan,
        "decisive_pairs_with_episode_end": int(np.sum(decisive & has_end)),
    }
    for base in ("rational", "progress"):
        for tie in TIES:
            spec = base if tie == "equal" else f"{base}:tie={tie}"
            a = np.array(teacher(spec).answer_batch(queries))
            trainable = a != "incomparable"
            prefs = np.isin(a, ("left", "right"))
            row[f"{base}_{tie}_trainable"] = int(trainable.sum())
            row[f"{base}_{tie}_preference_share"] = float(prefs.sum() / trainable.sum()) if trainable.any() else math.nan
            decided = decisive if base == "rational" else np.isin(progress, ("left", "right"))
            row[f"{base}_{tie}_coin_share"] = float(np.sum(prefs & ~decided) / trainable.sum()) if trainable.any() else math.nan
            # the tie knob only touches ties: every decided answer is the tie=equal teacher's
            assert (a[decided] == (rational if base == "rational" else progress)[decided]).all()
    return row


def pct(v: float, digits: int = 1) -> str:
    return "n/a" if v != v else f"{100 * v:.{digits}f}%"


def policy_run(text: str) -> tuple[str, Path]:
    name, sep, run_dir = text.partition("=")
    if not (sep and name and run_dir):
        raise argparse.ArgumentTypeError(f"expected NAME=RUN_DIR, got {text!r}")
    return name, Path(run_dir)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps-per-env", type=int, default=800, help="agent steps per env and policy (16 envs)")
    ap.add_argument("--pairs", type=int, default=4000, help="query pairs per policy and segment length")
    ap.add_argument("--lengths", default="25,50,100")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--policy-run", type=policy_run, action="append", default=[], metavar="NAME=RUN_DIR",
                    help="also measure the policy of RUN_DIR's newest checkpoint, as NAME (repeatable)")
    ap.add_argument("--only-runs", action="store_true", help="measure only the --policy-run policies")
    ap.add_argument("--out", type=Path, help="CSV to write (default: tie_rates.csv next to this file, "
                    "tie_rates_trained.csv with --policy-run)")
    args = ap.parse_args(argv)
    if args.only_runs and not args.policy_run:
        ap.error("--only-runs needs at least one --policy-run")
    out_csv = args.out or Path(__file__).resolve().parent / ("tie_rates_trained.csv" if args.policy_run else "tie_rates.csv")
    lengths = [int(x) for x in args.lengths.split(",")]
    policies = ([] if args.only_runs else [(p, p) for p in POLICIES]) + args.policy_run
    rows = []
    for name, policy in policies:
        stream = record_stream(policy, args.steps_per_env, args.seed)
        steps = args.steps_per_env * NUM_ENVS
        print(f"{name}: {steps} agent steps in {stream['seconds']:.1f} s ({steps / stream['seconds']:.0f}/s); "
              f"{stream['about']}", flush=True)
        for length in lengths:
            queries = draw_pairs(stream, length, args.pairs, args.seed + length)
            rows.append({"policy": name, **stream["columns"], "segment_length": length, "agent_steps": steps,
                         "score_per_1000_steps": float(stream["reward"].sum() / steps * 1000),
                         "progress_per_step": float(stream["progress"].mean()),
                         "episodes_ended": int(stream["ends"].sum()),
                         **measure(queries, length, args.seed)})
    df = pd.DataFrame(rows)
    df.to_csv(out_csv, index=False, float_format="%.6g")
    print(f"wrote {out_csv}\n")

    print("| policy | L | pairs | rational: equal | progress: equal | decided by reward | decided by progress "
          "| progress = rational (decisive) | progress = more cars (decisive) | by progress: gap < 1 slow step |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in df.itertuples():
        print(f"| {r.policy} | {r.segment_length} | {r.pairs} | {pct(r.rational_equal)} | {pct(r.progress_equal)} "
              f"| {pct(r.decided_by_reward)} | {pct(r.decided_by_progress)} "
              f"| {pct(r.progress_agrees_with_rational_when_decisive)} "
              f"| {pct(r.progress_agrees_with_more_cars_when_decisive)} | {pct(r.progress_gap_below_one_slow_step)} |")
    print()
    for base in ("rational", "progress"):
        print(f"{base} teacher, tie answer: trainable labels of {args.pairs} (share with a preference; share that is a coin)")
        print("| policy | L | equal: trainable | equal: preference | coin: trainable | coin: preference "
              "| coin: of which coin | skip: trainable | skip: preference |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in df.to_dict("records"):
            cells = []
            for tie in TIES:
                cells += [str(r[f"{base}_{tie}_trainable"]), pct(r[f"{base}_{tie}_preference_share"])]
                if tie == "coin":
                    cells.append(pct(r[f"{base}_{tie}_coin_share"]))
            print(f"| {r['policy']} | {r['segment_length']} | " + " | ".join(cells) + " |")
        print()
    print("| policy | agent steps | score per 1000 steps | progress per step | episodes ended |")
    print("|---|---:|---:|---:|---:|")
    for r in df.drop_duplicates("policy").itertuples():
        print(f"| {r.policy} | {r.agent_steps} | {r.score_per_1000_steps:.2f} | {r.progress_per_step:.4f} "
              f"| {r.episodes_ended} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

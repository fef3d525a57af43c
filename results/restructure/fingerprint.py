"""Behaviour fingerprint of the learner, for refactors that must change nothing (issue 11).

Runs two small fixed runs and prints a SHA-256 per artefact:
- ``pendulum``: Pendulum-v1, PPO, 4 envs, the rational teacher, 6,144 steps, 60 labels
  (the scripted-teacher run on a vector env; the in-place fit);
- ``enduro``: ALE/Enduro-v5, A2C, 4 envs, the progress teacher, 1,200 steps, 24 labels,
  a 2-epoch pretraining and the background fit (the short Atari run).

Per run: the labels (every query id and answer in labels.sqlite, in order), metrics.csv and
episodes.csv with the wall-clock column charts/SPS dropped, and the bytes of reward_model.pt
and of the policy in the final checkpoint. Run it before and after a change and diff the output:

    python results/restructure/fingerprint.py > before.txt   # at the old commit
    python results/restructure/fingerprint.py > after.txt    # at the new one
    diff before.txt after.txt
"""

from __future__ import annotations

import csv
import hashlib
import io
import sqlite3
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from rlhp_core.checkpoint import load_latest  # noqa: E402
from rlhp_core.config import TrainConfig  # noqa: E402

RUNS = {
    "pendulum": dict(env_id="Pendulum-v1", algo="ppo", num_envs=4, total_steps=6_144, label_budget=60,
                     labeler="rational", log_every=1_024, checkpoint_every=2_048, reward_update_every=1_024,
                     pretrain_epochs=5),
    "enduro": dict(env_id="ALE/Enduro-v5", algo="a2c", num_envs=4, total_steps=1_200, label_budget=24,
                   initial_labels=12, labeler="progress", log_every=200, checkpoint_every=400,
                   reward_update_every=200, pretrain_epochs=2, reward_fit="background", segment_length=25),
}


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def csv_without_time(path: Path) -> bytes:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out = io.StringIO()
    if rows:
        cols = [c for c in rows[0] if c != "charts/SPS"]
        w = csv.DictWriter(out, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return out.getvalue().encode()


def labels(path: Path) -> bytes:
    con = sqlite3.connect(path)
    try:
        q = con.execute("SELECT id FROM queries ORDER BY rowid").fetchall()
        a = con.execute("SELECT query_id, answer FROM answers ORDER BY id").fetchall()
    finally:
        con.close()
    return repr((q, a)).encode()


def policy_bytes(run_dir: Path) -> bytes:
    state = load_latest(run_dir)["state"]["algo"]
    return b"".join(t.numpy().tobytes() for _, t in sorted(_flat(state)) if isinstance(t, torch.Tensor))


def _flat(d, prefix=""):
    for k, v in (d.items() if isinstance(d, dict) else ()):
        if isinstance(v, dict):
            yield from _flat(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def main() -> None:
    try:  # after issue 11: the command line's composition root builds the labeler
        from rlhp_core.cli import train
    except ImportError:  # before it: the core built it from the config's spec
        from rlhp_core.train import run_training as train

    torch.set_num_threads(1)
    for name, kw in RUNS.items():
        with tempfile.TemporaryDirectory() as tmp:
            run = Path(tmp) / name
            cfg = TrainConfig(run_dir=str(run), seed=3, device="cpu", progress=False, **kw)
            train(cfg)
            print(f"{name} labels         {digest(labels(run / 'labels.sqlite'))}")
            print(f"{name} metrics.csv    {digest(csv_without_time(run / 'metrics.csv'))}")
            print(f"{name} episodes.csv   {digest(csv_without_time(run / 'episodes.csv'))}")
            print(f"{name} reward_model   {digest((run / 'reward_model.pt').read_bytes())}")
            print(f"{name} policy         {digest(policy_bytes(run))}", flush=True)


if __name__ == "__main__":
    main()

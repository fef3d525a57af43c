"""kill -9 a real learner process at several moments; the same command resumes and loses nothing.

One run directory, one command line, killed three times — while it collects its initial labels,
while it pretrains the reward model, and while it trains (with the background reward fit, so a
fit is in flight) — then run to the end. Every kill is SIGKILL: no handler runs, nothing is
flushed. The moments are found by watching what the run writes (the label store, status.json,
metrics.csv), as a person would.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rlhp_core.checkpoint import complete_checkpoints
from rlhp_core.label_store import LabelStore

pytestmark = pytest.mark.slow  # a real learner run of 12k steps, killed three times on the way

BUDGET, INITIAL, STEPS = 400, 200, 12_288
"""The initial labels take ~4.3k of the steps (6 queries per 128 agent steps), training the rest."""


def command(run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "rlhp_core.train", "--env-id", "CartPole-v1", "--algo", "ppo",
            "--num-envs", "2", "--n-steps", "64", "--total-steps", str(STEPS), "--label-budget", str(BUDGET),
            "--initial-labels", str(INITIAL), "--segment-length", "5", "--pretrain-epochs", "40",
            "--reward-update-every", "512", "--reward-fit", "background", "--log-every", "1024",
            "--checkpoint-every", "2048", "--run-dir", str(run_dir), "--progress", "false"]


def start(run_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RLHP_MALLOC": "system"}
    return subprocess.Popen(command(run_dir), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def queries_posted(run_dir: Path) -> int:
    try:
        with sqlite3.connect(f"file:{run_dir / 'labels.sqlite'}?mode=ro", uri=True, timeout=0.1) as db:
            return db.execute("SELECT COUNT(*) FROM queries").fetchone()[0]
    except sqlite3.Error:
        return 0


def status(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def metric_rows(run_dir: Path) -> list[dict]:
    try:
        with open(run_dir / "metrics.csv", newline="") as f:
            return list(csv.DictReader(f))
    except OSError:
        return []


def kill_when(proc: subprocess.Popen, moment, what: str, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while not moment():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (exit {proc.returncode}) before {what}: {proc.stderr.read()[-2000:]}")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError(f"{what} never came within {timeout} s")
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_kill_9_at_any_moment_then_the_same_command_finishes_with_nothing_lost(tmp_path):
    run = tmp_path / "run"
    kill_when(start(run), lambda: queries_posted(run) >= 50, "50 initial queries were posted")
    posted = queries_posted(run)
    assert 50 <= posted < INITIAL

    proc = start(run)  # before: sqlite3.IntegrityError, UNIQUE constraint failed: queries.id
    kill_when(proc, lambda: status(run).get("pretrain_epoch", 0) >= 10, "pretraining reached epoch 10")
    epoch_at_kill = status(run)["pretrain_epoch"]
    assert queries_posted(run) == INITIAL

    proc = start(run)
    kill_when(proc, lambda: len(metric_rows(run)) >= 3, "three metric rows were written")
    state = torch.load(complete_checkpoints(run)[-1] / "state.pt", weights_only=False)["state"]
    assert state["counters"]["pretraining"]["epoch"] == 40  # pretraining finished in the second process
    assert state["counters"]["pretraining"]["epoch"] > epoch_at_kill

    final = start(run)
    out, err = final.communicate(timeout=300)
    assert final.returncode == 0, err.decode()[-3000:]
    summary = json.loads(out.decode()[out.decode().index("{"):])
    assert summary["env_steps"] >= STEPS

    store = LabelStore(run / "labels.sqlite")
    answers = store.current_answers()
    assert store.num_queries() == BUDGET  # the budget, exactly: no query lost or asked twice
    assert len(answers) == BUDGET and len({a.query_id for a in answers}) == BUDGET
    store.close()
    steps = [int(r["env_steps"]) for r in metric_rows(run)]
    assert steps == sorted(set(steps)) and steps[-1] >= STEPS - 1024, "every step logged once, up to the end"
    state = torch.load(complete_checkpoints(run)[-1] / "state.pt", weights_only=False)["state"]
    assert state["counters"]["resume_count"] == 3
    assert len(state["ingested"]) == BUDGET  # every answer reached the reward model's dataset

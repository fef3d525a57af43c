"""The catalogue of bad command-line input: every case exits 2 before anything is written.

Each case runs a real command in a folder of its own: ``python -m bench.sweep``, ``python -m
bench.report``, and the training command. It must exit with status 2 and print one line on
stderr that names the flag and the bad value, no traceback, and leave its folder exactly as the
case set it up (no run directory, no database, no lock file).

The training command runs through the ``rlhp-train`` script's entry point, ``rlhp_core.cli:cli``,
which checks its input before it imports torch; ``python -m rlhp_core.train`` imports torch (a few
seconds) with the learner before it gets there, so a few cases (TRAIN_MODULE_CASES) run that form
to show that it refuses the same input the same way, and the rest stay fast. The cases run two at
a time (the machine's cores) in a module fixture; each test checks its own.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sqlite3
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = {
    "train": [sys.executable, "-c", "import sys; from rlhp_core.cli import cli; sys.exit(cli())"],
    "train-module": [sys.executable, "-m", "rlhp_core.train"],
    "sweep": [sys.executable, "-m", "bench.sweep"],
    "report": [sys.executable, "-m", "bench.report"],
}
CARTPOLE = ["--env-id", "CartPole-v1", "--run-dir", "run"]
"""Every training case runs a small env into ./run, unless the case is about those two flags."""


def _unwritable(d: Path) -> str:
    """A folder this process cannot create entries in: chmod 555 (no use as root, who may write
    anyway: then a place in /sys, where nobody may create folders)."""
    if os.geteuid() == 0:
        return "/sys/rlhp-bad-input/run"
    (d / "ro").mkdir()
    (d / "ro").chmod(0o555)
    return str(d / "ro" / "run")


def _text(name: str, content: str = "not what it should be\n") -> Callable[[Path], None]:
    return lambda d: (d / name).write_text(content)


def _other_sqlite(d: Path) -> None:
    con = sqlite3.connect(d / "other.sqlite")
    con.execute("CREATE TABLE things (x)")
    con.commit()
    con.close()


def _pendulum_store(d: Path) -> None:
    from rlhp_core.label_store import LabelStore

    LabelStore(d / "labels.sqlite", env_id="Pendulum-v1", obs_shape=(3,)).close()


@dataclass
class Case:
    id: str
    command: str
    args: list[str]
    """Arguments; ``{d}`` is the case's folder (the command also runs in it)."""
    flag: str
    """Must appear in the message."""
    value: str
    """Must appear in the message too (the bad value, as the user wrote it or as the program read it)."""
    setup: Callable[[Path], None] | None = None
    args_from: Callable[[Path], list[str]] | None = None
    """Arguments computed from the folder after setup (instead of ``args``)."""


def train(id: str, args: list[str], flag: str, value: str, **kw) -> Case:
    return Case(id, "train", CARTPOLE + args, flag, value, **kw)


CASES = [
    # -- python -m rlhp_core.train ------------------------------------------------------------------
    train("port-out-of-range", ["--port", "99999"], "--port", "99999"),
    train("port-not-a-number", ["--port", "http"], "--port", "http"),
    train("host-unresolvable", ["--host", "999.1.1.1"], "--host", "999.1.1.1"),
    train("host-empty", ["--host", ""], "--host", "''"),
    train("token-bad-characters", ["--token", "a b"], "--token", "got 3 characters"),  # a secret: never echoed
    train("label-budget-huge", ["--label-budget", "1000000000000"], "--label-budget", "1000000000000"),
    train("label-budget-over-segments", ["--label-budget", "500", "--total-steps", "10000"], "--label-budget", "500"),
    train("label-budget-below-initial", ["--label-budget", "10", "--initial-labels", "50"], "--label-budget", "10"),
    train("label-budget-negative", ["--label-budget", "-3"], "--label-budget", "-3"),
    train("initial-labels-zero", ["--initial-labels", "0"], "--initial-labels", "0"),
    train("reward-train-ratio-nan", ["--reward-train-ratio", "nan"], "--reward-train-ratio", "nan"),
    train("reward-train-ratio-zero", ["--reward-train-ratio", "0"], "--reward-train-ratio", "0"),
    train("reward-lr-negative", ["--reward-lr", "-1"], "--reward-lr", "-1"),
    train("lr-inf", ["--lr", "inf"], "--lr", "inf"),
    train("reward-std-zero", ["--reward-std", "0"], "--reward-std", "0"),
    train("pretrain-epochs-negative", ["--pretrain-epochs", "-1"], "--pretrain-epochs", "-1"),
    train("label-schedule-constant-negative", ["--label-schedule-constant", "-5"], "--label-schedule-constant", "-5"),
    train("gamma-above-one", ["--gamma", "2"], "--gamma", "2"),
    train("dropout-one", ["--dropout", "1"], "--dropout", "1"),
    train("sticky-actions-negative", ["--sticky-actions", "-0.5"], "--sticky-actions", "-0.5"),
    train("ent-coef-negative", ["--ent-coef", "-0.1"], "--ent-coef", "-0.1"),
    train("episode-end-penalty-nan", ["--episode-end-penalty", "nan"], "--episode-end-penalty", "nan"),
    train("num-envs-zero", ["--num-envs", "0"], "--num-envs", "0"),
    train("num-envs-more-than-steps", ["--num-envs", "5000", "--total-steps", "1000", "--reward", "true"],
          "--num-envs", "5000"),
    train("frameskip-zero", ["--frameskip", "0"], "--frameskip", "0"),
    train("max-episode-steps-zero", ["--max-episode-steps", "0"], "--max-episode-steps", "0"),
    train("lr-horizon-zero", ["--lr-horizon", "0"], "--lr-horizon", "0"),
    train("n-steps-not-a-number", ["--n-steps", "many"], "--n-steps", "many"),
    train("total-steps-fraction", ["--total-steps", "1.5"], "--total-steps", "1.5"),
    train("total-steps-inf", ["--total-steps", "inf"], "--total-steps", "inf"),
    train("seed-negative", ["--seed", "-1"], "--seed", "-1"),
    train("seed-beyond-64-bits", ["--seed", "99999999999999999999"], "--seed", "99999999999999999999"),
    train("segment-length-longer-than-episode", ["--segment-length", "600", "--label-budget", "8",
                                                 "--total-steps", "100000"], "--segment-length", "600"),
    train("device-unknown-form", ["--device", "cpu:5"], "--device", "cpu:5"),
    train("device-absent", ["--device", "cuda:7"], "--device", "cuda:7"),
    train("algo-unknown", ["--algo", "dqn"], "--algo", "dqn"),
    train("lr-schedule-unknown", ["--lr-schedule", "cosine"], "--lr-schedule", "cosine"),
    train("reward-fit-unknown", ["--reward-fit", "later"], "--reward-fit", "later"),
    train("labeler-unknown", ["--labeler", "nonsense"], "--labeler", "nonsense"),
    train("labeler-empty", ["--labeler", ""], "--labeler", "labeler must not be empty"),
    train("progress-not-a-bool", ["--progress", "maybe"], "--progress", "maybe"),
    train("no-progress-with-a-value", ["--no-progress", "false"], "--no-progress", "false"),
    train("adaptive-l2-none", ["--adaptive-l2", "none"], "--adaptive-l2", "none"),
    train("unknown-flag", ["--reward-lr-typo", "1"], "--reward-lr-typo", "--reward-lr-typo"),
    Case("env-id-unknown", "train", ["--env-id", "NoSuchEnv-v0", "--run-dir", "run"], "--env-id", "NoSuchEnv-v0"),
    Case("env-id-unsupported-atari-form", "train", ["--env-id", "Enduro-v4", "--run-dir", "run"], "--env-id",
         "Enduro-v4"),
    Case("env-id-empty", "train", ["--env-id", "", "--run-dir", "run"], "--env-id", "env_id must not be empty"),
    Case("run-dir-empty", "train", ["--env-id", "CartPole-v1", "--run-dir", ""], "--run-dir",
         "run_dir must not be empty"),
    Case("run-dir-is-a-file", "train", ["--env-id", "CartPole-v1", "--run-dir", "afile"], "--run-dir", "afile",
         setup=_text("afile")),
    Case("run-dir-under-a-file", "train", ["--env-id", "CartPole-v1", "--run-dir", "afile/run"], "--run-dir",
         "afile", setup=_text("afile")),
    Case("run-dir-unwritable", "train", [], "--run-dir", "run",
         args_from=lambda d: ["--env-id", "CartPole-v1", "--run-dir", _unwritable(d)]),
    train("seed-labels-missing", ["--seed-labels", "nope.sqlite"], "--seed-labels", "nope.sqlite"),
    train("seed-labels-empty", ["--seed-labels", ""], "--seed-labels", "seed_labels"),
    train("seed-labels-not-a-store", ["--seed-labels", "notes.txt"], "--seed-labels", "notes.txt",
          setup=_text("notes.txt")),
    train("seed-labels-other-env", ["--seed-labels", "labels.sqlite"], "--seed-labels", "Pendulum-v1",
          setup=_pendulum_store),
    train("config-missing", ["--config", "nope.json"], "--config", "nope.json"),
    train("config-not-json", ["--config", "c.json"], "--config", "c.json", setup=_text("c.json", "{oops")),
    train("config-not-an-object", ["--config", "c.json"], "--config", "c.json", setup=_text("c.json", "[1, 2]")),
    train("config-unknown-key", ["--config", "c.json"], "--config", "reward_lr_typo",
          setup=_text("c.json", '{"reward_lr_typo": 1}')),
    train("config-wrong-type", ["--config", "c.json"], "--total-steps", "'many'",
          setup=_text("c.json", '{"total_steps": "many"}')),
    train("config-nan", ["--config", "c.json"], "--gamma", "nan", setup=_text("c.json", '{"gamma": NaN}')),
    Case("port-in-use", "train", [], "--port", "in use",
         args_from=lambda d: CARTPOLE + ["--labeler", "human", "--port", str(_busy_port())]),
    # the module form of the same command: the same refusals
    Case("module-reward-lr-negative", "train-module", CARTPOLE + ["--reward-lr", "-1"], "--reward-lr", "-1"),
    Case("module-port-out-of-range", "train-module", CARTPOLE + ["--port", "99999"], "--port", "99999"),
    Case("module-run-dir-is-a-file", "train-module", ["--env-id", "CartPole-v1", "--run-dir", "afile"], "--run-dir",
         "afile", setup=_text("afile")),

    # -- python -m bench.sweep -------------------------------------------------------------------------
    Case("sweep-storage-in-missing-folder", "sweep", ["--dir", "sw", "--storage", "sqlite:///{d}/missing/x.db"],
         "--storage", "missing"),
    Case("sweep-storage-garbage-dry-run", "sweep", ["--dry-run", "--dir", "sw", "--storage", "garbage"], "--storage",
         "garbage"),
    Case("sweep-storage-in-memory", "sweep", ["--dry-run", "--dir", "sw", "--storage", "sqlite://"], "--storage",
         "sqlite://"),
    Case("sweep-storage-bad-port", "sweep", ["--dry-run", "--dir", "sw", "--storage", "postgresql://u@h:port/db"],
         "--storage", "postgresql://u@h:port/db"),
    Case("sweep-storage-not-sqlite", "sweep", ["--dir", "sw", "--storage", "sqlite:///{d}/notes.txt"], "--storage",
         "notes.txt", setup=_text("notes.txt")),
    Case("sweep-storage-other-database", "sweep", ["--dir", "sw", "--storage", "sqlite:///{d}/other.sqlite"],
         "--storage", "other.sqlite", setup=_other_sqlite),
    Case("sweep-tracking-uri-garbage-dry-run", "sweep", ["--dry-run", "--dir", "sw", "--tracking-uri", "garbage"],
         "--tracking-uri", "garbage"),
    Case("sweep-dir-is-a-file", "sweep", ["--dir", "afile"], "--dir", "afile", setup=_text("afile")),
    Case("sweep-dir-under-a-file", "sweep", ["--dir", "afile/sw"], "--dir", "afile", setup=_text("afile")),
    Case("sweep-dir-unwritable", "sweep", [], "--dir", "run", args_from=lambda d: ["--dir", _unwritable(d)]),
    Case("sweep-dir-empty", "sweep", ["--dir", ""], "--dir", "''"),
    Case("sweep-study-empty", "sweep", ["--dir", "sw", "--study", ""], "--study", "''"),
    Case("sweep-study-with-slash", "sweep", ["--dir", "sw", "--study", "a/b"], "--study", "a/b"),
    Case("sweep-preset-unknown", "sweep", ["--dir", "sw", "--preset", "nope"], "--preset", "nope"),
    Case("sweep-env-unknown", "sweep", ["--dir", "sw", "--env", "NoSuchEnv-v9"], "--env", "NoSuchEnv-v9"),
    Case("sweep-teacher-unknown", "sweep", ["--dir", "sw", "--teacher", "nonsense"], "--teacher", "nonsense"),
    Case("sweep-methods-unknown", "sweep", ["--dir", "sw", "--methods", "rlhp,magic"], "--methods", "magic"),
    Case("sweep-budgets-inf", "sweep", ["--dir", "sw", "--budgets", "inf"], "--budgets", "inf"),
    Case("sweep-budgets-huge", "sweep", ["--dir", "sw", "--budgets", "1000000000000"], "--budgets",
         "1000000000000"),
    Case("sweep-seeds-huge", "sweep", ["--dir", "sw", "--seeds", "1e9"], "--seeds", "1000000000"),
    Case("sweep-seeds-zero", "sweep", ["--dir", "sw", "--seeds", "0"], "--seeds", "0"),
    Case("sweep-trials-zero", "sweep", ["--dir", "sw", "--preset", "hparams", "--trials", "0"], "--trials", "0"),
    Case("sweep-env-steps-negative", "sweep", ["--dir", "sw", "--env-steps", "-5"], "--env-steps", "-5"),
    Case("sweep-heartbeat-zero", "sweep", ["--dir", "sw", "--heartbeat-interval", "0"], "--heartbeat-interval", "0"),
    Case("sweep-grace-period-huge", "sweep", ["--dir", "sw", "--grace-period", "1e12"], "--grace-period",
         "1000000000000"),
    Case("sweep-max-artifact-mb-nan", "sweep", ["--dir", "sw", "--max-artifact-mb", "nan"], "--max-artifact-mb",
         "nan"),
    Case("sweep-set-reward-lr-negative", "sweep", ["--dir", "sw", "--set", "reward_lr=-1"], "--set reward_lr", "-1"),
    Case("sweep-set-ratio-nan", "sweep", ["--dir", "sw", "--set", "reward_train_ratio=nan"],
         "--set reward_train_ratio", "nan"),
    Case("sweep-set-device-unknown", "sweep", ["--dir", "sw", "--set", "device=cpu:5"], "--set device", "cpu:5"),
    Case("sweep-set-seed-labels-missing", "sweep", ["--dir", "sw", "--set", "seed_labels=nope.sqlite"],
         "--set seed_labels", "nope.sqlite"),
    Case("sweep-set-not-a-number", "sweep", ["--dir", "sw", "--set", "num_envs=many"], "--set num_envs", "many"),
    Case("sweep-set-segment-longer-than-episode", "sweep", ["--dir", "sw", "--set", "segment_length=600"],
         "--set segment_length", "600"),

    # -- python -m bench.report ------------------------------------------------------------------------
    Case("report-sweep-dir-missing", "report", ["nope"], "SWEEP_DIR", "nope"),
    Case("report-sweep-dir-is-a-file", "report", ["afile"], "SWEEP_DIR", "afile", setup=_text("afile")),
    Case("report-sweep-json-corrupt", "report", ["sw"], "SWEEP_DIR", "sweep.json",
         setup=lambda d: ((d / "sw").mkdir(), (d / "sw" / "sweep.json").write_text("{oops"))),
    Case("report-storage-garbage", "report", ["{d}", "--storage", "garbage"], "--storage", "garbage"),
    Case("report-storage-missing-file", "report", ["{d}", "--storage", "sqlite:///{d}/none.db"], "--storage",
         "none.db"),
    Case("report-storage-other-database", "report", ["{d}", "--storage", "sqlite:///{d}/other.sqlite"], "--storage",
         "other.sqlite", setup=_other_sqlite),
    Case("report-out-is-a-file", "report", ["{d}", "--out", "afile"], "--out", "afile", setup=_text("afile")),
    Case("report-out-empty", "report", ["{d}", "--out", ""], "--out", "''"),
    Case("report-study-empty", "report", ["{d}", "--study", ""], "--study", "''"),
    Case("report-tracking-uri-garbage", "report", ["{d}", "--tracking-uri", "garbage"], "--tracking-uri", "garbage"),
    Case("report-tracking-uri-missing-db", "report", ["{d}", "--tracking-uri", "sqlite:///{d}/none.db"],
         "--tracking-uri", "none.db"),
]

_listeners: list[socket.socket] = []


def _busy_port() -> int:
    """A localhost port something listens on (until the module's cases are done)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    _listeners.append(s)
    return s.getsockname()[1]


def _snapshot(d: Path) -> dict[str, tuple]:
    """Every entry under ``d``: its kind, mode and (files) content hash."""
    out = {}
    for p in sorted(d.rglob("*")):
        st = p.lstat()
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""
        out[str(p.relative_to(d))] = (p.is_dir(), st.st_mode, digest)
    return out


def _run(case: Case, d: Path) -> tuple[subprocess.CompletedProcess, dict, dict]:
    if case.setup is not None:
        case.setup(d)
    args = case.args_from(d) if case.args_from is not None else [a.format(d=d) for a in case.args]
    before = _snapshot(d)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([*COMMANDS[case.command], *args], cwd=d, env=env, capture_output=True, text=True,
                          timeout=180)
    return proc, before, _snapshot(d)


@pytest.fixture(scope="module")
def outcomes(request, tmp_path_factory):
    """Run the selected cases, two at a time; {case id: future of (process, folder before, after)}."""
    wanted = {item.callspec.params["case"].id for item in request.session.items
              if item.module is request.module and hasattr(item, "callspec")}
    root = tmp_path_factory.mktemp("bad-input")
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {}
        for case in CASES:
            if case.id in wanted:
                (root / case.id).mkdir()
                futures[case.id] = pool.submit(_run, case, root / case.id)
        yield futures
    for s in _listeners:
        s.close()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_exits_2_naming_flag_and_value_and_writes_nothing(case, outcomes):
    proc, before, after = outcomes[case.id].result()
    err = proc.stderr.strip()
    assert proc.returncode == 2, f"exit {proc.returncode}\nstdout: {proc.stdout[-2000:]}\nstderr: {err[-3000:]}"
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1, f"expected one line on stderr:\n{err}"
    assert case.flag in err, f"{case.flag!r} not named in: {err}"
    assert case.value in err, f"{case.value!r} not named in: {err}"
    assert after == before, f"the folder changed: {sorted(set(after) ^ set(before)) or 'contents or modes'}"


def test_the_catalogue_has_unique_ids():
    assert len({c.id for c in CASES}) == len(CASES)


def test_the_token_never_reaches_the_config(monkeypatch):
    """--token is handed to the labeling page through the environment, never stored with the run."""
    from oracles.human import TOKEN_ENV
    from rlhp_core.cli import _checked_config

    monkeypatch.setenv(TOKEN_ENV, "unset-after-the-test")  # so that teardown removes what the CLI sets
    monkeypatch.delenv(TOKEN_ENV)
    cfg = _checked_config(["--env-id", "CartPole-v1", "--run-dir", "unused", "--token", "abcd1234"])
    assert "token" not in cfg.extra and "abcd1234" not in cfg.to_json()
    assert os.environ[TOKEN_ENV] == "abcd1234"

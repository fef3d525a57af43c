"""The sweep's fake learner (FAKE_LEARNER: rlhp_core.train.run_training's contract, no learning, no
time) and worker scripts that run bench.sweep with it; bench.sweep's and bench.report's tests share them."""

from __future__ import annotations

import importlib.util
import os
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

FAKE_LEARNER = textwrap.dedent('''
    """A stand-in for rlhp_core.train.run_training: the same contract, no learning, no time."""
    import csv, json, math, os, sqlite3, time
    from pathlib import Path

    KEYS = ["charts/episodic_return", "charts/SPS", "labels/posted", "labels/answered", "reward/pred_true_corr"]

    def curve(cfg, step):
        return 100.0 * step / cfg.total_steps + cfg.seed + cfg.label_budget / 100.0

    def save_state(run, step, calls):
        """Write-then-rename, as the real learner does: a test polling state.json never reads half a file."""
        tmp = run / "state.json.tmp"
        tmp.write_text(json.dumps({"env_steps": step, "calls": calls}))
        tmp.replace(run / "state.json")

    def run_training(cfg, *, labeler=None, on_metrics=None, should_stop=None):
        run = Path(cfg.run_dir)
        run.mkdir(parents=True, exist_ok=True)
        (run / "config.json").write_text(cfg.to_json())
        state = json.loads((run / "state.json").read_text()) if (run / "state.json").exists() else {}
        step = resumed_from = state.get("env_steps", 0)
        calls = state.get("calls", 0) + 1
        save_state(run, step, calls)
        if os.environ.get("FAKE_CRASH") and os.environ["FAKE_CRASH"] in str(run):
            raise RuntimeError("fake learner crashed on purpose")
        prefs = cfg.reward == "preferences"
        while step < cfg.total_steps:
            step = min(cfg.total_steps, step + cfg.log_every)
            m = {"charts/episodic_return": curve(cfg, step), "charts/SPS": 1000.0}
            if prefs:
                m.update({"labels/posted": float(cfg.label_budget * step // cfg.total_steps),
                          "labels/answered": float(cfg.label_budget * step // cfg.total_steps),
                          "reward/pred_true_corr": 0.5})
            new = not (run / "metrics.csv").exists()
            with open(run / "metrics.csv", "a", newline="") as f:
                w = csv.writer(f)
                if new:
                    w.writerow(["env_steps", *KEYS])
                w.writerow([step, *[m.get(k, "") for k in KEYS]])
            if on_metrics is not None:
                on_metrics(step, m)
            save_state(run, step, calls)
            time.sleep(float(os.environ.get("FAKE_DELAY", "0")))
            hang = os.environ.get("FAKE_HANG")
            if hang and hang in str(run) and step >= cfg.total_steps // 2:
                time.sleep(3600)  # the test kills this worker here
            if os.environ.get("FAKE_INTERRUPT") and os.environ["FAKE_INTERRUPT"] in str(run) and calls == 1:
                raise KeyboardInterrupt
            if should_stop is not None and should_stop():
                break
        if prefs:
            con = sqlite3.connect(run / "labels.sqlite")
            con.execute("CREATE TABLE IF NOT EXISTS answers (id INTEGER PRIMARY KEY, answer TEXT)")
            con.executemany("INSERT INTO answers (answer) VALUES (?)", [("left",)] * 3)
            con.commit()
            con.close()
            (run / "reward_model.pt").write_bytes(b"not really a model")
        (run / "status.json").write_text(json.dumps({"env_steps": step}))
        return {"final_return": curve(cfg, step), "episodes": 7, "env_steps": step,
                "labels": cfg.label_budget if prefs else 0, "wall_time_s": 0.01, "sps": 1000.0,
                "run_dir": str(run), "stopped_early": step < cfg.total_steps, "resumed_from": resumed_from,
                "env_info": {"env_id": cfg.env_id, "frameskip": 1, "sticky_actions": cfg.sticky_actions,
                             "ale_py": "n/a"}}
''')

WORKER = textwrap.dedent('''
    import sys
    sys.path.insert(0, {here!r})
    from fake_learner import run_training
    from bench.sweep import main
    sys.exit(main(sys.argv[1:], train_fn=run_training, progress=False))
''')


def write_fake_worker(tmp: Path) -> Path:
    """A script that runs bench.sweep.main with the fake learner (for worker subprocesses)."""
    (tmp / "fake_learner.py").write_text(FAKE_LEARNER)
    script = tmp / "fake_worker.py"
    script.write_text(WORKER.format(here=str(tmp)))
    return script


def load_fake(tmp: Path):
    (tmp / "fake_learner.py").write_text(FAKE_LEARNER)
    spec = importlib.util.spec_from_file_location(f"fake_learner_{abs(hash(str(tmp)))}", tmp / "fake_learner.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.run_training


def env(**extra) -> dict:
    e = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    e.update(extra)
    return e

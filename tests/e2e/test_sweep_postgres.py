"""Several workers, one study: bench.sweep on a real PostgreSQL server and a real MLflow server.

A throwaway PostgreSQL cluster (initdb into a temporary folder, started on a free localhost
port, unix socket in that folder) holds the Optuna study; an ``mlflow server`` on 127.0.0.1
takes the runs. Two worker processes run the same command; every grid cell must complete
exactly once, each as one FINISHED MLflow run nested under the sweep's run. PostgreSQL refuses
to run as root: as root the server runs as the ``postgres`` user (runuser), otherwise as us.
The learner is the fake one from tests/helpers/sweep.py (the storage is what is under test here).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import tests.helpers.sweep as sweep_helpers

pytestmark = [pytest.mark.postgres, pytest.mark.slow]



def _pg_bin() -> Path | None:
    for cand in [os.environ.get("PG_BIN"), *sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]:
        if cand and (Path(cand) / "initdb").exists() and (Path(cand) / "pg_ctl").exists():
            return Path(cand)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb and shutil.which("pg_ctl") else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, timeout: float) -> None:
    import requests

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with status {proc.returncode}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer in {timeout:.0f} s")


@pytest.fixture(scope="module")
def servers():
    """(postgres URL, mlflow server URL). Both are stopped and their folders removed afterwards."""
    pg = _pg_bin()
    if pg is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found; set PG_BIN to their folder")
    pytest.importorskip("psycopg2", reason="psycopg2 (the PostgreSQL driver) is not installed")
    run_as: list[str] = []
    base = Path(tempfile.mkdtemp(prefix="rlhp-pg-"))  # directly under /tmp: the postgres user can reach it
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(base)
            pytest.skip("running as root and there is no 'postgres' user to run the server as (postgres refuses root)")
        if shutil.which("runuser") is None:
            shutil.rmtree(base)
            pytest.skip("running as root and runuser is missing (postgres refuses to run as root)")
        os.chown(base, pw.pw_uid, pw.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]

    # the MLflow server starts slowly (imports, schema migrations): launch it first
    mlflow_dir = Path(tempfile.mkdtemp(prefix="rlhp-mlflow-"))
    mlflow_port = _free_port()
    mlflow_log = open(mlflow_dir / "server.log", "w")
    mlflow_proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{mlflow_dir / 'mlflow.db'}",
         "--artifacts-destination", str(mlflow_dir / "artifacts"), "--host", "127.0.0.1",
         "--port", str(mlflow_port), "--workers", "1"],
        stdout=mlflow_log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    data = base / "data"
    port = _free_port()
    started = False
    try:
        subprocess.run([*run_as, str(pg / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                        "--no-sync", "-E", "UTF8", "--locale=C"], check=True, capture_output=True, timeout=120)
        subprocess.run([*run_as, str(pg / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"), "-w",
                        "-t", "60", "-o", f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off "
                                      f"-c full_page_writes=off -c max_connections=40", "start"],
                       check=True, capture_output=True, timeout=90)
        started = True
        try:
            _wait_http(f"http://127.0.0.1:{mlflow_port}/health", mlflow_proc, timeout=240)
        except (RuntimeError, TimeoutError) as exc:
            mlflow_log.flush()
            raise RuntimeError(f"{exc}:\n{(mlflow_dir / 'server.log').read_text()[-3000:]}") from None
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres", f"http://127.0.0.1:{mlflow_port}"
    finally:
        os.killpg(mlflow_proc.pid, 9)  # a throwaway server: no graceful shutdown needed
        mlflow_proc.wait(timeout=30)
        mlflow_log.close()
        if started:
            subprocess.run([*run_as, str(pg / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                           capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(mlflow_dir, ignore_errors=True)


def test_two_workers_share_one_study_and_run_every_cell_once(servers, tmp_path):
    import optuna
    from mlflow import MlflowClient

    from bench.storage import normalize_url

    pg_url, mlflow_url = servers
    h = sweep_helpers
    worker = h.write_fake_worker(tmp_path)
    args = ["--study", "pg-two-workers", "--dir", str(tmp_path / "sweep"), "--storage", pg_url,
            "--tracking-uri", mlflow_url, "--env-steps", "40000", "--set", "log_every=8000",
            "--budgets", "50,200", "--seeds", "3",
            "--heartbeat-interval", "1", "--grace-period", "20"]
    e = h.env(FAKE_DELAY="0.3")
    procs = [subprocess.Popen([sys.executable, str(worker), *args], env=e, cwd=tmp_path, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(2)]
    outs = [p.communicate(timeout=400)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out

    study = optuna.load_study(study_name="pg-two-workers", storage=normalize_url(pg_url))
    trials = study.get_trials()
    cells = {f"rlhp-b{b}-s{s}" for b in (50, 200) for s in range(3)} | {f"true-reward-s{s}" for s in range(3)}
    assert sorted(t.user_attrs["cell"] for t in trials) == sorted(cells)  # each cell once, no extra trial
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    workers = {t.user_attrs["worker"] for t in trials}
    assert len(workers) == 2, f"one worker ran every trial: {workers}\n" + "\n".join(outs)
    assert study.user_attrs["command"].startswith("python -m bench.sweep")

    client = MlflowClient(tracking_uri=mlflow_url)
    exp = client.get_experiment_by_name("pg-two-workers")
    runs = client.search_runs([exp.experiment_id], "tags.`rlhp.role` = 'trial'")
    assert len(runs) == len(cells)
    parent = study.user_attrs["mlflow_parent_run_id"]
    by_id = {r.info.run_id: r for r in runs}
    for t in trials:
        run = by_id[t.user_attrs["mlflow_run_id"]]
        assert run.info.status == "FINISHED"
        assert run.data.tags["optuna.trial_number"] == str(t.number)
        assert run.data.tags["mlflow.parentRunId"] == parent
        history = client.get_metric_history(run.info.run_id, "charts/episodic_return")
        assert sorted(m.step for m in history) == [8_000, 16_000, 24_000, 32_000, 40_000]
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "run")}
        assert "run/metrics.csv" in artifacts
    assert client.get_run(parent).info.status == "FINISHED"

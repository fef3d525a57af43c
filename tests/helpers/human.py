"""The labeling page's test helpers: synthetic queries, plain HTTP to the label server, reading a
page in Chromium, and the learner with the page as one command (``Training``). The ``browser``
and ``page`` fixtures are in tests/conftest.py."""

from __future__ import annotations

import http.client
import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from rlhp_core.segments import Query, Segment

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ENV = "ALE/Enduro-v5"
OBS = (4,)


# -- building queries ------------------------------------------------------------------------
def make_segment(rng: np.random.Generator, length: int = 12, ends: tuple[int, ...] = (), frames: bool = True,
                 size: tuple[int, int] = (210, 160)) -> Segment:
    """Random blocky RGB frames (10x10 blocks): every frame differs, and they compress well."""
    h, w = size
    pics = None
    if frames:
        small = rng.integers(0, 256, (length, h // 10, w // 10, 3), dtype=np.uint8)
        pics = small.repeat(10, axis=1).repeat(10, axis=2)
    episode_ends = np.zeros(length, bool)
    episode_ends[list(ends)] = True
    return Segment(obs=rng.integers(0, 255, (length, *OBS), dtype=np.uint8), actions=np.zeros(length, np.int64),
                   true_rewards=np.zeros(length, np.float32), episode_ends=episode_ends, frames=pics)


def make_queries(n: int, seed: int = 0, prefix: str = "q", **kw) -> list[Query]:
    rng = np.random.default_rng(seed)
    return [Query(f"{prefix}{i}", make_segment(rng, **kw), make_segment(rng, **kw)) for i in range(n)]


def write_status(path: Path, **over) -> dict:
    status = {"env_steps": 1_234_560, "total_steps": 10_000_000, "labels_answered": 612, "labels_pending": 3,
              "label_budget": 5500, "episode_return": 143.2, "phase": "training", "updated_at": time.time()}
    status.update(over)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(status))
    tmp.replace(path)
    return status


# -- plain HTTP -------------------------------------------------------------------------------
def request(base: str, method: str, path: str, body: object = None, headers: dict | None = None,
            raw_body: bytes | None = None) -> tuple[int, dict, bytes]:
    """Send ``path`` exactly as given (no normalisation) and return (status, headers, body)."""
    host, port = base.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    con = http.client.HTTPConnection(host, int(port), timeout=10)
    hdrs = dict(headers or {})
    data = raw_body
    if body is not None:
        data = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    con.request(method, path, body=data, headers=hdrs)
    r = con.getresponse()
    out = r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    con.close()
    return out


def api(base: str, path: str, body: object = None, **kw) -> tuple[int, dict]:
    status, _, data = request(base, "POST" if body is not None else "GET", path, body, **kw)
    return status, json.loads(data)


def answer_body(qid: str, answer: str = "left", sub: str = "sub-0001", client: str = "tab-test", **over) -> dict:
    now = time.time() * 1000
    body = {"query_id": qid, "answer": answer, "submission_id": sub, "labeler": "tester", "client": client,
            "shown_at": now - 3000, "answered_at": now - 10, "sent_at": now}
    body.update(over)
    return body


def base_url(lab) -> str:
    return lab.server.local_url.split("?")[0].rstrip("/")


# -- reading the page in a real browser ---------------------------------------------------------
def wait_until(fn, timeout: float = 30.0, what: str = "condition"):
    deadline = time.time() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def shown_id(pg) -> str:
    return pg.eval_on_selector("#pair", "p => p.dataset.queryId")


def labeling(pg) -> bool:
    return pg.eval_on_selector("body", "b => b.dataset.state") == "labeling"


SAMPLE_JS = """() => ['left', 'right'].map(side => {
  const c = document.getElementById('canvas-' + side);
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let h = 0;
  for (let i = 0; i < d.length; i += 101) h = (h * 31 + d[i]) | 0;
  return [Number(c.dataset.frame), h, c.getBoundingClientRect().width];
})"""


def assert_clips_play(pg, min_frames: int = 3):
    """Both canvases advance through frames, in step, and their pixels change."""
    frames, hashes = set(), {"left": set(), "right": set()}

    def enough():
        (fl, hl, wl), (fr, hr, wr) = pg.evaluate(SAMPLE_JS)
        assert fl == fr, "the two clips are out of sync"
        assert wl >= 2 * 160, "clips should be scaled up to a readable size"
        frames.add(fl)
        hashes["left"].add(hl)
        hashes["right"].add(hr)
        return len(frames) >= min_frames and min(len(h) for h in hashes.values()) >= min_frames

    wait_until(enough, what="both clips to play")


def answers_of(store):
    return [(a.query_id, a.answer) for a in store.current_answers()]


def empty_title(pg) -> str:
    return pg.inner_text("#empty-title") if pg.eval_on_selector("body", "b => b.dataset.state") == "empty" else ""


# -- a learner with the labeling page, as one command (python -m rlhp_core.train --labeler human) -----
TINY = dict(env_id=ENV, algo="a2c", num_envs=4, label_budget=6, initial_labels=4, pretrain_epochs=1,
            reward_update_every=200, log_every=400, checkpoint_every=100_000, progress=False)
"""Enduro, 4 envs: the initial batch (4 pairs) after 400 steps, then (label schedule) a pair around
the middle of the run and one at its end. Segments are 25 steps of real 210x160 RGB frames."""

FINISHED = "The run has finished"


class Training:
    """``python -m rlhp_core.train`` as a subprocess; its stdout read line by line on a thread."""

    def __init__(self, run_dir: Path, *args: str):
        cmd = [sys.executable, "-m", "rlhp_core.train", "--run-dir", str(run_dir), "--port", "0", *args]
        for key, value in TINY.items():
            flag = "--" + key.replace("_", "-")
            if flag not in args:
                cmd += [flag, str(value).lower() if isinstance(value, bool) else str(value)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "OMP_NUM_THREADS": "1"})
        self.lines: queue.Queue[str] = queue.Queue()
        self.stdout: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.stdout.append(line)
            self.lines.put(line)

    def url(self, timeout: float = 120) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            if line.startswith("Label at: "):
                return line.split(": ", 1)[1].strip()
        raise AssertionError(f"no 'Label at:' line; stdout {self.stdout}, stderr {self.proc.stderr.read()}")

    def finish(self, timeout: float = 180) -> dict:
        try:
            self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        err = self.proc.stderr.read()
        assert self.proc.returncode == 0, err
        time.sleep(0.2)  # the reader thread takes the last lines
        out = "".join(self.stdout)
        return json.loads(out[out.index("\n{") + 1:])

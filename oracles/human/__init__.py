"""The human adapter: people label pairs of clips in a browser while RL goes on.

``HumanLabeler`` is a :class:`rlhp_core.labeler.Labeler`: the learner posts queries into the
label store routed to ``"human"`` and carries on; a local web page (started with the labeler,
on a background thread) shows each pair as two looping clips and stores every answer, with
who gave it and when, before telling the page it is saved. Mix with a scripted teacher through
:class:`rlhp_core.labeler.RoutedLabeler` (the teacher answers the initial batch, people the rest).

Serve an existing run's labels from another process: ``python -m oracles.human --run-dir RUN``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from rlhp_core.label_store import LabelStore
from rlhp_core.segments import Query

from .server import ROUTE, LabelServer, serve
from .tasks import task_for

__all__ = ["HumanLabeler", "LabelServer", "serve", "task_for", "ROUTE"]


class HumanLabeler:
    """People answer in a browser; the page is served while this object lives.

    store: the run's label store (the page reads and writes it; the learner too).
    host, port: where to serve (127.0.0.1 and a free port by default). Any non-loopback host
        requires a token; one is generated when ``token`` is None.
    token: required in the URL (then a cookie) when given, or when bound beyond loopback.
    env_id: the run's env (must match the store's); picks the page's one-line task.
    label_budget: shown as progress (None: read from status.json's ``label_budget``).
    status_path: the learner's status.json (default: next to the store).
    clip_dir: where encoded clips are cached (default: ``clips/`` next to the store).
    fps: playback rate at speed 1x (default: the env's real-time rate, 15 steps/s on Atari).
    announce: print the URL to stderr once the page is up (the training CLI prints ``url`` itself).
    linger_s: on :meth:`close` (the learner closes its labeler when the run ends), an open page
        is told the run has ended before the server goes: serving goes on until its next poll
        (every 2 s), at most this long. 0 closes at once.
    """

    name = "human"
    wants_frames = True

    def __init__(self, store: LabelStore, *, host: str = "127.0.0.1", port: int = 0, token: str | None = None,
                 env_id: str, label_budget: int | None = None, status_path: Path | None = None,
                 clip_dir: Path | None = None, fps: float | None = None, announce: bool = False,
                 linger_s: float = 5.0):
        self.server: LabelServer = serve(store, host=host, port=port, token=token, env_id=env_id,
                                         label_budget=label_budget, status_path=status_path, clip_dir=clip_dir,
                                         route=ROUTE, fps=fps)
        self.url = self.server.url
        self.linger_s = linger_s
        if announce:
            print(f"[rlhp] Label clips in your browser: {self.url}", file=sys.stderr, flush=True)

    def post(self, store: LabelStore, queries: Sequence[Query], env_step: int) -> None:
        store.add_queries(queries, env_step=env_step, route=ROUTE, keep_frames=True)

    def close(self) -> None:
        self.server.close(linger_s=self.linger_s)

    def __enter__(self) -> "HumanLabeler":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

"""The human adapter: people label pairs of clips in a browser while RL goes on.

``HumanLabeler`` is a :class:`rlhp_core.labeler.Labeler`: the learner posts queries into the
label store routed to ``"human"`` and carries on; a local web page (started with the labeler,
on a background thread) shows each pair as two looping clips and stores every answer, with
who gave it and when, before telling the page it is saved. Mix with a scripted teacher through
:class:`rlhp_core.labeler.RoutedLabeler` (the teacher answers the initial batch, people the rest).

Serve an existing run's labels from another process: ``python -m oracles.human --run-dir RUN``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Sequence

from rlhp_core.label_store import LabelStore
from rlhp_core.paths import write_atomic
from rlhp_core.segments import Query

from .server import ROUTE, TOKEN_ENV, LabelServer, check_token, serve, token_from
from .tasks import check_goal, task_for

__all__ = ["HumanLabeler", "LabelServer", "LabelPortError", "serve", "task_for", "check_goal", "remembered_port",
           "check_token", "token_from", "ROUTE", "TOKEN_ENV", "PORT_FILE"]

PORT_FILE = "label_server.json"
"""Written next to the run's status.json: ``{"port": N}``, the port the labeling page was last served
on, so that a restarted run serves it there again (an open page retries the same address)."""


class LabelPortError(ValueError):
    """The labeling page cannot have the port it needs. A ValueError so that the training command
    line prints the message (which names the port and the way out) and exits 2."""


def remembered_port(directory: str | Path) -> int:
    """The port a labeler started with ``port=0`` and status.json in ``directory`` will try first
    (see PORT_FILE); 0 when none is remembered (it takes a free one). LabelPortError for a file
    that holds no port. For callers that check the port before starting a run."""
    path = Path(directory) / PORT_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return 0
    try:
        port = json.loads(text)["port"]
    except (ValueError, TypeError, KeyError):
        port = None
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise LabelPortError(f"{path} should hold {{\"port\": N}} with N in 1-65535, not {text[:80]!r}; "
                             f"delete it to serve the labeling page on any free port")
    return port


def _remember_port(path: Path, port: int) -> None:
    write_atomic(path, json.dumps({"port": port}) + "\n")


def _port_trouble(host: str, port: int, remembered: int, port_file: Path, err: OSError) -> str:
    """Why the page cannot listen, and the ways out (they differ with where the port came from)."""
    why = err.strerror or str(err)
    if remembered:
        return (f"cannot serve the labeling page on {host}:{remembered}: {why}. This run's page was served on "
                f"port {remembered} before ({port_file}) and comes back there so that open pages reconnect. "
                f"Stop the process that holds it, or pass another port (--port N; it is then remembered), "
                f"or delete {port_file} to take any free port")
    if port:
        return (f"cannot serve the labeling page on {host}:{port}: {why}. Pass another port (--port N), or "
                f"--port 0 for the port this run used before (any free one the first time)")
    return f"cannot serve the labeling page on {host} (any free port): {why}. Is {host!r} an address of this machine?"


class HumanLabeler:
    """People answer in a browser; the page is served while this object lives.

    store: the run's label store (the page reads and writes it; the learner too).
    host: where to serve (127.0.0.1 by default). Any non-loopback host requires a token; one is
        generated when neither ``token`` nor ``$RLHP_LABEL_TOKEN`` gives one.
    port: 0 (default) serves on the port this run's page had before (``label_server.json`` next
        to the status file), or on a free one the first time; any other port is used as given.
        Either way the port is remembered, so a restarted run comes back at the same address and
        an open page reconnects. A remembered port another process holds is an error
        (:class:`LabelPortError`) rather than a silent move: pages open on the old address would
        never find the new one, while the person who restarts the run is there to read why.
    token: required in the URL (then a cookie) when given, or when bound beyond loopback.
        None: ``$RLHP_LABEL_TOKEN`` if set (prefer it: a flag's value ends up in shell history
        and config files). The token is kept in memory only; nothing about it is written to disk.
    env_id: the run's env (must match the store's); picks the page's one-line goal.
    goal: what people are told to look for, instead of the env's usual line (``--goal``): the
        behaviour to teach, which need not be the game's score (ValueError when empty).
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
                 linger_s: float = 5.0, goal: str | None = None):
        status_path = Path(status_path) if status_path is not None else Path(store.path).parent / "status.json"
        port_file = status_path.parent / PORT_FILE
        remembered = remembered_port(status_path.parent) if port == 0 else 0
        try:
            self.server: LabelServer = serve(store, host=host, port=port or remembered, token=token_from(token),
                                             env_id=env_id, label_budget=label_budget, status_path=status_path,
                                             clip_dir=clip_dir, route=ROUTE, fps=fps, goal=goal)
        except OSError as err:
            raise LabelPortError(_port_trouble(host, port, remembered, port_file, err)) from err
        _remember_port(port_file, self.server.port)
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

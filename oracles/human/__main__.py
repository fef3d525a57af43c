"""Serve the labeling page for an existing run from its own process.

    python -m oracles.human --run-dir runs/enduro-human [--host 127.0.0.1] [--port 8765] [--token T]
        [--goal "Keep alongside other cars; don't pass them"]
    RLHP_LABEL_TOKEN=T python -m oracles.human --run-dir ...   (the token kept out of history and ps)

Reads RUN_DIR/labels.sqlite (SQLite in WAL mode, so the learner can keep writing to it),
RUN_DIR/status.json for the run's state, RUN_DIR/config.json (if present) for the label budget
and the run's goal (its --goal), RUN_DIR/env_info.json for why clips have no pictures (if so),
and caches clips in RUN_DIR/clips. Stop with Ctrl-C: every answer the page showed as saved is
already in the store.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from rlhp_core.label_store import LabelStore, LabelStoreError

from .server import ROUTE, TOKEN_ENV, serve, token_from
from .tasks import check_goal


def _stop(*_) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m oracles.human", description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", required=True, type=Path, help="the run directory (holds labels.sqlite)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; any other address requires a token)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 = any free port)")
    p.add_argument("--token", default=None,
                   help=f"access token (default: ${TOKEN_ENV} if set, which keeps it out of shell history and ps; "
                        f"else none on loopback, a random one on any other address)")
    p.add_argument("--route", default=ROUTE,
                   help=f"label the queries routed to this labeler (default {ROUTE!r}; 'any' = every pending query)")
    p.add_argument("--fps", type=float, default=None, help="playback steps per second at 1x (default: per env)")
    p.add_argument("--goal", default=None, metavar="TEXT",
                   help="what people are told to look for, shown above the clips (default: the run's --goal from "
                        "its config.json, else the env's usual line, e.g. Enduro's 'Pass as many cars as you can')")
    args = p.parse_args(argv)
    if args.goal is not None:
        try:
            args.goal = check_goal(args.goal, "--goal")
        except ValueError as err:
            p.error(str(err))

    db = args.run_dir / "labels.sqlite"
    if not db.exists():
        p.error(f"{db} does not exist: is {args.run_dir} a run directory?")
    try:
        store = LabelStore(db)
    except LabelStoreError as err:
        p.error(str(err))
    budget = goal = None
    try:
        config = json.loads((args.run_dir / "config.json").read_text())
        budget = config.get("label_budget")
        goal = (config.get("extra") or {}).get("goal")
    except (OSError, ValueError, AttributeError):
        pass
    if args.goal is not None:
        goal = args.goal
    elif goal is not None:
        try:
            goal = check_goal(goal, f"{args.run_dir / 'config.json'}: extra.goal")
        except ValueError as err:
            p.error(f"{err}; pass --goal TEXT")
    try:
        server = serve(store, host=args.host, port=args.port, token=token_from(args.token), env_id=store.env_id,
                       label_budget=budget if isinstance(budget, int) else None,
                       status_path=args.run_dir / "status.json", clip_dir=args.run_dir / "clips",
                       route=None if args.route == "any" else args.route, fps=args.fps, goal=goal)
    except ValueError as err:  # a malformed token, or a negative label budget in config.json
        p.error(str(err))
    except OSError as err:
        p.error(f"cannot listen on {args.host}:{args.port}: {err}")
    signal.signal(signal.SIGTERM, _stop)
    print(f"[rlhp] Labeling {store.env_id} from {db}", file=sys.stderr)
    print(f"[rlhp] Open {server.url}", file=sys.stderr)
    if server.url != server.local_url:
        print(f"[rlhp] (from this machine: {server.local_url})", file=sys.stderr)
    print("[rlhp] Ctrl-C to stop.", file=sys.stderr, flush=True)
    server.serve_until_interrupted()
    return 0


if __name__ == "__main__":
    sys.exit(main())

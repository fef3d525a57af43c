"""How often a scripted teacher agrees with a label set (a person's, or another teacher's).

For every current (unretracted) answer in a label store, the chosen teacher's exact answer
distribution on that query is computed (:meth:`Teacher.answer_probabilities`, nothing is
sampled), and ``agree`` is the probability that the teacher would have given the stored
answer. The table has one row per stored answer kind plus ``all``; the ``teacher_*`` columns say
what the teacher answers instead on those queries (mean probabilities, summing to 1).

Expected rather than sampled agreement: the same number on every call, without the extra
sampling noise of one draw per query. Example: the rational teacher against a person shows
where people depart from the env reward; against a ``mistake`` teacher's labels it gives
``1 - eps_mistake`` on left/right rows.

    python -m oracles.agreement runs/x/labels.sqlite --teacher rational [--labeler human] [--by-labeler]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from rlhp_core.label_store import LabelStore
from rlhp_core.segments import ANSWERS

from .teacher import Teacher, teacher_for_env

__all__ = ["agreement", "main"]

_COLUMNS = ["n", "agree"] + [f"teacher_{a}" for a in ANSWERS]


def _table(answers: np.ndarray, probs: np.ndarray) -> pd.DataFrame:
    rows = {}
    for kind in (*ANSWERS, "all"):
        mask = np.ones(len(answers), bool) if kind == "all" else answers == kind
        n = int(mask.sum())
        idx = np.flatnonzero(mask)
        agree = probs[idx, [ANSWERS.index(a) for a in answers[idx]]] if n else np.array([])
        dist = probs[idx].mean(axis=0) if n else np.full(len(ANSWERS), np.nan)
        rows[kind] = [n, agree.mean() if n else np.nan, *dist]
    df = pd.DataFrame.from_dict(rows, orient="index", columns=_COLUMNS)
    df["n"] = df["n"].astype(int)
    df.index.name = "answer"
    return df


def agreement(store: LabelStore | str | Path, teacher: Teacher | str, *, labeler: str | None = None,
              by_labeler: bool = False, seed: int = 0, episode_end_penalty: float | None = None,
              reward_per_step: float | None = None) -> pd.DataFrame:
    """Agreement table of ``teacher`` (a Teacher, or a spec built with the store's env defaults).

    labeler: only answers given by this labeler (e.g. ``human``, ``oracle:rational``).
    by_labeler: one block of rows per labeler (index ``(labeler, answer)``).
    """
    if not isinstance(store, LabelStore):
        store = LabelStore(store)
    records = [r for r in store.current_answers() if labeler is None or r.labeler == labeler]
    queries = [store.query(r.query_id) for r in records]
    if isinstance(teacher, str):
        length = queries[0].left.length if queries else 25
        teacher = teacher_for_env(teacher, np.random.default_rng(seed), env_id=store.env_id, segment_length=length,
                                  episode_end_penalty=episode_end_penalty, reward_per_step=reward_per_step)
    probs = teacher.answer_probabilities(queries) if queries else np.zeros((0, len(ANSWERS)))
    answers = np.array([r.answer for r in records], dtype=object)
    if not by_labeler:
        out = _table(answers, probs)
    else:
        who = np.array([r.labeler for r in records], dtype=object)
        blocks = {name: _table(answers[who == name], probs[who == name]) for name in sorted(set(who))}
        out = pd.concat(blocks, names=["labeler"]) if blocks else _table(answers, probs)
    out.attrs["teacher"] = teacher.name
    out.attrs["teacher_params"] = dict(teacher.record)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m oracles.agreement", description=__doc__.split("\n\n")[0])
    ap.add_argument("store", help="a label store (labels.sqlite)")
    ap.add_argument("--teacher", required=True, help="teacher spec: PRESET, PRESET:knob=value,... or knob=value,...")
    ap.add_argument("--labeler", default=None, help="only answers by this labeler (e.g. human)")
    ap.add_argument("--by-labeler", action="store_true", help="one block of rows per labeler")
    ap.add_argument("--episode-end-penalty", type=float, default=None, help="override the env's default")
    ap.add_argument("--reward-per-step", type=float, default=None, help="scale of skip_eps/equal_eps (override)")
    ap.add_argument("--csv", default=None, help="also write the table here")
    args = ap.parse_args(argv)
    if not Path(args.store).exists():
        ap.error(f"label store {args.store} does not exist")
    try:
        table = agreement(args.store, args.teacher, labeler=args.labeler, by_labeler=args.by_labeler,
                          episode_end_penalty=args.episode_end_penalty, reward_per_step=args.reward_per_step)
    except ValueError as e:
        ap.error(str(e))
    print(f"teacher {table.attrs['teacher']}: "
          + ", ".join(f"{k}={v}" for k, v in table.attrs["teacher_params"].items() if k != "teacher"))
    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 160):
        print(table.to_string())
    if args.csv:
        table.to_csv(args.csv)
    return 0


if __name__ == "__main__":
    sys.exit(main())

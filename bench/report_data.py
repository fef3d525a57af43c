"""What a sweep report reads: the study, its trials, their learning curves and their label stores.

Everything here reads and nothing writes: the Optuna study (SWEEP_DIR/sweep.json says where it
is), one row per trial (:func:`trials_frame`), each trial's learning curve from its run
directory's metrics.csv or else from its MLflow run (:func:`curves_frame`), and on a teacher axis
each trial's teacher family and label statistics, read through a read-only
:class:`~rlhp_core.label_store.LabelStore` that leaves a finished store as it was (no -wal or
-shm files beside it). bench.report_tables turns these frames into tables.
"""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import optuna
import pandas as pd

from rlhp_core.label_store import LabelStore, LabelStoreError
from rlhp_core.segments import ANSWERS

from .metrics import CURVE_KEYS
from .presets import METHODS
from .storage import StorageError, mask_url, open_storage


class UsageError(Exception):
    """Bad input to ``python -m bench.report`` (exit status 2)."""


# -- the study and its trials ----------------------------------------------------------------------
def load_study(sweep_dir: Path, storage: str | None, study_name: str | None) -> tuple[optuna.Study, dict]:
    info: dict = {}
    info_path = sweep_dir / "sweep.json"
    if info_path.is_file():
        try:
            info = json.loads(info_path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise UsageError(f"SWEEP_DIR {str(sweep_dir)!r}: {info_path} is not a sweep's sweep.json "
                             f"({exc})") from None
        if not isinstance(info, dict):
            raise UsageError(f"SWEEP_DIR {str(sweep_dir)!r}: {info_path} is not a sweep's sweep.json (a JSON "
                             f"{type(info).__name__}, not an object)")
    elif not sweep_dir.is_dir():
        raise UsageError(f"SWEEP_DIR {str(sweep_dir)!r}: not a folder; expected a sweep's folder (sweeps/STUDY)")
    given = storage is not None
    if storage is None:
        storage = info.get("storage")
        if storage is None:
            db = sweep_dir / "optuna.db"
            if not db.is_file():
                raise UsageError(f"SWEEP_DIR {str(sweep_dir)!r}: holds no sweep.json and no optuna.db; pass the "
                                 f"sweep's folder (sweeps/STUDY) or --storage URL --study NAME")
            storage = f"sqlite:///{db.resolve()}"
        elif "***" in storage:
            raise UsageError(f"the sweep's storage {storage} needs its password: pass --storage URL")
    try:
        rdb = open_storage(storage, heartbeat_interval=60, grace_period=120, create=False)
    except StorageError as exc:
        raise UsageError(f"--storage: {exc}" if given else str(exc)) from None
    names = [s.study_name for s in optuna.get_all_study_summaries(rdb)]
    name = study_name or info.get("study")
    if name is None:
        if len(names) != 1:
            raise UsageError(f"{mask_url(storage)} holds studies {names}; choose one with --study")
        name = names[0]
    if name not in names:
        flag = "--study " if study_name else ""
        raise UsageError(f"{flag}study {name!r} not found in {mask_url(storage)}; studies there: {names}")
    study = optuna.load_study(study_name=name, storage=rdb)
    info.setdefault("storage", mask_url(storage))
    info.setdefault("study", name)
    return study, info


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    rows = []
    for t in study.get_trials(deepcopy=False):
        ua = t.user_attrs
        method = t.params.get("method", "rlhp")
        budget = int(t.params.get("label_budget", ua.get("label_budget", 0)) or 0)
        rows.append({
            "number": t.number, "state": t.state.name, "value": t.value, "method": method, "budget": budget,
            "seed": t.params.get("seed", 0), "cell": ua.get("cell", ""), "run_key": ua.get("run_key", ""),
            "labels": ua.get("labels"), "env_steps": ua.get("env_steps"), "sps": ua.get("sps"),
            "wall_time_s": ua.get("wall_time_s"), "mlflow_run_id": ua.get("mlflow_run_id", ""),
            "worker": ua.get("worker", ""), "retry_of": t.system_attrs.get("failed_trial"),
            "teacher": ua.get("teacher", ""),
            **{f"param.{k}": v for k, v in t.params.items() if k not in ("method", "label_budget", "seed")},
        })
    df = pd.DataFrame(rows)
    if len(df):
        df["budget_label"] = [_budget_label(m, b) for m, b in zip(df["method"], df["budget"])]
        df["group"] = [_group_label(m, b, t) for m, b, t in zip(df["method"], df["budget_label"], df["teacher"])]
    return df


def uses_labels(method: str) -> bool:
    """Whether a method learns from labels (an unknown one is taken to)."""
    return not (method in METHODS and not METHODS[method].uses_labels)


def _budget_label(method: str, budget: int) -> str:
    return f"{budget:,}" if uses_labels(method) else "true reward"


def _group_label(method: str, budget_label: str, teacher: str) -> str:
    """A cell group's name in tables and legends (method x budget x teacher; seeds are what a group
    aggregates). The baseline has no budget and no teacher: 'true reward'."""
    if not uses_labels(method):
        return budget_label
    return " ".join(p for p in (method, budget_label, teacher) if p)


def _curve_from_csv(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError):  # a running trial's file may be empty or half written
        return None
    if "env_steps" not in df:
        return None
    return df.reindex(columns=["env_steps", *CURVE_KEYS])


def _history(client, run_id: str, key: str) -> dict[int, float]:
    """One metric's MLflow history by step; a resumed run may hold a step twice: the latest wins."""
    return {m.step: m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.timestamp)}


def _curve_from_mlflow(client, run_id: str) -> pd.DataFrame | None:
    if client is None or not run_id:
        return None
    try:
        cols = {key: _history(client, run_id, key) for key in CURVE_KEYS}
    except Exception:
        return None
    steps = sorted(set().union(*cols.values()))
    if not steps:
        return None
    return pd.DataFrame({"env_steps": steps, **{k: [c.get(s) for s in steps] for k, c in cols.items()}})


CURVE_INFO = ["number", "method", "budget", "seed", "budget_label", "group", "cell", "state", "trial"]
"""Columns curves_frame adds to each trial's metrics."""


def curves_frame(trials: pd.DataFrame, sweep_dir: Path, client) -> tuple[pd.DataFrame, int]:
    """Learning curves of the given trials, long format: metrics.csv's columns (CURVE_KEYS) and
    CURVE_INFO. Returns (curves, trials without a curve)."""
    parts, missing = [], 0
    for row in trials.itertuples(index=False):
        curve = _curve_from_csv(sweep_dir / "trials" / str(row.run_key) / "metrics.csv") if row.run_key else None
        if curve is None:
            curve = _curve_from_mlflow(client, row.mlflow_run_id)
        if curve is None or not len(curve):
            missing += 1
            continue
        parts.append(curve.assign(number=row.number, method=row.method, budget=row.budget, seed=row.seed,
                                  budget_label=row.budget_label, group=row.group, cell=row.cell or row.run_key,
                                  state=row.state, trial=f"trial {row.number}"))
    if not parts:
        return pd.DataFrame(columns=["env_steps", *CURVE_KEYS, *CURVE_INFO]), missing
    out = pd.concat(parts, ignore_index=True)
    for col in ("env_steps", *CURVE_KEYS):
        out[col] = pd.to_numeric(out[col], errors="coerce")
    return out, missing


# -- teacher axis (the noise-robustness benchmark) ------------------------------------------------
FAMILY_ORDER = ("true reward", "rational", "mistake", "stoc", "skip", "equal", "myopic", "combined", "?")
FAMILY_LEVEL = {"mistake": "eps_mistake", "stoc": "beta", "skip": "skip_threshold", "equal": "equal_threshold",
                "myopic": "gamma", "progress": "progress_margin", "tie": "tie"}
"""The knob that sets each family's noise level (oracles.teacher.TeacherParams)."""


def teacher_family(spec: str, env_id: str, segment_length: int = 25) -> tuple[str, float]:
    """(family, level) of a teacher spec: the one knob that departs from the rational teacher, and its value.

    Several departing knobs: ("combined", nan); a spec that does not build here: ("?", nan).
    """
    try:
        import numpy as np

        from oracles.teacher import TeacherParams, teacher_for_env

        params = teacher_for_env(spec, np.random.default_rng(0), env_id=env_id, segment_length=segment_length).params
    except Exception:
        return "?", math.nan
    base = TeacherParams(episode_end_penalty=params.episode_end_penalty)
    changed = [k for k in FAMILY_LEVEL.values() if getattr(params, k) != getattr(base, k)]
    if not changed:
        return "rational", math.nan
    if len(changed) > 1:
        return "combined", math.nan
    family = {v: k for k, v in FAMILY_LEVEL.items()}[changed[0]]
    return family, float(getattr(params, changed[0]))


def _open_store(path: Path) -> LabelStore | None:
    """A trial's label store opened read-only, or None where there is none (or the file is not one)."""
    try:
        return LabelStore(path, read_only=True)
    except (LabelStoreError, OSError, sqlite3.Error):
        return None


def _label_error(store: LabelStore) -> float:
    """Over the store's current left/right answers: the probability that the rational teacher would
    have answered the other way (oracles.agreement, exact)."""
    try:
        from oracles.agreement import agreement

        table = agreement(store, "rational")
        rows = table.loc[[a for a in ("left", "right") if a in table.index]]
        rows = rows[rows["n"] > 0]
        return float(((1.0 - rows["agree"]) * rows["n"]).sum() / rows["n"].sum())
    except Exception:
        return math.nan


def label_stats(store_path: Path) -> dict[str, float]:
    """Of a trial's current answers: the fractions 'equal' and 'incomparable', and the label error.

    label_error: the noise the teacher actually injected on the queries the learner asked
    (_label_error). All NaN where the store is missing, not a label store, or unreadable.
    """
    out = {"answers": math.nan, "frac_equal": math.nan, "frac_incomparable": math.nan, "label_error": math.nan}
    store = _open_store(store_path)
    if store is None:
        return out
    try:
        counts = store.counts()
        n = sum(counts[a] for a in ANSWERS)
        if n:
            out.update(answers=float(n), frac_equal=counts["equal"] / n, frac_incomparable=counts["incomparable"] / n)
        if counts["left"] or counts["right"]:
            out["label_error"] = _label_error(store)
    except sqlite3.Error:  # a store without its tables (never written to): no answers to count
        pass
    finally:
        store.close()
    return out


def teacher_trials(trials: pd.DataFrame, sweep_dir: Path, env_id: str, segment_length: int = 25) -> pd.DataFrame:
    """Complete trials with their teacher's family and level and their label statistics."""
    done = trials[trials["state"] == "COMPLETE"].copy()
    fam = {t: teacher_family(t, env_id, segment_length) for t in set(done["teacher"]) if t}
    baseline = [not uses_labels(m) for m in done["method"]]
    done["family"] = ["true reward" if b else fam.get(t, ("?", math.nan))[0] for b, t in zip(baseline, done["teacher"])]
    done["level"] = [math.nan if b else fam.get(t, ("?", math.nan))[1] for b, t in zip(baseline, done["teacher"])]
    done["teacher"] = ["true reward" if b else t for b, t in zip(baseline, done["teacher"])]
    st = [label_stats(sweep_dir / "trials" / str(k) / "labels.sqlite") if k and not b else label_stats(Path("-"))
          for k, b in zip(done["run_key"], baseline)]
    for col in ("frac_equal", "frac_incomparable", "label_error"):
        done[col] = [x[col] for x in st]
    return done


# -- provenance ------------------------------------------------------------------------------------
def env_settings(study: optuna.Study) -> list[str]:
    """Distinct env settings (frameskip, sticky actions, ALE version...) the trials ran with."""
    seen: dict[str, set] = {}
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        for k, v in (t.user_attrs.get("env_info") or {}).items():
            seen.setdefault(k, set()).add(json.dumps(v, sort_keys=True, default=str))
    return [f"- {k}: {', '.join(sorted(v))}" for k, v in sorted(seen.items())]


def workers_used(study: optuna.Study) -> list[str]:
    hosts: dict[str, dict] = {}
    for t in study.get_trials(deepcopy=False):
        m = t.user_attrs.get("machine")
        if isinstance(m, dict):
            key = m.get("host", "?")
            hosts.setdefault(key, {**m, "trials": 0})["trials"] += 1
    return [f"- {h}: {m.get('nproc')} CPUs ({m.get('cpu', '?')}), {m.get('gpu') or 'no GPU'}; {m['trials']} trial(s)"
            for h, m in sorted(hosts.items())]

"""Per cell of the Enduro budget comparison: the reward model's health at the end of training and the
cell's speed, from each trial's metrics.csv (what bench.report's tables do not show).

Why: the comparison's question is whether 5,500 labels beat 290. If the policies do not separate,
the first thing to know is whether the reward models do: validation accuracy on decisive held-out
pairs, accuracy on fresh pairs of the current policy's segments against the true preference
(``reward/true_pref_accuracy``), and r̂'s correlation with the true reward. Each is the mean over
the rows of the last 10% of the cell's agent steps, like the report's final rates.

    python results/enduro-budgets/reward_health.py sweeps/enduro-budgets > results/enduro-budgets/reward_health.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

FINAL_FRACTION = 0.1
COLUMNS = {
    "labels/answered": ("labels", "{:.0f}"),
    "labels/trainable": ("trainable", "{:.0f}"),
    "labels/equal_share": ("equal share", "{:.3f}"),
    "reward/val_accuracy": ("val accuracy (decisive)", "{:.3f}"),
    "reward/val_decisive": ("decisive val pairs", "{:.0f}"),
    "reward/true_pref_accuracy": ("fresh-pair accuracy", "{:.3f}"),
    "reward/pred_true_corr": ("r̂ vs true corr", "{:.3f}"),
    "reward/members_learnt": ("members learnt", "{:.1f}"),
    "reward/comparisons_trained": ("comparisons trained", "{:,.0f}"),
    "charts/SPS": ("agent steps/s", "{:.0f}"),
}
COUNTERS = ("labels/answered", "labels/trainable", "reward/comparisons_trained")


def cell_row(metrics: Path) -> dict:
    df = pd.read_csv(metrics)
    last = df["env_steps"].max()
    tail = df[df["env_steps"] >= (1 - FINAL_FRACTION) * last]
    row = {"cell": metrics.parent.name, "env_steps": int(last)}
    for key in COLUMNS:
        if key in df and df[key].notna().any():
            # counters (labels, comparisons trained so far) at the end; rates and accuracies over the last 10%
            counter = key in COUNTERS
            row[key] = df[key].dropna().iloc[-1] if counter else tail[key].mean()
    # the cell's average speed over the whole run (SPS is per log window)
    row["charts/SPS"] = df["charts/SPS"].mean()
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep_dir", type=Path)
    args = ap.parse_args(argv)
    files = sorted((args.sweep_dir / "trials").glob("*/metrics.csv"))
    if not files:
        print(f"no trials/*/metrics.csv under {args.sweep_dir}", file=sys.stderr)
        return 2
    rows = pd.DataFrame([cell_row(f) for f in files])
    shown = [k for k in COLUMNS if k in rows]
    print("| cell | agent steps | " + " | ".join(COLUMNS[k][0] for k in shown) + " |")
    print("|---|---|" + "---|" * len(shown))
    for r in rows.itertuples(index=False):
        rec = r._asdict()
        cells = []
        for k in shown:
            v = rows.loc[rows["cell"] == r.cell, k].iloc[0]
            cells.append("–" if pd.isna(v) else COLUMNS[k][1].format(v))
        print(f"| {rec['cell']} | {rec['env_steps']:,} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""loop_speed.csv and loop_parts.png from the loop harness's JSON output.

    # one measurement (see README.md), then its row, then the chart of the idle rows:
    OMP_NUM_THREADS=1 python tests/benchmarks/test_bench_loop.py --steps 8000 --raw-seconds 4 --ratio 0.1 \\
        --set reward_fit=background --set reward_dtype=bfloat16 --json bg_bf16.json
    python results/speed/loop_table.py add bg_bf16.json --config r010_bg_bf16 \\
        --description "full recipe, ratio 0.1, background fit, bf16 convs" --machine-state "idle (only this run)"
    python results/speed/loop_table.py plot
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CSV = HERE / "loop_speed.csv"
PNG = HERE / "loop_parts.png"


def read_rows() -> tuple[list[str], list[dict]]:
    with open(CSV, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def write_rows(fields: list[str], rows: list[dict]) -> None:
    tmp = CSV.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    tmp.replace(CSV)


def row_from(res: dict, config: str, description: str, machine_state: str) -> dict:
    loop, over = res["loop"], res.get("overrides", {})
    n = loop["steps"]
    row = {
        "machine_state": machine_state, "config": config, "description": description,
        "reward_fit": loop.get("reward_fit", over.get("reward_fit", "sync")),
        "reward_dtype": loop.get("reward_dtype", over.get("reward_dtype", "float32")),
        "malloc": res.get("malloc", "glibc"),  # session 3 on: tcmalloc unless RLHP_MALLOC=system
        "reward_train_ratio": loop["reward_train_ratio"] or "",
        "reward_update_every": over.get("reward_update_every", 1000), "agent_steps": n,
        "loop_steps_per_s": round(loop["steps_per_s"], 1), "raw_steps_per_s": round(res["raw_steps_per_s"]),
        "loop_over_raw": round(res["loop_over_raw"], 4), "loop_cpu_us_per_step": round(loop["cpu_us_per_step"]),
        "raw_cpu_us_per_step": round(res["raw_cpu_us_per_step"]),
        "loop_over_raw_by_cpu": round(res["loop_over_raw_by_cpu"], 4),
        "reward_minibatches": loop["reward_train_steps"], "labels_at_end": loop["labels"],
        "load_avg_1min": round(res["load_avg_1min"], 2), "date": res["date"],
    }
    for part, seconds in loop["parts_wall_s"].items():
        row[f"ms_per_step:{part}"] = round(1000 * seconds / n, 3)
    return row


def add(path: str, config: str, description: str, machine_state: str) -> None:
    fields, rows = read_rows()
    row = row_from(json.loads(Path(path).read_text()), config, description, machine_state)
    for k in row:
        if k not in fields:
            fields.insert(fields.index("ms_per_step:other (loop body)") if k.startswith("ms_per_step:")
                          else fields.index("reward_train_ratio"), k)
    earlier = {"reward_fit": "sync", "reward_dtype": "float32", "malloc": "glibc"}  # rows from before these columns
    for r in rows:
        for k in fields:
            if not r.get(k):
                r[k] = earlier.get(k, r.get(k) or "")
    rows = [r for r in rows if not (r["config"] == config and r["machine_state"] == machine_state)] + [row]
    write_rows(fields, rows)
    print(f"{config}: {row['loop_steps_per_s']} steps/s, {row['loop_over_raw']}x raw")


def plot(machine_state: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    fields, rows = read_rows()
    df = pd.DataFrame([r for r in rows if r["machine_state"] == machine_state])
    parts = [f for f in fields if f.startswith("ms_per_step:")]
    data = df[parts].replace("", "0").astype(float)
    data.columns = [p.split(":", 1)[1] for p in parts]
    data = data.loc[:, data.sum() > 0]
    data.index = df["description"]
    raw_ms = 1000 / df["raw_steps_per_s"].astype(float).mean()
    ax = data.plot.barh(stacked=True, figsize=(13, 0.55 * len(df) + 2.5), colormap="tab20", width=0.75)
    ax.axvline(raw_ms / 0.2, color="k", ls="--", lw=1)
    ax.invert_yaxis()
    ax.text(raw_ms / 0.2, 0.02, " the bar: 0.2x raw emulator", transform=ax.get_xaxis_transform(), fontsize=8)
    ax.set_xlabel("loop's wall ms per agent step (exclusive time per part)")
    ax.set_ylabel("")
    ax.set_title(f"Enduro x16 envs, A2C: where the loop's time goes ({machine_state}, 2 cores)", loc="right")
    ax.legend(fontsize=7, loc="lower right")
    plt.tight_layout()
    plt.savefig(PNG, dpi=80)
    print(f"wrote {PNG}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("add", help="add (or replace) the row of one harness JSON")
    a.add_argument("json")
    a.add_argument("--config", required=True)
    a.add_argument("--description", required=True)
    a.add_argument("--machine-state", default="idle (only this run)")
    pl = sub.add_parser("plot", help="stacked bars of the rows of one machine state")
    pl.add_argument("--machine-state", default="idle (only this run)")
    args = p.parse_args(argv)
    if args.cmd == "add":
        add(args.json, args.config, args.description, args.machine_state)
    else:
        plot(args.machine_state)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Tables of results/speed/fit_schedule.md from the fit-schedule CSVs and harness JSONs.

    python results/speed/fit_schedule_table.py
"""

from __future__ import annotations

import csv
import json
import statistics as st
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _by_schedule(path: Path) -> dict:
    by: dict = {}
    for r in csv.DictReader(open(path)):
        by.setdefault(r["fit_schedule"], {})[int(r["seed"])] = r
    return by


def pendulum(path: Path, reference: str = "0.1", reference_file: Path | None = None) -> None:
    """``reference_file``: where the paired ratio-0.1 runs are, if not in ``path``."""
    by = _by_schedule(path)
    ref = _by_schedule(reference_file or path).get(reference, {})
    print(f"\n{path.name}\n")
    print("| fit schedule | seeds | median final return | mean (sd) | seeds below -600 | fresh-pair accuracy "
          "| r̂-vs-true corr | val accuracy | comparisons trained | better return than ratio 0.1 (paired) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, seeds in by.items():
        f = {k: [float(r[k]) for r in seeds.values()] for k in
             ("final_return", "true_pref_accuracy_late", "pred_true_corr_late", "val_accuracy_late", "comparisons_trained")}
        ret = f["final_return"]
        paired = [s for s in seeds if s in ref]
        better = "" if name == reference or not paired else \
            f"{sum(float(seeds[s]['final_return']) > float(ref[s]['final_return']) for s in paired)} of {len(paired)}"
        sd = f"{st.stdev(ret):.0f}" if len(ret) > 1 else "-"
        label = f"ratio {name}" if name[0].isdigit() else name
        print(f"| `{label}` | {len(ret)} | {st.median(ret):.0f} | {st.mean(ret):.0f} ({sd}) | {sum(x < -600 for x in ret)} "
              f"| {st.mean(f['true_pref_accuracy_late']):.3f} | {st.mean(f['pred_true_corr_late']):.3f} "
              f"| {st.mean(f['val_accuracy_late']):.3f} | {st.mean(f['comparisons_trained']):,.0f} | {better} |")


def throughput() -> None:
    print("\n| fit schedule | label budget | loop steps/s | raw emulator steps/s | loop/raw | loop/raw by CPU time "
          "| comparisons trained (6,000 steps) | labels |")
    print("|---|---|---|---|---|---|---|---|")
    for path in sorted((HERE / "harness_json").glob("fit_*_b*.json")):
        d = json.loads(path.read_text())
        loop = d["loop"]
        budget = path.stem.rsplit("_b", 1)[1]
        print(f"| `{loop['reward_fit_schedule']}` | {budget} | {loop['steps_per_s']:.0f} | {d['raw_steps_per_s']:.0f} "
              f"| **{d['loop_over_raw']:.3f}x** | {d['loop_over_raw_by_cpu']:.3f}x | {loop['comparisons_trained']} "
              f"| {loop['labels']} |")


if __name__ == "__main__":
    for name in ("fit_schedule_pendulum_500.csv", "fit_schedule_pendulum_150.csv",
                 "fit_schedule_pendulum_150_patient.csv", "fit_schedule_pendulum_150_per_label.csv"):
        if (HERE / name).exists():
            pendulum(HERE / name, reference_file=HERE / ("fit_schedule_pendulum_150.csv" if "_150" in name else name))
    throughput()

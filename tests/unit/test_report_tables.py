"""bench.report_tables on hand-made per-seed values: the what-separates table."""

from __future__ import annotations

import pandas as pd

from bench.report_tables import separation_markdown, separation_table


def _finals(groups: dict[str, list[float]], metric: str = "charts/progress_per_step") -> pd.DataFrame:
    rows = [{"group": g, "method": "true-reward" if g == "true-reward" else "rlhp", "teacher": "",
             "budget": 0 if g == "true-reward" else int(g.split("b")[-1]), metric: v}
            for g, values in groups.items() for v in values]
    return pd.DataFrame(rows)


def _progress(groups):
    from bench.report_tables import progress_table

    return progress_table(_finals(groups))


def test_disjoint_intervals_separate_and_overlapping_ones_do_not():
    table = separation_table(_progress({
        "true-reward": [0.0058, 0.0061, 0.0063],
        "rlhp-b290": [0.0195, 0.0199, 0.0204],
        "rlhp-b5500": [0.0180, 0.0197, 0.0210],
    }))
    verdicts = {(r.X, r.Y): r.verdict for r in table[table["metric"] == "charts/progress_per_step"].itertuples()}
    assert verdicts == {("true-reward", "rlhp-b290"): "Y > X", ("true-reward", "rlhp-b5500"): "Y > X",
                        ("rlhp-b290", "rlhp-b5500"): "overlap"}
    text = separation_markdown(table)
    assert "rlhp-b290 > true-reward (0.0199 [" in text
    assert "Overlapping: rlhp-b290 / rlhp-b5500" in text


def test_two_seeds_are_too_few_to_call_a_separation():
    table = separation_table(_progress({"true-reward": [0.0, 0.0], "rlhp-b290": [5.0, 6.0, 7.0]}))
    assert set(table["verdict"]) == {"too few seeds"}
    assert "no pair separates" in separation_markdown(table)

"""The learner's metrics a sweep report reads, and how it names them: one list for its tables and its plots.

Keys are metrics.csv's column names (rlhp_core.recording), which are also the MLflow metric keys
of a trial run. bench.report_data reads :data:`CURVE_KEYS`, bench.report_tables summarizes
:data:`FINAL_METRICS`, and bench.plots draws the panels.
"""

from __future__ import annotations

RETURN, LABELS = "charts/episodic_return", "labels/answered"

RATE_METRICS = (
    ("charts/gained_per_1k_steps", "gained per 1k agent steps (Enduro: cars passed)"),
    ("charts/progress_per_step", "progress per agent step (Enduro: distance, a speed)"),
    ("charts/lost_per_1k_steps", "lost per 1k agent steps (Enduro: times passed back)"),
)
"""Progress rates of each log window (rlhp_core.episode_stats): logged in every row, unlike
per-episode values. The first is the main progress metric (the pairwise table compares it)."""
FINAL_METRICS = (("value", "final return (mean of the last 10 episodes)"), *RATE_METRICS)
"""What the progress table summarizes per trial: ``value`` is the trial's objective (final return)."""
PROGRESS_PANELS = ((RETURN, "episode return (true)"), *RATE_METRICS)
CUMULATIVE_PANELS = (("charts/cumulative_true_reward", "true reward collected so far (all envs)"),
                     ("charts/cumulative_gained", "gained so far, all envs (Enduro: cars passed)"))
DIAGNOSTIC_PANELS = (("losses/approx_kl", "approx KL (policy update)"), ("losses/clipfrac", "clip fraction"),
                     ("losses/explained_variance", "explained variance (value function)"),
                     ("losses/entropy", "policy entropy"),
                     ("reward/val_accuracy", "reward model: validation accuracy (decisive pairs)"),
                     ("labels/equal_share", "share of labels answered 'equal'"))
CURVE_KEYS = tuple(dict.fromkeys([LABELS, *(k for k, _ in PROGRESS_PANELS + CUMULATIVE_PANELS + DIAGNOSTIC_PANELS)]))
"""The metrics.csv columns the report reads."""
FINAL_FRACTION = 0.1
"""A rate's final value: its mean over the log rows of the last this fraction of a trial's agent steps."""

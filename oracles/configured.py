"""The labeler a run's config names: the one place where a ``labeler`` spec becomes a Labeler.

Specs: a scripted-teacher spec (oracles/teacher.py: a preset such as ``rational`` or
``progress``, with knobs), ``human`` (the labeling page, oracles/human), or ``PRESET+human``
(the teacher answers the initial batch, people the rest). The learner never reads the spec:
the command line and ``bench.sweep`` (the composition roots) build a :class:`ConfiguredLabeler`
and hand it to ``rlhp_core.train.run_training`` as its
:class:`~rlhp_core.labeler.LabelerFactory`.
"""

from __future__ import annotations

from pathlib import Path

from rlhp_core.config import TrainConfig
from rlhp_core.label_store import LabelStore
from rlhp_core.labeler import Labeler, RoutedLabeler

from .scripted import make_labeler
from .teacher import env_defaults

HUMAN = "human"
"""The spec of the labeling page; ``PRESET+human`` routes the initial batch to a teacher."""


class ConfiguredLabeler:
    """Implements :class:`rlhp_core.labeler.LabelerFactory` for a config's ``labeler`` spec."""

    def __init__(self, spec: str):
        self.spec = spec.strip()
        self.human = self.spec == HUMAN or self.spec.endswith(f"+{HUMAN}")
        self.teacher_spec = None if self.spec == HUMAN else self.spec.removesuffix(f"+{HUMAN}")
        self.wants_frames = self.human

    def _teacher(self, cfg: TrainConfig) -> Labeler:
        return make_labeler(self.teacher_spec, seed=cfg.seed, env_id=cfg.env_id, segment_length=cfg.segment_length,
                            episode_end_penalty=cfg.episode_end_penalty)

    def check(self, cfg: TrainConfig) -> None:
        """Build the scripted teacher once (cheap, writes nothing) and import the page's package:
        an unknown preset or knob raises ValueError, a missing page ImportError, before any run."""
        if self.human:
            import oracles.human  # noqa: F401 - the page must be there before the run starts
        if self.teacher_spec is not None:
            self._teacher(cfg)

    def episode_end_penalty(self, cfg: TrainConfig) -> float:
        if cfg.episode_end_penalty is not None:
            return float(cfg.episode_end_penalty)
        return float(env_defaults(cfg.env_id).episode_end_penalty)

    def __call__(self, cfg: TrainConfig, store: LabelStore, status_path: Path) -> Labeler:
        if not self.human:
            return self._teacher(cfg)
        from .human import HumanLabeler

        human = HumanLabeler(store, env_id=cfg.env_id, label_budget=cfg.label_budget, status_path=status_path,
                             host=cfg.extra.get("host", "127.0.0.1"), port=int(cfg.extra.get("port", 0)),
                             goal=cfg.extra.get("goal"))
        print(f"Label at: {human.url}", flush=True)
        if self.teacher_spec is None:
            return human
        return RoutedLabeler(self._teacher(cfg), human, initial=cfg.initial_labels)

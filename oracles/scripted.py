"""The scripted labeler: a :class:`~oracles.teacher.Teacher` behind the learner's Labeler interface.

It goes through the label store exactly as a person does: the queries are stored first
(route ``"oracle"``, no RGB frames: the teacher reads rewards, not pixels), then every answer is
committed with ``labeler = "oracle:<teacher name>"`` and ``labeler_params`` = the teacher's full
record (all knobs, the spec, the env, the seed). A run's labels can therefore be audited,
exported or mixed with people's labels without knowing who produced them.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from rlhp_core.label_store import LabelStore
from rlhp_core.labeler import Labeler
from rlhp_core.segments import Query

from .teacher import Teacher, _SPEC_FORMS, teacher_for_env

__all__ = ["ScriptedLabeler", "make_labeler", "LABELER_SPEC_FORMS"]

ROUTE = "oracle"
"""Route under which scripted queries are stored (people's pages ask for their own route)."""

LABELER_SPEC_FORMS = f"'human', 'PRESET+human' (teacher answers the initial batch), or a teacher spec: {_SPEC_FORMS}"


class ScriptedLabeler:
    """Implements :class:`rlhp_core.labeler.Labeler`; answers every posted query at once."""

    wants_frames = False

    def __init__(self, teacher: Teacher):
        self.teacher = teacher
        self.name = f"oracle:{teacher.name}"

    @property
    def labeler_params(self) -> dict[str, Any]:
        """Stored with every answer: the teacher's knobs and their provenance."""
        return dict(self.teacher.record)

    def post(self, store: LabelStore, queries: Sequence[Query], env_step: int) -> None:
        if not queries:
            return
        answers = self.teacher.answer_batch(queries)
        params = self.labeler_params
        now = time.time()
        store.add_queries(queries, env_step=env_step, route=ROUTE, keep_frames=False,
                          answers=[dict(query_id=q.id, answer=a, labeler=self.name, labeler_params=params,
                                        answered_at=now) for q, a in zip(queries, answers)])

    def close(self) -> None:
        pass

    # -- resume: the learner's checkpoint keeps the teacher's generator state -------------------
    def get_state(self) -> dict:
        return self.teacher.get_state()

    def set_state(self, state: dict) -> None:
        self.teacher.set_state(state)


def _make_human_labeler(spec: str, *, seed: int, env_id: str, **kw: Any) -> Labeler:
    """HOOK: 'human' and 'PRESET+human' are built by oracles.human (not part of this module)."""
    raise ValueError(
        f"labeler {spec!r} needs the human labeler (oracles.human), which is not available here; "
        f"allowed forms: {LABELER_SPEC_FORMS}"
    )


def make_labeler(spec: str, *, seed: int, env_id: str, segment_length: int = 25,
                 episode_end_penalty: float | None = None, reward_per_step: float | None = None,
                 **kw: Any) -> Labeler:
    """Build the labeler a run's ``labeler`` setting names.

    A teacher spec (see :mod:`oracles.teacher`) gives a :class:`ScriptedLabeler` whose generator
    is ``np.random.default_rng(seed)``, with the env's defaults (episode-end penalty; the scale of
    ``skip_eps`` / ``equal_eps``) from :data:`oracles.teacher.ENV_DEFAULTS`.
    ``episode_end_penalty`` / ``reward_per_step`` override that table when not None; other
    keyword arguments are teacher knob defaults (the preset and the spec's own knobs win).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"empty labeler spec; allowed forms: {LABELER_SPEC_FORMS}")
    spec = spec.strip()
    if spec == "human" or spec.endswith("+human"):
        return _make_human_labeler(spec, seed=seed, env_id=env_id, segment_length=segment_length,
                                   episode_end_penalty=episode_end_penalty, reward_per_step=reward_per_step, **kw)
    if "+" in spec:
        raise ValueError(
            f"labeler spec {spec!r}: only 'PRESET+human' may combine labelers; allowed forms: {LABELER_SPEC_FORMS}"
        )
    teacher = teacher_for_env(spec, np.random.default_rng(seed), env_id=env_id, segment_length=segment_length,
                              episode_end_penalty=episode_end_penalty, reward_per_step=reward_per_step,
                              record={"seed": int(seed)}, **kw)
    return ScriptedLabeler(teacher)

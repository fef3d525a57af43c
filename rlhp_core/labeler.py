"""The one interface between the learner and whoever answers its queries.

The arrangement is asynchronous from the start (paper, section 2.2): the learner *posts*
queries into the label store and goes on training; answers arrive in the store whenever the
labeler gives them (at once for a script, seconds later for a person in a browser, possibly
from another thread or process), and the learner reads whatever answers exist each time it
refits the reward model. Nothing here knows who the labeler is: the learner is handed a
:class:`LabelerFactory` by whoever composes the run (the command line and ``bench.sweep`` use
``oracles.configured.ConfiguredLabeler``, which reads the config's ``labeler`` spec).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Sequence, runtime_checkable

from .label_store import LabelStore
from .segments import Query

if TYPE_CHECKING:
    from .config import TrainConfig


@runtime_checkable
class Labeler(Protocol):
    name: str
    """Recorded with every answer (e.g. ``oracle:rational``, ``human``)."""

    wants_frames: bool
    """True when the labeler looks at RGB frames (people); the learner then keeps them."""

    def post(self, store: LabelStore, queries: Sequence[Query], env_step: int) -> None:
        """Put ``queries`` in ``store`` for this labeler. May answer some or all of them at once."""

    def close(self) -> None:
        """Release whatever the labeler holds (a web server, a thread)."""


class LabelerFactory(Protocol):
    """Builds a run's labeler once the learner has opened its label store (a person's page
    serves clips from it), from the run's final config (on a resume: the recorded one)."""

    wants_frames: bool
    """True when the labeler will want RGB frames: the envs must keep them from the start."""

    def episode_end_penalty(self, cfg: TrainConfig) -> float:
        """What an episode end inside a segment costs in the labeler's eyes (the scripted
        teacher's rule), so the learner's reward-quality metrics compare what it compares."""

    def __call__(self, cfg: TrainConfig, store: LabelStore, status_path: Path) -> Labeler:
        """The labeler; ``status_path``: the learner's status.json (a page shows progress from it)."""


class RoutedLabeler:
    """The first ``initial`` queries go to one labeler, the rest to another.

    Used to let a scripted teacher answer the initial batch and people the rest, with the
    same store, the same learner and each answer recording who gave it.
    """

    def __init__(self, first: Labeler, rest: Labeler, initial: int):
        if initial < 0:
            raise ValueError(f"initial must be >= 0, got {initial}")
        self.first, self.rest, self.initial = first, rest, initial
        self.name = f"{first.name}+{rest.name}"
        self.wants_frames = first.wants_frames or rest.wants_frames

    def post(self, store: LabelStore, queries: Sequence[Query], env_step: int) -> None:
        room = max(0, self.initial - store.num_queries())
        if room:
            self.first.post(store, queries[:room], env_step)
        if queries[room:]:
            self.rest.post(store, queries[room:], env_step)

    def close(self) -> None:
        self.first.close()
        self.rest.close()

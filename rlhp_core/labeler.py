"""The one interface between the learner and whoever answers its queries.

The arrangement is asynchronous from the start (paper, section 2.2): the learner *posts*
queries into the label store and goes on training; answers arrive in the store whenever the
labeler gives them (at once for a script, seconds later for a person in a browser, possibly
from another thread or process), and the learner reads whatever answers exist each time it
refits the reward model. Nothing here knows who the labeler is.
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

from .label_store import LabelStore
from .segments import Query


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

"""Trajectory segments: the unit a labeler compares.

A segment is a fixed-length window of one env's stream. The agent sees one continuous
stream (no episode-end signal, as in the paper), so a segment may contain the step where an
episode ended; ``episode_ends`` marks it so that the scripted oracle can apply the paper's
penalty and a person's clip can show the cut. It is never hidden. ``truncations`` says which of
those ends were a time limit (not the agent's doing): the penalty skips them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np

ANSWERS = ("left", "right", "equal", "incomparable")
"""What a labeler may say about a pair. ``incomparable`` is stored but never trained on."""

ANSWER_MU = {"left": (1.0, 0.0), "right": (0.0, 1.0), "equal": (0.5, 0.5)}
"""Target distribution over (left, right) for each trainable answer (paper, section 2.2.3)."""


def check_answer(answer: str) -> str:
    if answer not in ANSWERS:
        raise ValueError(f"answer {answer!r} is not one of {', '.join(ANSWERS)}")
    return answer


@dataclass(frozen=True)
class Segment:
    """A window of ``length`` consecutive steps of one env.

    obs: (T, *obs_shape) what the reward model sees (uint8 stacked frames on Atari).
    actions: (T, *action_shape) the actions taken.
    true_rewards: (T,) float32 env reward, unclipped; only scripted oracles read it.
    episode_ends: (T,) bool, True at a step after which the episode ended (env reset).
    truncations: (T,) bool, True where that end was a time limit and not a termination; None
        (segments stored before this field existed) counts every end as a termination.
    frames: (T, H, W, 3) uint8 raw RGB render for people, or None when not kept.
    progress: (T,) float32 driving progress per step (Enduro: odometer distance, read from the
        emulator's RAM), or None for envs without such a measure; only scripted teachers read it.
    env_index, start_step: where it came from (which env, global step count at its start).
    """

    obs: np.ndarray
    actions: np.ndarray
    true_rewards: np.ndarray
    episode_ends: np.ndarray
    frames: np.ndarray | None = None
    env_index: int = 0
    start_step: int = 0
    extras: dict = field(default_factory=dict)
    truncations: np.ndarray | None = None
    progress: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.obs)
        for name in ("actions", "true_rewards", "episode_ends", "truncations", "progress"):
            if getattr(self, name) is not None and len(getattr(self, name)) != n:
                raise ValueError(f"segment field {name} has length {len(getattr(self, name))}, expected {n}")
        if self.frames is not None and len(self.frames) != n:
            raise ValueError(f"segment frames have length {len(self.frames)}, expected {n}")

    @property
    def length(self) -> int:
        return len(self.obs)

    @property
    def terminations(self) -> np.ndarray:
        """(T,) bool: episode ends that were not a time limit (where the teacher's penalty applies)."""
        ends = np.asarray(self.episode_ends, dtype=bool)
        return ends if self.truncations is None else ends & ~np.asarray(self.truncations, dtype=bool)

    def to_bytes(self, with_frames: bool = True) -> bytes:
        """Compressed npz: how segments travel into the label store."""
        buf = io.BytesIO()
        arrays = dict(
            obs=self.obs,
            actions=self.actions,
            true_rewards=self.true_rewards,
            episode_ends=self.episode_ends,
            meta=np.array([self.env_index, self.start_step], dtype=np.int64),
        )
        for name in ("truncations", "progress"):
            if getattr(self, name) is not None:
                arrays[name] = getattr(self, name)
        if with_frames and self.frames is not None:
            arrays["frames"] = self.frames
        np.savez_compressed(buf, **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes, with_frames: bool = True) -> "Segment":
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            frames = z["frames"] if with_frames and "frames" in z.files else None
            env_index, start_step = (int(v) for v in z["meta"])
            return cls(
                obs=z["obs"],
                actions=z["actions"],
                true_rewards=z["true_rewards"],
                episode_ends=z["episode_ends"],
                frames=frames,
                env_index=env_index,
                start_step=start_step,
                truncations=z["truncations"] if "truncations" in z.files else None,
                progress=z["progress"] if "progress" in z.files else None,
            )


@dataclass(frozen=True)
class Query:
    """A pair of segments to compare, with a stable id (the label store's primary key)."""

    id: str
    left: Segment
    right: Segment

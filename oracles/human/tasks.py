"""What the person is told: one line per environment, and how fast its clips play.

The paper's raters got the goal in one line (Enduro: pass as many cars as you can and don't
get passed). ``fps`` is the env's real-time rate in agent steps per second, so that speed 1x on
the page is real time (Atari: 60 frames/s with frameskip 4 = 15 steps/s).

The line is only a default: a run can tell people another goal (``--goal TEXT``), which is the
point of learning from preferences, teaching a behaviour that no reward describes (Enduro: "keep
alongside other cars" rather than pass them). See :func:`check_goal`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    text: str
    fps: float


GENERIC = Task("Which clip shows the agent doing better at its task? Pick it.", 15.0)

_TASKS: dict[str, Task] = {
    # Atari (agent steps at frameskip 4: 15 per second of play)
    "Enduro": Task("Pass as many cars as you can, and don't get passed.", 15.0),
    "Pong": Task("Win points: get the ball past the opponent (right paddle is yours), and don't miss it.", 15.0),
    "Breakout": Task("Break as many bricks as you can, and don't let the ball fall.", 15.0),
    "SpaceInvaders": Task("Shoot as many invaders as you can, and don't get hit.", 15.0),
    "Seaquest": Task("Shoot sharks and subs and rescue divers; surface before the air runs out.", 15.0),
    "Qbert": Task("Change the colour of as many cubes as you can, and don't fall off or get caught.", 15.0),
    "BeamRider": Task("Destroy as many enemy ships as you can, and don't get hit.", 15.0),
    # Classic control and MuJoCo (steps per second of simulated time)
    "CartPole": Task("Keep the pole balanced upright, with the cart near the middle.", 50.0),
    "Pendulum": Task("Swing the pendulum up and hold it still, pointing straight up.", 20.0),
    "MountainCar": Task("Get the car up the hill to the flag on the right.", 30.0),
    "Acrobot": Task("Swing the end of the lower link up above the line as fast as you can.", 15.0),
    "Hopper": Task("Hop forward (to the right) as fast as you can without falling over.", 125.0),
    "Walker2d": Task("Walk forward (to the right) as fast as you can without falling over.", 125.0),
    "HalfCheetah": Task("Run forward (to the right) as fast as you can.", 20.0),
    "Ant": Task("Move forward (to the right) as fast as you can, staying upright.", 20.0),
    "Swimmer": Task("Swim forward (to the right) as fast as you can.", 25.0),
    "Reacher": Task("Touch the target with the arm's tip, and stay on it.", 50.0),
    "InvertedPendulum": Task("Keep the pole balanced upright.", 25.0),
}


MAX_GOAL_CHARS = 500
"""A goal is read at a glance above the clips: a sentence or two, not a manual."""


def check_goal(goal: object, source: str = "goal") -> str:
    """``goal`` with its whitespace collapsed (one line), if a person can be shown it; ValueError
    naming ``source`` (a flag) otherwise: empty, over MAX_GOAL_CHARS, or with control characters.
    It is shown as text (never as HTML), so any other character is fine."""
    if not isinstance(goal, str):
        raise ValueError(f"{source} must be text, got {type(goal).__name__}")
    text = " ".join(goal.split())
    if not text:
        raise ValueError(f"{source} {goal!r}: expected the goal people are told above the clips, e.g. "
                         f"\"Keep alongside other cars; don't pass them\"; leave the flag out for the env's usual one")
    if len(text) > MAX_GOAL_CHARS:
        raise ValueError(f"{source}: {len(text)} characters, at most {MAX_GOAL_CHARS} (a sentence or two people "
                         f"read at a glance)")
    if not text.isprintable():
        raise ValueError(f"{source} must be printable text (no control characters)")
    return text


def base_name(env_id: str) -> str:
    """'ALE/Enduro-v5' -> 'Enduro'; 'EnduroNoFrameskip-v4' -> 'Enduro'; 'Hopper-v5' -> 'Hopper'."""
    name = env_id.rsplit("/", 1)[-1]
    name = re.sub(r"-v\d+$", "", name)
    return re.sub(r"(NoFrameskip|Deterministic)$", "", name)


def task_for(env_id: str) -> Task:
    """The one-line task for ``env_id``, or the generic fallback."""
    return _TASKS.get(base_name(env_id), GENERIC)

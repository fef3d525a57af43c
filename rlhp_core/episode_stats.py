"""What the agent did, counted from the true reward stream (never shown to the learner).

Enduro is why the episode return alone is not enough: its score is the cars-passed counter,
which starts at 200 cars to go and cannot rise above it, so the return is floored at 0. An
agent that passes 101 cars and is passed back 93 times scores 8; one that passes 11 and is
passed back 11 times scores 0, as does one that never moves. So besides the return we count,
per episode and per log window:

- ``gained``: the sum of the positive rewards (Enduro: cars passed);
- ``lost``: the sum of the negative rewards, as a positive number (Enduro: times passed back);
- ``progress``: the env's driving-progress measure when it has one (``StepBatch.progress``;
  Enduro: odometer distance), else nothing.

An agent step is frameskip emulator frames, so a +1 and a -1 within one step cancel and are
not counted; on Enduro that needs a pass and a pass-back within 4 frames, which is rare.

The run-long counters (cumulative true reward and gains over all envs and steps) make the plot
the project this one grew from showed: reward collected during training against agent steps.
They are checkpointed; the per-episode tallies of episodes in flight are not (the envs are
reset on resume, so those episodes end there).
"""

from __future__ import annotations

from collections import deque

import numpy as np

WINDOW_KEYS = (
    "charts/episodic_return", "charts/episodic_length", "charts/episodic_gained", "charts/episodic_lost",
    "charts/episodic_progress", "charts/gained_per_1k_steps", "charts/lost_per_1k_steps",
    "charts/progress_per_step", "charts/cumulative_true_reward", "charts/cumulative_gained",
)
"""Metric keys :meth:`EpisodeStats.pop_window` may return."""


class EpisodeStats:
    """Per-env tallies of the episodes in flight, finished episodes since the last log, the
    returns of the last 10 episodes (the run's summary), and run-long cumulative counters."""

    def __init__(self, num_envs: int):
        self._ret = np.zeros(num_envs)
        self._gained = np.zeros(num_envs)
        self._lost = np.zeros(num_envs)
        self._progress = np.zeros(num_envs)
        self._length = np.zeros(num_envs, dtype=np.int64)
        self._finished: list[tuple[int, float, int, float, float, float]] = []  # env, return, length, gained, lost, progress
        self._window = np.zeros(4)  # steps, gained, lost, progress since the last log (all envs)
        self._has_progress = False
        self.recent: deque[float] = deque(maxlen=10)
        self.count = 0
        self.cumulative_reward = 0.0
        self.cumulative_gained = 0.0

    def step(self, reward: np.ndarray, ended: np.ndarray, progress: np.ndarray | None = None,
             at_step: int | None = None) -> None:
        """One agent step of every env: its true (unclipped) reward, which envs' episodes ended
        with it, the driving progress made (or None), and the run's agent-step count after it (an
        episode's ``end_step``; None: not known)."""
        reward = np.asarray(reward, dtype=np.float64)
        gained, lost = np.maximum(reward, 0.0), np.maximum(-reward, 0.0)
        self._ret += reward
        self._gained += gained
        self._lost += lost
        self._length += 1
        if progress is not None:
            self._has_progress = True
            self._progress += progress
            self._window[3] += float(np.sum(progress))
        self._window[:3] += (reward.size, gained.sum(), lost.sum())
        self.cumulative_reward += float(reward.sum())
        self.cumulative_gained += float(gained.sum())
        for i in np.flatnonzero(ended):
            self._finished.append((int(i), self._ret[i], int(self._length[i]), self._gained[i], self._lost[i],
                                   self._progress[i], at_step))
            self.recent.append(float(self._ret[i]))
            self.count += 1
            self._ret[i] = self._gained[i] = self._lost[i] = self._progress[i] = 0.0
            self._length[i] = 0

    def pop_window(self) -> dict[str, float]:
        """Metrics of the log window that ends now; per-episode ones only if an episode ended in it."""
        steps, gained, lost, progress = self._window
        out = {"charts/cumulative_true_reward": self.cumulative_reward,
               "charts/cumulative_gained": self.cumulative_gained}
        if steps:
            out["charts/gained_per_1k_steps"] = 1000.0 * gained / steps
            out["charts/lost_per_1k_steps"] = 1000.0 * lost / steps
            if self._has_progress:
                out["charts/progress_per_step"] = progress / steps
        if self._finished:
            ret, length, ep_gained, ep_lost, ep_progress = np.mean(np.array([f[1:6] for f in self._finished]), axis=0)
            out.update({"charts/episodic_return": ret, "charts/episodic_length": length,
                        "charts/episodic_gained": ep_gained, "charts/episodic_lost": ep_lost})
            if self._has_progress:
                out["charts/episodic_progress"] = ep_progress
        self._finished = []
        self._window[:] = 0.0
        return {k: float(v) for k, v in out.items()}

    def window_episodes(self) -> list[dict[str, float]]:
        """The episodes finished in the current window (as :meth:`pop_episodes` gives them), left in
        place for :meth:`pop_window`: the learner writes them to episodes.csv at each log."""
        keys = ("env", "return", "length", "gained", "lost", "progress", "end_step")
        out = []
        for record in self._finished:
            episode = {k: (v if k in ("env", "length", "end_step") else float(v)) for k, v in zip(keys, record)}
            if not self._has_progress:
                del episode["progress"]
            if episode.get("end_step") is None:  # not known (evaluation), or a checkpoint from before it
                episode.pop("end_step", None)
            out.append(episode)
        return out

    def pop_episodes(self) -> list[dict[str, float]]:
        """Each episode finished since the last call, in the order they ended (envs in index order
        within a step): ``env``, ``return``, ``length``, ``gained``, ``lost``, ``end_step`` (the
        run's agent steps when it ended, where known) and, where the env measures it, ``progress``. For evaluation, which needs every episode's numbers (spread,
        min, max, per-env episode quotas) rather than a window's means; it empties the same list
        as :meth:`pop_window`, so a caller uses one or the other."""
        out = self.window_episodes()
        self._finished = []
        return out

    def state_dict(self) -> dict:
        return {"recent_returns": list(self.recent), "episode_count": self.count,
                "cumulative_reward": self.cumulative_reward, "cumulative_gained": self.cumulative_gained}

    def load_state_dict(self, d: dict) -> None:
        self.recent.extend(d["recent_returns"])
        self.count = d["episode_count"]
        self.cumulative_reward = d.get("cumulative_reward", 0.0)  # absent in checkpoints from before it existed
        self.cumulative_gained = d.get("cumulative_gained", 0.0)

    def in_flight_state(self) -> dict:
        """The tallies of the episodes in flight and of the log window: saved only where the envs'
        own state is saved too (otherwise those episodes end at the resume)."""
        return {"tallies": np.stack([self._ret, self._gained, self._lost, self._progress]),
                "length": self._length.copy(), "finished": list(self._finished), "window": self._window.copy(),
                "has_progress": self._has_progress}

    def load_in_flight_state(self, d: dict) -> None:
        self._ret, self._gained, self._lost, self._progress = (np.array(t) for t in d["tallies"])
        self._length = np.array(d["length"])
        self._finished = list(d["finished"])
        self._window = np.array(d["window"])
        self._has_progress = d["has_progress"]

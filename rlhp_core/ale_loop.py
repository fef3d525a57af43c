"""Atari on one ``ale_py.ALEInterface`` per env, for the RAM: Enduro's odometer as driving progress.

Why: Enduro's score (cars passed minus cars passed back, floored at 0) hides whether the agent
drives at all, so the learner logs, and the progress teacher compares, the distance driven.
ALE's C++ vector env (``native``/``rgb`` in :mod:`rlhp_core.envs`) exposes no RAM; an
``ALEInterface`` does. This backend (``atari_backend="ale_loop"``, the default for Enduro)
steps one per env and reads the odometer after every agent step into ``StepBatch.progress``.

Observations: bit-identical to ``native`` (checked on ale-py 0.12.1; other ale-py versions run
other C++ code there), because this is a port of ale-py 0.12's ``PreprocessedEnv``
(``src/ale/vector/preprocessed_env.cpp``) with the same settings as ``AtariVectorEnv`` in
``atari_vec_env.py``: ALE palette gray (``getScreenGrayscale``) of the last two frames of each
agent step, max-pooled; 84x84 with OpenCV ``INTER_AREA``'s own arithmetic
(:class:`rlhp_core.atari_preprocessing._Cv2AreaResize`); blanking (``SCORE_REGIONS``), 4-frame
stack zero-padded after reset; 0-29 no-ops at reset drawn from a ``std::mt19937`` seeded with the
env's seed as libstdc++'s ``uniform_int_distribution`` draws them
(:class:`rlhp_core.ale_env_group._NoopCount`); sticky actions inside ALE (same ``random_seed`` and call
order, so the same repeats); no life-loss signal, no fire-on-reset, unclipped rewards, minimal
action set; truncation at 108,000 frames. One inherited quirk is kept on purpose so the two
stay identical: a step cut short by the episode's end captures no new frame after the cut, so
its final observation max-pools the previous step's pooled frame with whatever this step
captured (native does exactly that). ``tests/unit/test_ale_loop.py`` compares every observation,
final observation, reward and episode end with native over random play on Enduro (sticky
actions, episodes cut every 23 steps) and MsPacman (a game over); checked by hand also on
Pong, more seeds and 2-3 workers: 0 pixels differ.

Speed: ``ALEInterface.act`` holds the GIL (measured: two Python threads emulate no faster than
one), so with ``num_workers > 1`` the envs are split over that many spawned worker processes
(an ``_EnvGroup`` each, results through shared memory), as native splits them over C++
threads; ``num_workers=1`` steps them in this process. Measured side by side (Enduro, 16 envs,
random actions, rounds of 40 steps alternating between the backends, best of 5; the 2-core
machine shared with other jobs, three runs): native with 2 threads 2,780-3,090 env steps/s,
ale_loop with 2 workers 2,250-2,330 (1.24-1.37x slower); native with 1 thread 1,550-1,600,
ale_loop in-process 1,440-1,480 (1.07x slower). CPU per env step: native about 640 us,
ale_loop in-process about 700 us (the emulator dominates; the numpy resize is about 80 us per
env), about 840 us with workers. Not measured on a many-core machine, where native's C++
threads have less per-step overhead than a pipe round trip per worker. Making the env: one
ROM load (~0.1 s) in this process plus about 1 s to start the workers; a seeded reset loads
every env's ROM (~0.1 s each, spread over the workers), as native's does.

Where the parts are: the per-env emulation (:mod:`rlhp_core.ale_env_group`), the RAM reading
(:mod:`rlhp_core.ram_progress`, where Enduro's odometer addresses are documented), the resize
and blanking (:mod:`rlhp_core.atari_preprocessing`); this module holds the worker processes and
the :class:`VecEnv`.
"""

from __future__ import annotations

import multiprocessing as mp
import pickle
import signal
import traceback
import weakref
from typing import Sequence

import gymnasium as gym
import numpy as np

from .ale_env_group import _EnvGroup
from .atari_preprocessing import (
    ALE_MAX_FRAMES_PER_EPISODE,
    FRAME_STACK,
    OBS_SIZE,
    RAW_HEIGHT,
    RAW_WIDTH,
    _atari_blanking,
    atari_info,
)
from .ram_progress import PROGRESS_MEASURES
from .vec_env import StepBatch, VecEnv

__all__ = ["AleLoopVecEnv"]

# ----------------------------------------------------------------------------------------
# Shared memory between this process and the env groups; the worker processes
# ----------------------------------------------------------------------------------------


def _output_specs(num_envs: int, keep_frames: bool, progress: bool) -> dict[str, tuple[tuple, np.dtype]]:
    """Name -> (shape, dtype) of the arrays the env groups read actions from and write results to."""
    specs = {
        "actions": ((num_envs,), np.int64),
        "obs": ((num_envs, OBS_SIZE, OBS_SIZE), np.uint8),
        "final": ((num_envs, OBS_SIZE, OBS_SIZE), np.uint8),
        "reward": ((num_envs,), np.float32),
        "terminated": ((num_envs,), np.bool_),
        "truncated": ((num_envs,), np.bool_),
    }
    if progress:
        specs["progress"] = ((num_envs,), np.float32)
    if keep_frames:
        specs["frames"] = ((num_envs, RAW_HEIGHT, RAW_WIDTH, 3), np.uint8)
    return {k: (shape, np.dtype(dt)) for k, (shape, dt) in specs.items()}


def _layout(specs: dict) -> tuple[dict[str, int], int]:
    """Byte offset of each array in one buffer (8-byte aligned), and the buffer's size."""
    offsets, size = {}, 0
    for name, (shape, dtype) in specs.items():
        offsets[name] = size
        size += -(-int(np.prod(shape)) * dtype.itemsize // 8) * 8
    return offsets, size


def _views(buffer, specs: dict) -> dict[str, np.ndarray]:
    offsets, size = _layout(specs)
    flat = np.frombuffer(buffer, dtype=np.uint8, count=size)
    return {
        name: flat[offsets[name] : offsets[name] + int(np.prod(shape)) * dtype.itemsize].view(dtype).reshape(shape)
        for name, (shape, dtype) in specs.items()
    }


def _worker(conn, buffer, specs: dict, group_args: tuple, group_kwargs: dict) -> None:
    """A worker process: one _EnvGroup, commands from the pipe, results through the shared buffer."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle; it closes us
    try:
        group = _EnvGroup(*group_args, _views(buffer, specs), **group_kwargs)
        conn.send(("ok", group.action_names()))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        return
    while True:
        try:
            command, *args = conn.recv()
        except EOFError:  # the main process is gone
            return
        if command == "close":
            return
        try:
            conn.send(("ok", getattr(group, command)(*args)))
        except BaseException:
            conn.send(("error", traceback.format_exc()))


def _shutdown(conns: list, procs: list) -> None:
    for conn in conns:
        try:
            conn.send(("close",))
        except (OSError, ValueError):
            pass
    for proc in procs:
        proc.join(timeout=5)
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=5)
    for conn in conns:
        conn.close()


# ----------------------------------------------------------------------------------------
# The VecEnv
# ----------------------------------------------------------------------------------------


class AleLoopVecEnv(VecEnv):
    """Atari on per-env ALEInterfaces: native's observations plus a RAM progress measure (module doc).

    ``num_workers`` (1..num_envs): 1 steps the envs in this process; more splits them into that
    many contiguous slices, each in a spawned worker process (the emulator holds the GIL).
    """

    is_atari = True
    backend = "ale_loop"

    def __init__(
        self,
        env_id: str,
        game: str,
        num_envs: int,
        *,
        sticky_actions: float,
        frameskip: int,
        max_episode_steps: int | None,
        keep_frames: bool,
        blank_regions: Sequence[tuple[int, int, int, int]] | None,
        num_workers: int,
    ):
        super().__init__(num_envs, keep_frames)
        valid = isinstance(num_workers, (int, np.integer)) and not isinstance(num_workers, bool)
        if not valid or not 1 <= num_workers <= num_envs:
            raise ValueError(f"num_workers must be an integer in [1, num_envs={num_envs}], got {num_workers!r}")
        self.env_id = env_id
        self.game = game
        regions, boxes, blank_source, mask = _atari_blanking(env_id, game, blank_regions)
        self.blank_mask = mask
        """(84, 84) bool: the observation pixels that are always BLANK_VALUE."""
        measure = PROGRESS_MEASURES.get(game)
        self.progress_name = measure.name if measure else None
        max_frames = ALE_MAX_FRAMES_PER_EPISODE if max_episode_steps is None else max_episode_steps * frameskip
        self._specs = _output_specs(num_envs, keep_frames, measure is not None)
        group_kwargs = dict(sticky_actions=sticky_actions, frameskip=frameskip, max_frames=max_frames, blank_mask=mask)
        self._conns, self._procs, self._group = [], [], None
        self._closed = False
        if num_workers == 1:
            self._out = {k: np.zeros(shape, dtype) for k, (shape, dtype) in self._specs.items()}
            self._group = _EnvGroup(game, 0, num_envs, self._out, **group_kwargs)
            names = self._group.action_names()
        else:
            names = self._start_workers(game, num_workers, group_kwargs)
        self.action_space = gym.spaces.Discrete(len(names))
        self.action_meanings = names
        self.obs_shape = (FRAME_STACK, OBS_SIZE, OBS_SIZE)
        self.obs_dtype = np.dtype(np.uint8)
        self._stack = np.zeros((num_envs, *self.obs_shape), dtype=np.uint8)
        self._needs_reset = True
        self.info = {
            **atari_info(env_id, game, num_envs, frameskip=frameskip, sticky_actions=sticky_actions,
                         max_frames=max_frames, obs_shape=self.obs_shape, regions=regions, boxes=boxes,
                         blank_source=blank_source, keep_frames=keep_frames),
            "backend": "ale_loop: an ale_py.ALEInterface per env, stepped in Python (ale-py 0.12's PreprocessedEnv)",
            "pipeline": "ALE palette gray, max-pool last 2 frames; numpy: cv2 INTER_AREA 84x84 (exact), blank, stack 4",
            "num_workers": num_workers,
            "progress": measure.description if measure else None,
            "progress_name": self.progress_name,
        }

    def _start_workers(self, game: str, num_workers: int, group_kwargs: dict) -> list[str]:
        if mp.current_process().daemon:
            raise ValueError(f"num_workers={num_workers} needs child processes, which a daemonic process cannot "
                             f"start; pass num_threads=1 to make_vec_env to step the envs in this process")
        # spawn, not fork: the learner has torch (and maybe CUDA) threads that a fork would copy mid-state.
        ctx = mp.get_context("spawn")
        _, size = _layout(self._specs)
        buffer = ctx.RawArray("B", size)
        self._out = _views(buffer, self._specs)
        bounds = np.linspace(0, self.num_envs, num_workers + 1).round().astype(int)
        self._bounds = list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))
        for lo, hi in self._bounds:
            parent, child = ctx.Pipe()
            args = (child, buffer, self._specs, (game, int(lo), int(hi)), group_kwargs)
            proc = ctx.Process(target=_worker, args=args, daemon=True, name=f"ale_loop[{lo}:{hi}]")
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        self._finalizer = weakref.finalize(self, _shutdown, self._conns, self._procs)
        try:
            return self._gather()[0]
        except RuntimeError:
            self.close()
            raise

    def _gather(self) -> list:
        """Every worker's reply to the last command; RuntimeError with the worker's traceback on failure."""
        replies, errors = [], []
        for conn, proc in zip(self._conns, self._procs):
            try:
                status, value = conn.recv()
            except EOFError:
                proc.join(timeout=5)
                errors.append(
                    f"{proc.name} exited (exit code {proc.exitcode}; its stderr says why). Workers are spawned, "
                    f"which re-imports the main script: a script that builds envs at import time needs an "
                    f"`if __name__ == '__main__':` guard (or pass num_threads=1 to step the envs in-process)"
                )
                continue
            if status == "ok":
                replies.append(value)
            else:
                errors.append(f"{proc.name} failed:\n{value}")
        if errors:
            raise RuntimeError("ale_loop worker error: " + "\n".join(errors))
        return replies

    def _run(self, command: str, *args) -> list:
        """``command`` on every env group; their return values, in env order."""
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        if self._group is not None:
            return [getattr(self._group, command)(*args)]
        for conn in self._conns:
            conn.send((command, *args))
        return self._gather()

    def get_state(self) -> bytes | None:
        """The emulators (ALE's cloneState with its random generator), the preprocessing's frames
        and counters, the frame stacks and the episode tallies: a run resumed from it continues
        these very episodes, bit for bit. None before the first reset."""
        if self._needs_reset:
            return None
        per_env = [st for group in self._run("get_state") for st in group]
        return pickle.dumps({"envs": per_env, "stack": self._stack.copy(), "ep_return": self._ep_return.copy(),
                             "ep_length": self._ep_length.copy()})

    def set_state(self, state: bytes) -> None:
        saved = pickle.loads(state)  # noqa: S301 - our own checksummed checkpoint
        envs = saved["envs"]
        if len(envs) != self.num_envs:
            raise ValueError(f"env state holds {len(envs)} envs, this run has {self.num_envs}")
        if self._group is not None:
            self._group.set_state(envs)
        else:  # each worker its own slice (the split may differ from the saving run's)
            for conn, (lo, hi) in zip(self._conns, self._bounds):
                conn.send(("set_state", envs[lo:hi]))
            self._gather()
        self._stack[:] = saved["stack"]
        self._ep_return[:] = saved["ep_return"]
        self._ep_length[:] = saved["ep_length"]
        self._needs_reset = False

    def reset(self, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= 2**31 - self.num_envs:
            raise ValueError(f"seed must be an integer in [0, 2**31 - num_envs], got {seed!r} (env i gets seed + i)")
        self._run("reset", int(seed))
        self._reset_tracking()
        self._needs_reset = False
        self._stack[:] = 0
        self._stack[:, -1] = self._out["obs"]
        frames = self._out["frames"].copy() if self.keep_frames else None
        return self._stack.copy(), frames

    def step(self, actions: np.ndarray) -> StepBatch:
        if self._needs_reset:
            raise RuntimeError("call reset(seed) before step()")
        self._out["actions"][:] = self._check_actions(actions)
        self._run("step")
        out = self._out
        reward = out["reward"].copy()
        terminated = out["terminated"].copy()
        truncated = out["truncated"].copy()
        done = terminated | truncated
        idx = np.flatnonzero(done)
        stack = self._stack
        stack[:, :-1] = stack[:, 1:]
        stack[:, -1] = out["obs"]
        final_obs = stack.copy()
        if idx.size:
            final_obs[idx, -1] = out["final"][idx]
            stack[idx, :-1] = 0
        return StepBatch(
            obs=stack.copy(),
            reward=reward,
            terminated=terminated,
            truncated=truncated,
            final_obs=final_obs,
            frames=out["frames"].copy() if self.keep_frames else None,
            episodes=self._track_episodes(reward, done),
            progress=out["progress"].copy() if self.progress_name else None,
        )

    def close(self) -> None:
        if self._procs:
            self._finalizer()
        self._group = None
        self._closed = True

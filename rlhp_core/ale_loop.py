"""Atari on one ``ale_py.ALEInterface`` per env, for the RAM: Enduro's odometer as driving progress.

Why: Enduro's score (cars passed minus cars passed back, floored at 0) hides whether the agent
drives at all, so the learner logs, and the progress teacher compares, the distance driven.
ALE's C++ vector env (``native``/``rgb`` in :mod:`rlhp_core.envs`) exposes no RAM; an
``ALEInterface`` does. This backend (``atari_backend="ale_loop"``, the default for Enduro)
steps one per env and reads the odometer after every agent step into ``StepBatch.progress``.

Observations: bit-identical to ``native`` (checked on ale-py 0.12.1; other ale-py versions run
other C++ code there), because this is a port of ale-py 0.12's ``PreprocessedEnv``
(``src/ale/vector/preprocessed_env.cpp``) with the same settings as ``AtariVectorEnv`` in
``envs.py``: ALE palette gray (``getScreenGrayscale``) of the last two frames of each agent
step, max-pooled; 84x84 with OpenCV ``INTER_AREA``'s own arithmetic (:class:`_Cv2AreaResize`);
blanking (``SCORE_REGIONS``), 4-frame stack zero-padded after reset; 0-29 no-ops at reset drawn
from a ``std::mt19937`` seeded with the env's seed as libstdc++'s ``uniform_int_distribution``
draws them (:class:`_NoopCount`); sticky actions inside ALE (same ``random_seed`` and call
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

Enduro RAM (``getRAM()[i]`` is address ``0x80 + i``), found by recording RAM over 1,500
always-accelerate steps and reading the odometer off the screen (digits on rows 165-171,
8-pixel cells from column 64) and checked in ``tests/unit/test_ale_loop.py``:

- odometer: the panel shows ``dddd`` and a rolling tenths digit; RAM holds it as BCD tenths
  (``0xAA`` thousands in its low nibble, ``0xA9`` hundreds|tens, ``0xA8`` units|tenths) plus a
  binary fraction byte ``0xA7`` in 1/256 of a tenth that carries into ``0xA8`` exactly when it
  wraps. ``0xAA`` was found by setting the odometer to 999.9 (``setRAM``) and driving: it went
  to 1 and the panel read ``1001``.
- speed ``0x96``, binary: 0 at reset, 6 from the first frame of play (the race starts at
  reset, ALE presses FIRE; braking or no-op never goes below 6), up to 74 seen while
  accelerating (JAXAtari's notes on the ROM give 120 as the top). The fraction byte grows by
  speed/2 per frame, so one agent step of 4 frames drives 2 x speed 1/2560-units.

Progress = the odometer's increase over the agent step in odometer units (the panel's
reading, whose last digit is tenths), to 1/2560: 12/2560 = 0.0047 per step at the minimum
speed. The step that ends an episode counts up to its end; the reset starts a new baseline.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import pickle
import signal
import traceback
import weakref
from dataclasses import dataclass
from typing import Callable, Sequence

import ale_py
import gymnasium as gym
import numpy as np
from ale_py import roms

from .envs import (
    atari_info,
    ALE_MAX_FRAMES_PER_EPISODE,
    BLANK_VALUE,
    FRAME_STACK,
    NOOP_MAX,
    OBS_SIZE,
    RAW_HEIGHT,
    RAW_WIDTH,
    StepBatch,
    VecEnv,
    _atari_blanking,
)

__all__ = ["AleLoopVecEnv", "PROGRESS_MEASURES", "enduro_odometer"]

# ----------------------------------------------------------------------------------------
# Enduro RAM: indices into ALEInterface.getRAM() (address - 0x80)
# ----------------------------------------------------------------------------------------

ENDURO_ODOMETER_FRACTION = 0xA7 - 0x80
"""Binary, 1/256 of a tenth; grows by speed/2 per frame and carries into the tenths digit when it wraps."""
ENDURO_ODOMETER_UNITS_TENTHS = 0xA8 - 0x80
"""BCD: units digit (high nibble), tenths digit (low nibble)."""
ENDURO_ODOMETER_HUNDREDS_TENS = 0xA9 - 0x80
"""BCD: hundreds digit (high nibble), tens digit (low nibble)."""
ENDURO_ODOMETER_THOUSANDS = 0xAA - 0x80
"""BCD: thousands digit (low nibble; the high nibble would be ten-thousands, which the panel never draws)."""
ENDURO_SPEED = 0x96 - 0x80
"""Binary speed: 0 at reset, 6 (the minimum) from the first frame of play, up."""
ODOMETER_FINE_PER_UNIT = 2560
"""Odometer fine counts (the fraction byte's units) per odometer unit: 256 per tenth."""


def _bcd(b: np.ndarray) -> np.ndarray:
    b = b.astype(np.int64)
    return (b >> 4) * 10 + (b & 15)


def enduro_odometer(ram: np.ndarray) -> np.ndarray:
    """(N, 128) uint8 RAM -> (N,) int64 odometer in fine counts (1/2560 of the panel's unit)."""
    tenths = (
        _bcd(ram[:, ENDURO_ODOMETER_THOUSANDS]) * 10_000
        + _bcd(ram[:, ENDURO_ODOMETER_HUNDREDS_TENS]) * 100
        + _bcd(ram[:, ENDURO_ODOMETER_UNITS_TENTHS])
    )
    return tenths * 256 + ram[:, ENDURO_ODOMETER_FRACTION]


@dataclass(frozen=True)
class ProgressMeasure:
    """A game's driving-progress reading from RAM (what ``StepBatch.progress`` differences)."""

    name: str
    """``VecEnv.progress_name``."""
    read: Callable[[np.ndarray], np.ndarray]
    """(N, 128) uint8 RAM -> (N,) int64 counter that only grows during an episode."""
    per_unit: int
    """Counter counts per progress unit."""
    description: str
    """For ``info``: what is read, from where, in which unit."""


PROGRESS_MEASURES: dict[str, ProgressMeasure] = {
    "enduro": ProgressMeasure(
        name="distance",
        read=enduro_odometer,
        per_unit=ODOMETER_FINE_PER_UNIT,
        description=(
            "Enduro odometer increase per agent step, in odometer units (the panel's reading, last "
            "digit tenths; 0.0047 per step at the minimum speed): RAM 0xAA (BCD thousands), 0xA9 "
            "(BCD hundreds|tens), 0xA8 (BCD units|tenths), 0xA7 (binary 1/256 of a tenth); speed at 0x96"
        ),
    ),
}
"""Games with a progress measure; every other game gets ``progress=None``."""

# ----------------------------------------------------------------------------------------
# Pieces that reproduce ALE's native preprocessing
# ----------------------------------------------------------------------------------------


def _cv2_area_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """(taps, n_out) source indices and float32 weights of OpenCV's ``computeResizeAreaTab``.

    Same tap order and float32 weights as OpenCV (the 1e-3 cut-offs included), so summing them
    in order in float32 gives OpenCV's result bit for bit; missing taps get weight 0 (adding
    +0.0 changes no float). Only the non-integer-scale path, which 210->84 and 160->84 take.
    """
    scale = 1.0 / (n_out / n_in)  # as cv::resize computes it
    per_out = []
    for d in range(n_out):
        f1 = d * scale
        f2 = f1 + scale
        cell = min(scale, n_in - f1)
        s2 = min(math.floor(f2), n_in - 1)
        s1 = min(math.ceil(f1), s2)
        taps = []
        if s1 - f1 > 1e-3:
            taps.append((s1 - 1, (s1 - f1) / cell))
        taps += [(s, 1.0 / cell) for s in range(s1, s2)]
        if f2 - s2 > 1e-3:
            taps.append((s2, min(f2 - s2, 1.0, cell) / cell))
        per_out.append(taps)
    n_taps = max(len(t) for t in per_out)
    index = np.zeros((n_taps, n_out), dtype=np.intp)
    weight = np.zeros((n_taps, n_out), dtype=np.float32)
    for d, taps in enumerate(per_out):
        index[:, d] = taps[-1][0]
        for k, (s, w) in enumerate(taps):
            index[k, d] = s
            weight[k, d] = np.float32(w)
    return index, weight


class _Cv2AreaResize:
    """uint8 gray (n, 210, 160) -> (n, 84, 84) exactly as ``cv2.resize(..., INTER_AREA)``.

    ALE's native backend resizes with OpenCV, which is not installed here: OpenCV sums each
    source row's taps in float32 (columns), then the rows' weighted sums in float32, then
    rounds half to even. Doing the same float32 operations in the same order in numpy gives
    the same bytes (checked on Enduro, Pong and MsPacman: 0 of 4.2M pixels differ). Numpy
    ufuncs and gathers only: no BLAS, whose threads would fight the learner for the CPU.
    """

    def __init__(self):
        self.col_index, self.col_weight = _cv2_area_taps(RAW_WIDTH, OBS_SIZE)
        self.row_index, self.row_weight = _cv2_area_taps(RAW_HEIGHT, OBS_SIZE)
        self.row_weight = self.row_weight[:, :, None]

    def __call__(self, gray: np.ndarray) -> np.ndarray:
        cols = np.take(gray, self.col_index[0], axis=2) * self.col_weight[0]
        for t in range(1, len(self.col_index)):
            cols += np.take(gray, self.col_index[t], axis=2) * self.col_weight[t]
        out = np.take(cols, self.row_index[0], axis=1) * self.row_weight[0]
        for t in range(1, len(self.row_index)):
            out += np.take(cols, self.row_index[t], axis=1) * self.row_weight[t]
        return np.rint(out, out=out).astype(np.uint8)


class _NoopCount:
    """Reset no-op counts as native draws them: ``std::uniform_int_distribution<int>(0, n - 1)``
    over a ``std::mt19937`` seeded with the env's seed.

    numpy's legacy ``RandomState(seed)`` is the same Mersenne Twister with the same integer
    seeding, and a full-range uint32 draw returns its raw output. libstdc++ since GCC 11 maps
    it to [0, n) by Lemire's multiply-and-shift with rejection (older libstdc++ divides and
    rejects, which gives the same count but for about one draw in 10^7 when n = 30). The counts
    matter (a wrong one shifts the first frames) and match native's on every reset tested.
    """

    def __init__(self, n: int):
        self.n = n
        self.threshold = (2**32 - n) % n
        self.mt = np.random.RandomState(0)

    def seed(self, seed: int) -> None:
        self.mt = np.random.RandomState(seed)

    def draw(self) -> int:
        while True:
            product = int(self.mt.randint(0, 2**32, dtype=np.uint32)) * self.n
            if (product & 0xFFFFFFFF) >= self.threshold:
                return product >> 32


# ----------------------------------------------------------------------------------------
# The per-env loop over a slice of the envs (in this process or in a worker)
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


class _EnvGroup:
    """Envs ``lo..hi-1`` of the batch: one ALEInterface each, stepped as native's PreprocessedEnv.

    Reads ``out["actions"][lo:hi]``; writes each env's newest blanked 84x84 frame (``obs``; the
    new episode's first where one ended), the ended episode's last (``final``), reward, ends,
    progress and RGB frames into ``out[...][lo:hi]``. The main process stacks the frames.
    """

    def __init__(self, game: str, lo: int, hi: int, out: dict[str, np.ndarray], *, sticky_actions: float,
                 frameskip: int, max_frames: int, blank_mask: np.ndarray):
        ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
        self.rom = roms.get_rom_path(game)
        if self.rom is None:
            raise ValueError(f"no ALE ROM named {game!r} (ROM names are snake_case, e.g. 'enduro', 'ms_pacman')")
        self.lo = lo
        n = hi - lo
        self.ales = []
        for _ in range(n):
            ale = ale_py.ALEInterface()
            ale.setFloat("repeat_action_probability", float(sticky_actions))
            self.ales.append(ale)
        # The ROM is (re)loaded by every seeded reset, as native does; only one load here, for the action set.
        self.ales[0].loadROM(self.rom)
        self.action_set = self.ales[0].getMinimalActionSet()
        self.frameskip = frameskip
        self.max_frames = max_frames
        self.blank_mask = blank_mask
        self.blank_any = bool(blank_mask.any())
        self.resize = _Cv2AreaResize()
        self.out = {k: v[lo:hi] for k, v in out.items()}
        self.measure = PROGRESS_MEASURES.get(game) if "progress" in out else None
        self.keep_frames = "frames" in out
        # Native keeps two raw frames per env: [1] the second-to-last frame of the step, [0] the
        # last, which after pooling holds the pooled frame (the stale input of a cut-short step).
        self.gray = np.zeros((n, 2, RAW_HEIGHT, RAW_WIDTH), dtype=np.uint8)
        self.rgb = np.zeros((n, 2, RAW_HEIGHT, RAW_WIDTH, 3), dtype=np.uint8) if self.keep_frames else None
        self.ram = np.zeros((n, 128), dtype=np.uint8)
        self.odometer = np.zeros(n, dtype=np.int64)
        self.elapsed = [0] * n
        self.noops = [_NoopCount(NOOP_MAX) for _ in range(n)]

    def action_names(self) -> list[str]:
        return [a.name for a in self.action_set]

    # -- pieces --------------------------------------------------------------------------------
    def _capture(self, j: int, slot: int) -> None:
        self.ales[j].getScreenGrayscale(self.gray[j, slot])
        if self.keep_frames:
            self.ales[j].getScreenRGB(self.rgb[j, slot])

    def _start_episode(self, j: int) -> None:
        """ALE reset, 0..NOOP_MAX-1 no-ops, first frame into slot 0 and zeros into slot 1."""
        ale = self.ales[j]
        ale.reset_game()
        for _ in range(self.noops[j].draw()):
            ale.act(ale_py.Action.NOOP)
            if ale.game_over():
                ale.reset_game()
        self._capture(j, 0)
        self.gray[j, 1] = 0
        if self.keep_frames:
            self.rgb[j, 1] = 0
        self.elapsed[j] = 0

    def _frames_out(self, idx: np.ndarray | slice) -> None:
        """Pool and preprocess the envs ``idx`` into ``out["obs"]`` (and their RGB into ``out["frames"]``)."""
        gray = self.gray[idx]
        pooled = np.maximum(gray[:, 0], gray[:, 1])
        self.gray[idx, 0] = pooled
        obs = self.resize(pooled)
        if self.blank_any:
            obs[:, self.blank_mask] = BLANK_VALUE
        self.out["obs"][idx] = obs
        if self.keep_frames:
            rgb = self.rgb[idx]
            pooled_rgb = np.maximum(rgb[:, 0], rgb[:, 1])
            self.rgb[idx, 0] = pooled_rgb
            self.out["frames"][idx] = pooled_rgb

    def _read_odometer(self, idx: Sequence[int]) -> np.ndarray:
        for j in idx:
            self.ales[j].getRAM(self.ram[j])
        return self.measure.read(self.ram[list(idx)])

    # -- commands --------------------------------------------------------------------------------
    def reset(self, seed: int) -> None:
        """Env ``lo + j`` gets seed ``seed + lo + j``: ALE's random_seed (sticky actions), no-op RNG, ROM reload."""
        for j, ale in enumerate(self.ales):
            s = seed + self.lo + j
            ale.setInt("random_seed", s)
            self.noops[j].seed(s)
            ale.loadROM(self.rom)
            self._start_episode(j)
        self._frames_out(slice(None))
        if self.measure is not None:
            self.odometer[:] = self._read_odometer(range(len(self.ales)))

    def get_state(self) -> list[dict]:
        """Per env: the emulator with its random generator (sticky actions), the no-op generator,
        the two raw frames native keeps, the odometer reading and the frames elapsed."""
        return [{"ale": ale.cloneState(include_rng=True), "noops": self.noops[j].mt.get_state(),
                 "gray": self.gray[j].copy(), "rgb": None if self.rgb is None else self.rgb[j].copy(),
                 "odometer": int(self.odometer[j]), "elapsed": self.elapsed[j]}
                for j, ale in enumerate(self.ales)]

    def set_state(self, states: list[dict]) -> None:
        if len(states) != len(self.ales):
            raise ValueError(f"env state for {len(states)} envs given to a group of {len(self.ales)}")
        if any((st["rgb"] is None) != (self.rgb is None) for st in states):
            raise ValueError("env state was saved with keep_frames different from this env's")
        for j, (ale, st) in enumerate(zip(self.ales, states)):
            ale.loadROM(self.rom)
            ale.restoreState(st["ale"])
            self.noops[j].mt.set_state(st["noops"])
            self.gray[j] = st["gray"]
            if self.rgb is not None:
                self.rgb[j] = st["rgb"]
            self.odometer[j] = st["odometer"]
            self.elapsed[j] = st["elapsed"]

    def step(self) -> None:
        actions = self.out["actions"]
        reward, terminated, truncated = self.out["reward"], self.out["terminated"], self.out["truncated"]
        for j, ale in enumerate(self.ales):
            action = self.action_set[actions[j]]
            total = 0
            over = False
            elapsed = self.elapsed[j]
            for skip in range(self.frameskip, 0, -1):
                total += ale.act(action)
                elapsed += 1
                over = ale.game_over()
                if over or elapsed >= self.max_frames:
                    break
                if skip <= 2:
                    self._capture(j, skip - 1)
            self.elapsed[j] = elapsed
            reward[j] = total
            terminated[j] = over
            truncated[j] = not over and elapsed >= self.max_frames
        self._frames_out(slice(None))
        if self.measure is not None:
            reading = self._read_odometer(range(len(self.ales)))
            self.out["progress"][:] = (reading - self.odometer) / self.measure.per_unit
            self.odometer[:] = reading
        ended = np.flatnonzero(terminated | truncated)
        if ended.size:
            self.out["final"][ended] = self.out["obs"][ended]
            for j in ended:
                self._start_episode(j)
            self._frames_out(ended)
            if self.measure is not None:
                self.odometer[ended] = self._read_odometer(ended)


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

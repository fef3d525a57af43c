"""The emulation half of the ``ale_loop`` backend: :class:`_EnvGroup` steps envs ``lo..hi-1``, one
``ale_py.ALEInterface`` each, as ale-py 0.12's ``PreprocessedEnv`` does (in the main process or in
a worker), and :class:`_NoopCount` draws the reset no-ops as native does. What is reproduced, and
how it was checked: :mod:`rlhp_core.ale_loop`.
"""

from __future__ import annotations

from typing import Sequence

import ale_py
import numpy as np
from ale_py import roms

from .atari_preprocessing import BLANK_VALUE, NOOP_MAX, RAW_HEIGHT, RAW_WIDTH, _Cv2AreaResize
from .ram_progress import PROGRESS_MEASURES


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

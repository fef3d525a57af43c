"""Atari observations as the paper made them, for every Atari backend: the constants (screen,
84x84, 4 frames, 0-29 no-ops, ALE's episode cap), score blanking (:data:`SCORE_REGIONS` and its
84x84 mask), the two area resizes (the ``rgb`` backend's from RGB, and OpenCV ``INTER_AREA``'s own
arithmetic for ``ale_loop``), and the settings each backend records (:func:`atari_info`).

The backends and why there are three: :mod:`rlhp_core.envs`.
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np

from .vec_env import _version

__all__ = ["BLANK_VALUE", "SCORE_REGIONS", "atari_info"]

RAW_HEIGHT, RAW_WIDTH = 210, 160
"""Every ALE game's screen size."""
OBS_SIZE = 84
FRAME_STACK = 4
NOOP_MAX = 30
ALE_MAX_FRAMES_PER_EPISODE = 108_000
"""ALE's v5 default episode cap in emulator frames (27,000 agent steps at frameskip 4)."""
BLANK_VALUE = 0
"""Gray level written over blanked pixels of the 84x84 observation (black, as in the paper)."""
LUMA = (0.299, 0.587, 0.114)
"""ALE's grayscale palette is round(0.299 R + 0.587 G + 0.114 B) of its RGB palette (checked on Enduro's colours)."""

SCORE_REGIONS: dict[str, tuple[tuple[int, int, int, int], ...]] = {
    # (row0, row1, col0, col1), half-open, in raw 210x160 screen pixels. Found by playing each
    # game (random actions; accelerate on Enduro), saving frames as PNG and looking, then
    # listing which rows change over time. What each covers, and what stays visible:
    # Enduro: the road ends at row 154; rows 161-190 (cols 48-111) hold the odometer, the day
    # number and the cars-left-to-pass counter (the reward!); rows 196-202 the Activision logo.
    "enduro": ((155, 210, 0, 160),),
    # Pong: both scores at rows 1-20; the white top wall starts at row 24 (kept visible).
    "pong": ((0, 24, 0, 160),),
    # Breakout: score, lives and player number at rows 5-14; the grey wall starts at row 17.
    "breakout": ((0, 17, 0, 160),),
    # SpaceInvaders: both players' scores at rows 10-19; the invaders start at row 31.
    "space_invaders": ((0, 25, 0, 160),),
    # Seaquest: score at rows 9-16 (the sky); reserve subs at rows 22-29 stay visible.
    "seaquest": ((0, 19, 0, 160),),
    # Qbert: 5-digit score at rows 6-12, cols 34-70 (lives icons below it stay visible;
    # Q*bert jumping off the top cube reaches row 13, right of col 64).
    "qbert": ((0, 13, 32, 72),),
    # BeamRider: score (rows 10-17), sector (21-28) and enemies-left counter (32-39); the
    # first beam is at row 43.
    "beam_rider": ((0, 42, 0, 160),),
    # MsPacman: score at rows 187-193 under the maze (which ends at row 171); lives and
    # fruit at rows 173-182 stay visible.
    "ms_pacman": ((183, 210, 0, 160),),
}


def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of area-average downsampling (cv2 INTER_AREA for n_in >= n_out)."""
    m = np.zeros((n_out, n_in), dtype=np.float64)
    scale = n_in / n_out
    for i in range(n_out):
        lo, hi = i * scale, (i + 1) * scale
        for j in range(int(np.floor(lo)), min(n_in, int(np.ceil(hi)))):
            m[i, j] = max(0.0, min(hi, j + 1) - max(lo, j))
    return m / scale


def _blank_masks(regions: Sequence[tuple[int, int, int, int]]) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """84x84 bool mask of pixels whose source footprint touches any raw region, and the 84x84 boxes."""
    mask = np.zeros((OBS_SIZE, OBS_SIZE), dtype=bool)
    boxes = []
    sy, sx = RAW_HEIGHT / OBS_SIZE, RAW_WIDTH / OBS_SIZE
    for r0, r1, c0, c1 in regions:
        if not (0 <= r0 < r1 <= RAW_HEIGHT and 0 <= c0 < c1 <= RAW_WIDTH):
            raise ValueError(
                f"blank region {(r0, r1, c0, c1)} must be (row0, row1, col0, col1) with "
                f"0 <= row0 < row1 <= {RAW_HEIGHT} and 0 <= col0 < col1 <= {RAW_WIDTH}"
            )
        # output i covers [i*s, (i+1)*s): it touches [a, b) iff i*s < b and (i+1)*s > a
        i0 = int(np.floor(r0 / sy))
        i1 = int(np.ceil(r1 / sy))
        j0 = int(np.floor(c0 / sx))
        j1 = int(np.ceil(c1 / sx))
        mask[i0:i1, j0:j1] = True
        boxes.append((i0, i1, j0, j1))
    return mask, boxes


class _AtariPreprocessor:
    """RGB (N, 210, 160, 3) uint8 -> blanked gray (N, 84, 84) uint8, vectorised over N.

    Rows: 210 -> 84 is 5 -> 2, so the area weights are exact integers (2, 2, 1 | 1, 2, 2) / 5,
    summed in uint16. Then gray (ALE's luma), then columns 160 -> 84 as at most 3 weighted
    taps per output column. Only numpy ufuncs and gathers, no BLAS: a matmul here would
    start OpenBLAS threads that fight the learner for the CPU (measured 15x slower under load).
    """

    def __init__(self, blank_mask: np.ndarray):
        self.blank_mask = blank_mask
        self.blank_any = bool(blank_mask.any())
        self.luma = tuple(np.float32(w) for w in LUMA)
        cols = _area_matrix(RAW_WIDTH, OBS_SIZE)  # (84, 160)
        taps = int((cols > 0).sum(1).max())
        self.tap_index = np.zeros((taps, OBS_SIZE), dtype=np.intp)
        self.tap_weight = np.zeros((taps, OBS_SIZE), dtype=np.float32)
        for k in range(OBS_SIZE):
            nz = np.flatnonzero(cols[k] > 0)
            self.tap_index[:, k] = nz[-1]
            self.tap_index[: len(nz), k] = nz
            self.tap_weight[: len(nz), k] = cols[k, nz] / 5.0  # /5: the integer row weights' sum

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        n = rgb.shape[0]
        x = rgb.reshape(n, RAW_HEIGHT // 5, 5, RAW_WIDTH * 3)
        rows = np.empty((n, RAW_HEIGHT // 5, 2, RAW_WIDTH * 3), dtype=np.uint16)
        even, odd = rows[:, :, 0], rows[:, :, 1]
        np.add(x[:, :, 0], x[:, :, 1], out=even, dtype=np.uint16)
        even <<= 1
        even += x[:, :, 2]
        np.add(x[:, :, 3], x[:, :, 4], out=odd, dtype=np.uint16)
        odd <<= 1
        odd += x[:, :, 2]
        rows = rows.reshape(n, OBS_SIZE, RAW_WIDTH, 3)
        gray = rows[..., 0] * self.luma[0]
        gray += rows[..., 1] * self.luma[1]
        gray += rows[..., 2] * self.luma[2]
        out = gray[:, :, self.tap_index[0]] * self.tap_weight[0]
        for t in range(1, len(self.tap_index)):
            out += gray[:, :, self.tap_index[t]] * self.tap_weight[t]
        out += 0.5
        out = out.astype(np.uint8)
        if self.blank_any:
            out[:, self.blank_mask] = BLANK_VALUE
        return out


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


def _atari_blanking(env_id: str, game: str, blank_regions) -> tuple[tuple, list, str, np.ndarray]:
    """(raw regions, their 84x84 boxes, where they came from, 84x84 mask); warns for a game without regions."""
    if blank_regions is not None:
        regions = tuple(tuple(int(v) for v in r) for r in blank_regions)
        blank_source = "given by caller"
    elif game in SCORE_REGIONS:
        regions = SCORE_REGIONS[game]
        blank_source = f"SCORE_REGIONS[{game!r}]"
    else:
        regions = ()
        blank_source = f"none: {game!r} has no entry in rlhp_core.atari_preprocessing.SCORE_REGIONS (pass blank_regions=...)"
        warnings.warn(f"{env_id}: no score-blanking regions known for game {game!r}; the reward model may read "
                      f"the score off the screen. Known games: {sorted(SCORE_REGIONS)}", stacklevel=4)
    mask, boxes = _blank_masks(regions)
    return regions, boxes, blank_source, mask


def atari_info(env_id: str, game: str, num_envs: int, *, frameskip: int, sticky_actions: float, max_frames: int,
               obs_shape: tuple, regions, boxes, blank_source: str, keep_frames: bool) -> dict:
    """The settings every Atari backend records with its results (ALE asks for frameskip, sticky
    actions and the version with every result); each backend adds its own backend and pipeline."""
    return {
        "env_id": env_id,
        "game": game,
        "num_envs": num_envs,
        "frameskip": frameskip,
        "sticky_actions": float(sticky_actions),
        "repeat_action_probability": float(sticky_actions),
        "max_episode_steps": max_frames // frameskip,
        "max_num_frames_per_episode": max_frames,
        "noop_max": NOOP_MAX,
        "maxpool_last_two_frames": True,
        "obs_shape": list(obs_shape),
        "frame_stack_padding": "zeros after reset",
        "terminal_on_life_loss": False,
        "fire_reset": False,
        "reward_clipping": False,
        "full_action_space": False,
        "autoreset_mode": "same_step",
        "blank_regions": [list(r) for r in regions],
        "blank_regions_84": [list(b) for b in boxes],
        "blank_value": BLANK_VALUE,
        "blank_source": blank_source,
        "frames": "max-pooled RGB 210x160 (unblanked)" if keep_frames else None,
        "ale_py": _version("ale-py"),
        "gymnasium": _version("gymnasium"),
    }

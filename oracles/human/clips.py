"""Clips for people: each segment's raw RGB frames as one PNG sprite sheet.

A sprite sheet (frames laid out in a grid, left to right then top to bottom) plays in every
browser with no codec, and the page draws both clips of a pair from one timer, so they stay in
sync at any speed. PNGs are written by Pillow (its adaptive row filters make Enduro sheets about
a quarter smaller than the hand-written encoder this replaced). Encoded clips are cached on disk next to the label store,
written atomically (temp file + rename); a metadata JSON written last marks a complete entry.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import threading
from pathlib import Path

import numpy as np
from PIL import Image

from rlhp_core.label_store import LabelStore
from rlhp_core.paths import write_atomic

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SIDES = ("left", "right")
MAX_SHEET_WIDTH = 4096
"""Sprite sheets wrap to new rows beyond this width (every browser decodes such images)."""
MAX_SHEET_PIXELS = 16_000_000
"""Larger clips (e.g. long MuJoCo renders) are downsampled by an integer factor to fit."""
CACHE_VERSION = 1


def encode_png(rgb: np.ndarray, level: int = 6) -> bytes:
    """Encode an (H, W, 3) uint8 image as an 8-bit RGB PNG (Pillow, lossless)."""
    rgb = np.ascontiguousarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got shape {rgb.shape} dtype {rgb.dtype}")
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, format="PNG", compress_level=level)
    return buf.getvalue()


def as_rgb_frames(frames: np.ndarray) -> np.ndarray:
    """(T, H, W), (T, H, W, 1|3|4), uint8 or float in [0, 1] -> (T, H, W, 3) uint8."""
    f = np.asarray(frames)
    if f.ndim == 3:
        f = f[..., None]
    if f.ndim != 4 or f.shape[3] not in (1, 3, 4):
        raise ValueError(f"frames must be (T, H, W[, 1|3|4]), got shape {f.shape}")
    if f.dtype != np.uint8:
        f = np.asarray(f, dtype=np.float64)
        if f.size and f.max() <= 1.0:
            f = f * 255.0
        f = np.clip(np.rint(f), 0, 255).astype(np.uint8)
    if f.shape[3] == 1:
        f = np.repeat(f, 3, axis=3)
    return f[..., :3]


def sprite_sheet(frames: np.ndarray) -> tuple[np.ndarray, dict]:
    """Lay (T, H, W, 3) frames out in a grid; returns the sheet and how to cut it again."""
    f = as_rgb_frames(frames)
    t, h, w, _ = f.shape
    scale = 1
    if t * h * w > MAX_SHEET_PIXELS:
        scale = math.ceil(math.sqrt(t * h * w / MAX_SHEET_PIXELS))
        f = f[:, ::scale, ::scale]
        h, w = f.shape[1:3]
    cols = max(1, min(t, MAX_SHEET_WIDTH // max(w, 1)))
    rows = math.ceil(t / cols)
    sheet = np.zeros((rows * h, cols * w, 3), dtype=np.uint8)
    for i in range(t):
        r, c = divmod(i, cols)
        sheet[r * h:(r + 1) * h, c * w:(c + 1) * w] = f[i]
    return sheet, {"frames": t, "width": w, "height": h, "cols": cols, "rows": rows, "downsample": scale}


class ClipCache:
    """Encoded clips of a store's queries, on disk under ``clip_dir``.

    File names are a hash of the query id, never the id itself, so no query id (whatever it
    contains) can name a path outside ``clip_dir``.
    """

    def __init__(self, store: LabelStore, clip_dir: str | Path):
        self.store = store
        self.dir = Path(clip_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def _stem(self, query_id: str) -> str:
        return hashlib.sha256(query_id.encode("utf-8")).hexdigest()[:40]

    def _paths(self, query_id: str) -> tuple[Path, dict[str, Path]]:
        stem = self._stem(query_id)
        return self.dir / f"{stem}.json", {s: self.dir / f"{stem}-{s}.png" for s in SIDES}

    def _lock(self, query_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(query_id, threading.Lock())

    def meta(self, query_id: str) -> dict:
        """{'left': {...}, 'right': {...}} for one query, encoding its clips on first use.

        Each side: frames (0 when no frames were kept), width, height, cols, rows, downsample,
        episode_ends (frame indices after which an episode ended), start_step, env_index.
        KeyError for an unknown query.
        """
        meta_path, pngs = self._paths(query_id)
        cached = self._read_meta(meta_path, pngs)
        if cached is not None:
            return cached
        with self._lock(query_id):
            cached = self._read_meta(meta_path, pngs)
            if cached is not None:
                return cached
            q = self.store.query(query_id, with_frames=True)
            out = {}
            for side, seg in zip(SIDES, (q.left, q.right)):
                info = {
                    "episode_ends": [int(i) for i in np.flatnonzero(np.asarray(seg.episode_ends))],
                    "length": int(seg.length),
                    "start_step": int(seg.start_step),
                    "env_index": int(seg.env_index),
                }
                if seg.frames is None or len(seg.frames) == 0:
                    info.update(frames=0, width=0, height=0, cols=0, rows=0, downsample=1)
                else:
                    sheet, layout = sprite_sheet(seg.frames)
                    write_atomic(pngs[side], encode_png(sheet))
                    info.update(layout)
                out[side] = info
            out["version"] = CACHE_VERSION
            write_atomic(meta_path, json.dumps(out).encode())
            return out

    def _read_meta(self, meta_path: Path, pngs: dict[str, Path]) -> dict | None:
        try:
            meta = json.loads(meta_path.read_text())
        except (FileNotFoundError, ValueError):
            return None
        if meta.get("version") != CACHE_VERSION:
            return None
        for side in SIDES:
            if meta.get(side, {}).get("frames"):
                try:
                    with open(pngs[side], "rb") as f:
                        if f.read(8) != PNG_SIGNATURE:
                            return None
                except FileNotFoundError:
                    return None
        return meta

    def png(self, query_id: str, side: str) -> bytes | None:
        """The PNG sprite sheet of one side, or None when that segment has no frames."""
        if side not in SIDES:
            raise ValueError(f"side must be one of {SIDES}, got {side!r}")
        meta = self.meta(query_id)
        if not meta[side]["frames"]:
            return None
        _, pngs = self._paths(query_id)
        return pngs[side].read_bytes()

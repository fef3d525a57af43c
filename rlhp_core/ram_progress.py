"""Driving progress read from the emulator's RAM: Enduro's odometer, what ``StepBatch.progress``
holds. The ``ale_loop`` backend (:mod:`rlhp_core.ale_loop`, whose doc says why Enduro needs it)
reads the RAM after every agent step.

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

from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["PROGRESS_MEASURES", "ProgressMeasure", "enduro_odometer"]

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

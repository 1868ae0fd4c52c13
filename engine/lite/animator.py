"""Life when nobody speaks: eye blinks, idle head motion and breathing.

Everything here is a pure function of the frame index and a seed, so any frame can be rendered on its
own (random access, reproducible, nothing to carry between chunks):

* **Blinks** start at random times, 2-6 s apart (mean about 3.6 s, as in relaxed conversation), and
  one in eight is a double blink. A blink closes in 3 frames, holds 1 and reopens in 4 (about 0.3 s
  at 25 fps). Times are drawn per 8-second block from ``(seed, block)``, so a frame only looks at its
  own block and the one before.
* **Head motion** is a sum of slow sinusoids at incommensurate frequencies (0.05-0.3 Hz) with seeded
  phases: side-to-side sway, a slight nod and a small roll, a few pixels / a degree or two at most.
* **Breathing** is a 0.23-0.27 Hz (14-16 breaths/min) wave that lifts the shoulders and head a
  fraction of a pixel.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

_BLINK_BLOCK_S = 8.0
_BLINK_CLOSE_S, _BLINK_HOLD_S, _BLINK_OPEN_S = 0.12, 0.04, 0.16
_BLINK_GAP_S = (2.0, 6.0)
_DOUBLE_BLINK_P = 0.125


@dataclass(frozen=True)
class HeadPose:
    """Head and body offsets for one frame (pixels of a 512-pixel frame; the renderer scales them).

    ``dx``/``dy``: head translation; ``roll_deg``: head roll about the neck (positive: clockwise on
    screen); ``breath``: breathing phase in [-1, 1] (1 = full inhale, shoulders up).
    """

    dx: float = 0.0
    dy: float = 0.0
    roll_deg: float = 0.0
    breath: float = 0.0

    @property
    def is_neutral(self) -> bool:
        return self.dx == 0.0 and self.dy == 0.0 and self.roll_deg == 0.0 and self.breath == 0.0


NEUTRAL_POSE = HeadPose()


@lru_cache(maxsize=256)
def _blink_starts(seed: int, block: int) -> tuple[float, ...]:
    """Blink start times (s) inside one block, seeded by (seed, block)."""
    rng = np.random.default_rng([seed & 0xFFFFFFFF, block & 0xFFFFFFFF, 0xB11C])
    t0 = block * _BLINK_BLOCK_S
    t = t0 + rng.uniform(0.0, _BLINK_GAP_S[1] - _BLINK_GAP_S[0])
    starts: list[float] = []
    while t < t0 + _BLINK_BLOCK_S:
        starts.append(t)
        if rng.random() < _DOUBLE_BLINK_P:
            starts.append(t + _BLINK_CLOSE_S + _BLINK_HOLD_S + _BLINK_OPEN_S + 0.08)
        t += rng.uniform(*_BLINK_GAP_S)
    return tuple(starts)


def _blink_profile(dt_s: float) -> float:
    """Eyelid closure (0 open, 1 shut) ``dt_s`` seconds after a blink starts."""
    if dt_s < 0.0:
        return 0.0
    if dt_s < _BLINK_CLOSE_S:
        x = dt_s / _BLINK_CLOSE_S
        return x * x * (3.0 - 2.0 * x)
    dt_s -= _BLINK_CLOSE_S
    if dt_s < _BLINK_HOLD_S:
        return 1.0
    dt_s -= _BLINK_HOLD_S
    if dt_s < _BLINK_OPEN_S:
        x = 1.0 - dt_s / _BLINK_OPEN_S
        return x * x * (3.0 - 2.0 * x)
    return 0.0


def blink_amount(frame: int, fps: float, seed: int) -> float:
    """How closed the eyes are at ``frame`` (0 open, 1 shut)."""
    t = frame / fps
    block = int(t // _BLINK_BLOCK_S)
    starts = _blink_starts(seed, block - 1) + _blink_starts(seed, block)
    return max((_blink_profile(t - s) for s in starts), default=0.0)


@lru_cache(maxsize=64)
def _motion_params(seed: int) -> np.ndarray:
    """(4 channels, 3 partials, [amplitude, freq_hz, phase]) for sway, nod, roll and breathing."""
    rng = np.random.default_rng([seed & 0xFFFFFFFF, 0x1D1E])
    amps = np.array([[2.2, 1.0, 0.5], [1.1, 0.5, 0.3], [0.9, 0.4, 0.2], [1.0, 0.0, 0.0]])  # px, px, deg, unit
    base_f = np.array([[0.06, 0.13, 0.29], [0.08, 0.17, 0.31], [0.05, 0.11, 0.23], [0.25, 0.0, 0.0]])
    freqs = base_f * rng.uniform(0.9, 1.1, size=base_f.shape)
    phases = rng.uniform(0.0, 2.0 * math.pi, size=base_f.shape)
    return np.stack([amps, freqs, phases], axis=-1)


def idle_pose(frame: int, fps: float, seed: int) -> HeadPose:
    """Idle head sway, nod, roll and breathing at ``frame``."""
    t = frame / fps
    p = _motion_params(seed)
    waves = (p[..., 0] * np.sin(2.0 * math.pi * p[..., 1] * t + p[..., 2])).sum(axis=1)
    return HeadPose(dx=float(waves[0]), dy=float(waves[1]), roll_deg=float(waves[2]), breath=float(waves[3]))


def speaking_pose(idle: HeadPose, emphasis: float) -> HeadPose:
    """Idle pose plus a slight downward nod and lift with speech emphasis (0..1, slowly varying)."""
    return HeadPose(dx=idle.dx, dy=idle.dy + 1.6 * emphasis, roll_deg=idle.roll_deg - 0.4 * emphasis, breath=idle.breath)

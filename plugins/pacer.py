"""Media-clock pacing for live outputs: engine frames (25 fps) onto an output's ticks (30 fps).

Pure: no threads, no sleeping in :class:`MediaClockPacer`; :class:`TickClock` takes an injectable
clock and sleep so tests drive it with a fake clock.

Model (ARCHITECTURE rule 11). Every engine frame has a pts, ``index / src_fps``. The first frames
that arrive anchor the timeline to the output: engine frame ``s_a`` is shown at output tick
``k_a`` (the next tick plus ``latency_ticks`` of jitter buffer). Output tick ``k`` then shows the
buffered engine frame whose pts is the latest <= the tick's pts ``s_a/src_fps + (k - k_a)/out_fps``.
So 25 -> 30 fps repeats one frame in six, frames keep their pts, and:

- starved (nothing new yet): the newest frame stays up (hold the last frame, never black);
- a gap in frame indices (a dropped chunk): the frame before the gap stays up over the gap;
- drift: a chunk whose first frame is more than ``max_drift_frames`` engine periods behind the
  clock (engine restarted, stalled, or slower than the output clock), or further ahead than the
  buffer holds (a jump of the timeline, a new session), re-anchors: it starts at the next tick.
  Smaller lateness is absorbed by skipping the frames already past, so the picture stays on the
  audio's clock.
"""
from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

__all__ = ["MediaClockPacer", "PacerStats", "TickClock"]

log = logging.getLogger(__name__)


@dataclass
class PacerStats:
    ticks: int = 0  # ticks answered with a frame
    starved_ticks: int = 0  # ticks that wanted a frame newer than any received (held the last one)
    resets: int = 0  # re-anchors for drift, a new session or a resync
    skipped_frames: int = 0  # engine frames never shown (late, overflow or 25->30 never skips)


class MediaClockPacer:
    """Maps output ticks to engine frames by pts; see the module docstring for the model."""

    def __init__(self, src_fps: Fraction | int, out_fps: Fraction | int, *, latency_ticks: int = 0,
                 max_drift_frames: int = 6, capacity: int = 128, external_clock: bool = False) -> None:
        self.src_fps, self.out_fps = Fraction(src_fps), Fraction(out_fps)
        if self.src_fps <= 0 or self.out_fps <= 0:
            raise ValueError(f"frame rates must be positive, got {src_fps} and {out_fps}")
        if latency_ticks < 0 or max_drift_frames < 0 or capacity < 1:
            raise ValueError("latency_ticks and max_drift_frames must be >= 0 and capacity >= 1")
        self.latency_ticks, self.max_drift_frames, self.capacity = latency_ticks, max_drift_frames, capacity
        self._ratio = self.src_fps / self.out_fps  # engine frames per output tick
        # external_clock: the caller picks frames with frame_for_index from a shared media clock (AvClock), which
        # owns anchoring and drift; the pacer then only buffers by index (a new session still flushes it).
        self.external_clock = external_clock
        self.stats = PacerStats()
        self._buf: deque[tuple[int, np.ndarray]] = deque()  # (engine index, frame), increasing index
        self._anchor: tuple[int, int] | None = None  # (k_a, s_a)
        self._next_tick = 0  # the tick after the last one answered
        self._session: str | None = None
        self._last: tuple[int, np.ndarray] | None = None  # last frame shown

    # -- input -----------------------------------------------------------------------------------

    def push(self, first_frame: int, frames: Sequence[np.ndarray], session: str | None = None) -> None:
        """Buffer frames ``first_frame, first_frame + 1, ...`` (kept by reference, not copied)."""
        if len(frames) == 0:
            return
        reason = self._reset_reason(first_frame, session)
        if reason:
            self._reanchor(first_frame, reason)
        self._session = session if session is not None else self._session
        last_index = self._buf[-1][0] if self._buf else None
        if not reason and self._last is not None:  # same timeline: never go back before what is on screen
            last_index = max(last_index if last_index is not None else self._last[0], self._last[0])
        for i, frame in enumerate(frames):
            index = first_frame + i
            if last_index is not None and index <= last_index:  # overlaps what is buffered: keep the old
                continue
            self._buf.append((index, frame))
            last_index = index
        while len(self._buf) > self.capacity:
            self._buf.popleft()
            self.stats.skipped_frames += 1

    def drop_buffered(self) -> int:
        """Forget every frame not shown yet (barge-in): the last frame shown stays up. Returns how many."""
        dropped = len(self._buf)
        self._buf.clear()
        self.stats.skipped_frames += dropped
        self._anchor = None
        return dropped

    def resync(self) -> None:
        """Forget the anchor (e.g. the engine is holding or restarting): the next chunk starts at the next tick."""
        self._anchor = None

    # -- output ----------------------------------------------------------------------------------

    def source_index(self, tick: int) -> int | None:
        """The engine frame index whose pts is the latest <= tick ``tick``'s pts (None before any anchor)."""
        if self._anchor is None:
            return None
        k_a, s_a = self._anchor
        return s_a + math.floor((tick - k_a) * self._ratio)

    def frame_for_tick(self, tick: int) -> tuple[int, np.ndarray] | None:
        """``(engine index, frame)`` to show at output tick ``tick`` (ticks must not go backwards).

        None only before the first frame is due (the caller shows its slate).
        """
        if tick < self._next_tick - 1:
            raise ValueError(f"ticks must not go backwards: {tick} after {self._next_tick - 1}")
        self._next_tick = tick + 1
        return self.frame_for_index(self.source_index(tick))

    def frame_for_index(self, want: int | None) -> tuple[int, np.ndarray] | None:
        """``(engine index, frame)``: the newest buffered frame with index <= ``want`` (an external media clock,
        e.g. :class:`plugins.av_clock.AvClock`, says which engine frame is due); the last one shown when none."""
        if want is not None:
            popped = 0
            while self._buf and self._buf[0][0] <= want:
                self._last = self._buf.popleft()
                popped += 1
            self.stats.skipped_frames += max(0, popped - 1)  # frames whose turn passed unseen
        if self._last is None:
            return None
        if not self._buf and (want is None or self._last[0] < want):
            self.stats.starved_ticks += 1
        self.stats.ticks += 1
        return self._last

    # -- internals -------------------------------------------------------------------------------

    def _reset_reason(self, first_frame: int, session: str | None) -> str:
        if self.external_clock:
            if session is not None and self._session is not None and session != self._session:
                return f"new session {session!r}"
            return ""
        if self._anchor is None:
            return "first frames" if self._last is None else "resync"
        if session is not None and self._session is not None and session != self._session:
            return f"new session {session!r}"
        clock = self.source_index(self._next_tick)
        assert clock is not None
        behind = clock - first_frame
        if behind > self.max_drift_frames:
            return f"frames {behind} periods late"
        newest = self._buf[-1][0] if self._buf else (self._last[0] if self._last else clock)
        ahead = first_frame - max(clock, newest)
        if ahead > self.capacity:
            return f"timeline jumped {ahead} frames ahead"
        return ""

    def _reanchor(self, first_frame: int, reason: str) -> None:
        if self._anchor is not None or self._last is not None:
            self.stats.resets += 1
            log.info("pacer: re-anchoring at engine frame %d (%s)", first_frame, reason)
        self.stats.skipped_frames += len(self._buf)
        self._buf.clear()
        self._anchor = (self._next_tick + self.latency_ticks, first_frame)


class TickClock:
    """Output ticks on a clock: tick ``k`` is due at ``t0 + k / fps``.

    ``wait_next`` sleeps until the next tick is due and returns its number. A caller that falls
    more than ``max_late_ticks`` behind (a stall) skips to the tick that is due now instead of
    sending a burst of stale frames; ``skipped`` counts those ticks.
    """

    def __init__(self, fps: Fraction | float, *, clock: Callable[[], float] = time.perf_counter,
                 sleep: Callable[[float], object] = time.sleep, max_late_ticks: int = 3) -> None:
        self.fps = Fraction(fps).limit_denominator(1001) if not isinstance(fps, Fraction) else fps
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.period_s = 1.0 / float(self.fps)
        self._clock, self._sleep, self.max_late_ticks = clock, sleep, max_late_ticks
        self._t0: float | None = None
        self._tick = -1
        self.skipped = 0

    def deadline(self, tick: int) -> float:
        assert self._t0 is not None
        return self._t0 + tick * self.period_s

    def wait_next(self) -> int:
        now = self._clock()
        if self._t0 is None:
            self._t0 = now
        tick = self._tick + 1
        due_now = math.floor((now - self._t0) / self.period_s)
        if due_now - tick > self.max_late_ticks:
            log.warning("output clock: %d ticks late; skipping to the current tick", due_now - tick)
            self.skipped += due_now - tick
            tick = due_now
        delay = self.deadline(tick) - now
        if delay > 0:
            self._sleep(delay)
        self._tick = tick
        return tick

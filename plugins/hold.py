"""Keep the picture alive while the engine is silent: repeat the last frame with silence, on time.

The engine (a separate process) can stall or restart; the camera must not freeze or go black
meanwhile. :class:`FrameGapFiller` is the pure timing logic, driven by an explicit ``now`` so tests
use a fake clock; :class:`HoldingSink` wraps any :class:`~plugins.base.FrameSink` with it.

Output timeline: every chunk that leaves the filler is numbered on one continuous output timeline
(``first_frame`` = number of frames emitted before it, ``seq`` = chunks emitted before it), whatever
the engine's own numbering did (a restarted worker starts again at frame 0). So the sinks never see a
jump or a repeat of frame indices, and a frame's pts (its output index / fps) has no gap.

Wall-clock model (live output): content is scheduled back to back; a chunk plays from the moment it
arrives or from the end of the content before it, whichever is later (``covered_until``). When nothing
arrives for ``hold_after_s`` past ``covered_until``, :meth:`FrameGapFiller.poll` returns the last
frame repeated (with silence) for every frame period that has run out, one period after another, so
a sink polled at least once per frame period receives a frame per period during a restart. A late
chunk is appended after the held frames: nothing the engine made is dropped, and the delay it adds
is only the lateness itself (it starts "now", not at an old slot).
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import numpy as np

from engine.interface import ChunkSpec, FrameChunk
from plugins.base import FrameSink

__all__ = ["FrameGapFiller", "HoldingSink"]

log = logging.getLogger(__name__)

Clock = Callable[[], float]


class FrameGapFiller:
    """Renumbers chunks onto one output timeline and makes hold frames when chunks are late.

    ``hold_after_s``: how long after the content runs out the first hold frame is due (default: one
    frame period; raise it for an engine with a bursty chunk rhythm if repeated frames are unwanted).
    Before the first chunk nothing is held: there is no frame to repeat.
    """

    def __init__(self, spec: ChunkSpec, *, hold_after_s: float | None = None) -> None:
        self.spec = spec
        self.period_s = 1.0 / float(spec.fps)
        self.hold_after_s = self.period_s if hold_after_s is None else hold_after_s
        if self.hold_after_s < 0:
            raise ValueError(f"hold_after_s must be >= 0, got {self.hold_after_s}")
        self.out_frames = 0  # next output frame index
        self.filled_frames = 0  # hold frames emitted so far
        self.holding = False  # the last thing emitted was a hold frame
        self._seq = 0
        self._covered_until: float | None = None  # wall time at which the scheduled content ends
        self._last: np.ndarray | None = None  # last frame (H, W, 3)
        self._session = ""

    @property
    def covered_until(self) -> float | None:
        return self._covered_until

    def feed(self, chunk: FrameChunk, now: float) -> FrameChunk:
        """The engine's chunk renumbered onto the output timeline (pixels and audio untouched)."""
        n = chunk.num_frames
        start = now if self._covered_until is None else max(self._covered_until, now)
        self._covered_until = start + n * self.period_s
        self._last = chunk.frames[-1]
        self._session = chunk.session_id
        self.holding = False
        return self._emit(chunk.frames, chunk.audio)

    def due_frames(self, now: float) -> int:
        """Hold frames that ``poll(now)`` would emit."""
        if self._covered_until is None or self._last is None:
            return 0
        late_s = now - self._covered_until - self.hold_after_s
        if late_s < -1e-9:
            return 0
        return math.floor(late_s / self.period_s + 1e-9) + 1

    def poll(self, now: float) -> FrameChunk | None:
        """The hold frames due at ``now`` as one chunk (last frame + silence), or None."""
        n = self.due_frames(now)
        if n == 0:
            return None
        assert self._last is not None and self._covered_until is not None  # due_frames checked
        self._covered_until += n * self.period_s
        self.filled_frames += n
        self.holding = True
        frames = np.repeat(self._last[None], n, axis=0)
        audio = np.zeros(n * self.spec.samples_per_frame, dtype=np.float32)
        return self._emit(frames, audio)

    def _emit(self, frames: np.ndarray, audio: np.ndarray) -> FrameChunk:
        first = self.out_frames
        chunk = FrameChunk(self._session, self._seq, first, frames, audio, first * self.spec.samples_per_frame)
        self.out_frames += int(frames.shape[0])
        self._seq += 1
        return chunk


class HoldingSink:
    """A :class:`FrameSink` wrapper that never lets ``inner`` starve while the engine is live.

    The sink thread calls :meth:`write` for every chunk from the bus and :meth:`tick` at least once per
    frame period (e.g. after every ``recv`` with a timeout of one frame period). ``inner`` sees one
    continuous timeline; its ``hold(reason)`` is called once when a hold begins.
    """

    def __init__(self, inner: FrameSink, *, hold_after_s: float | None = None, clock: Clock = time.monotonic) -> None:
        self.inner = inner
        self.name = inner.name
        self.queue_chunks = int(getattr(inner, "queue_chunks", 0))
        self.filler: FrameGapFiller | None = None
        self._hold_after_s = hold_after_s
        self._clock = clock
        self._reason = "engine late"

    def open(self, spec: ChunkSpec) -> None:
        self.inner.open(spec)
        self.filler = FrameGapFiller(spec, hold_after_s=self._hold_after_s)

    def write(self, chunk: FrameChunk) -> None:
        filler = self._require_open()
        if filler.holding:
            log.info("%s: engine frames are back after %d held frames", self.name, filler.filled_frames)
        self.inner.write(filler.feed(chunk, self._clock()))

    def tick(self) -> int:
        """Emit the hold frames that are due; returns how many."""
        filler = self._require_open()
        was_holding = filler.holding
        chunk = filler.poll(self._clock())
        if chunk is None:
            return 0
        if not was_holding:
            self.inner.hold(self._reason)
        self.inner.write(chunk)
        return chunk.num_frames

    def hold(self, reason: str) -> None:
        """Remember why the engine is away (named in the inner sink's ``hold`` when frames are held)."""
        self._reason = reason

    def close(self) -> object:
        return self.inner.close()

    def _require_open(self) -> FrameGapFiller:
        if self.filler is None:
            raise RuntimeError(f"{self.name}: HoldingSink used before open()")
        return self.filler

"""Keep the picture alive while the engine is silent: last frame, then a cached idle loop, on time.

The engine (a separate process) can stall or restart; the camera must not freeze or go black
meanwhile. :class:`FrameGapFiller` is the pure timing logic, driven by an explicit ``now`` so tests
use a fake clock; :class:`HoldingSink` wraps any :class:`~plugins.base.FrameSink` with it.

Output timeline: every chunk that leaves the filler is numbered on one continuous output timeline
(``first_frame`` = number of frames emitted before it, ``seq`` = chunks emitted before it), whatever
the engine's own numbering did (a restarted worker starts again at frame 0). So the sinks never see a
jump or a repeat of frame indices, and a frame's pts (its output index / fps) has no gap.

Wall-clock model (live output): content is scheduled back to back; a chunk plays from the moment it
arrives or from the end of the content before it, whichever is later (``covered_until``). When nothing
arrives for ``hold_after_s`` past ``covered_until``, :meth:`FrameGapFiller.poll` returns hold frames
(with silence) for every frame period that has run out, one period after another, so a sink polled at
least once per frame period receives a frame per period during a restart. A late chunk is appended
after the held frames: nothing the engine made is dropped, and the delay it adds is only the lateness
itself (it starts "now", not at an old slot).

Fallback chain of a hold: the last frame for the first ``idle_after_s`` (a late chunk is usually a
matter of a frame or two), then the idle loop: frames the engine made while the voice was silent,
kept by :class:`IdleCache` (bounded, the last few seconds of one uninterrupted quiet stretch) and
played ping-pong (forwards, backwards, ...) starting from the newest, so the motion has no jump. Frames
near speech are never cached (the mouth may still be closing or already opening). With no idle frames
cached, the lite renderer animates the last frame (blinks, sway, closed mouth; ``plugins.lite_idle``), and when
it finds no face there the last frame stays. Never a black frame. Setting the lite renderer up (a face detector
on the last frame) takes longer than a frame period, so it runs in a background thread that starts halfway
into ``idle_after_s``; until it is ready the last frame stays, and the sink thread is never held up by it.

Barge-in: :meth:`HoldingSink.interrupt` (epoch) drops chunks of older epochs from then on, ends the
scheduled content now (the inner sink drops its queue: ``inner.interrupt(epoch)``) and so holds the
last frame until the engine's idle chunk arrives.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from engine.interface import ChunkSpec, FrameChunk
from plugins.base import FrameSink, av_offset, interrupt_sink

if TYPE_CHECKING:
    from plugins.lite_idle import LiteIdleAnimator

__all__ = ["FrameGapFiller", "HoldingSink", "IdleCache", "IdleConfig"]

log = logging.getLogger(__name__)

Clock = Callable[[], float]

#: How far into ``idle_after_s`` a hold starts preparing its fallbacks (the lite renderer's face detector
#: runs in the background from then on; most holds are a late chunk and end sooner, costing nothing).
PREPARE_AT = 0.5


def _build_lite_animator(frame: np.ndarray, spec: ChunkSpec) -> Future[LiteIdleAnimator]:
    """A :class:`~plugins.lite_idle.LiteIdleAnimator` of ``frame`` built in a daemon thread."""
    job: Future[LiteIdleAnimator] = Future()

    def build() -> None:
        try:
            from plugins.lite_idle import LiteIdleAnimator

            job.set_result(LiteIdleAnimator(frame, spec))
        except BaseException as exc:  # noqa: BLE001 - the sink thread then keeps the last frame
            log.warning("hold: setting the lite renderer up failed; keeping the last frame", exc_info=True)
            job.set_exception(exc)

    threading.Thread(target=build, name="hold-lite-setup", daemon=True).start()
    return job


@dataclass(frozen=True)
class IdleConfig:
    """Which engine frames count as idle, how many are kept, and when a hold switches to them."""

    after_s: float | None = 0.5  # hold time on the last frame before the idle loop (None: last frame only)
    cache_s: float = 3.0  # longest idle loop kept (memory: at most twice this many frames)
    min_loop_s: float = 1.0  # a newer quiet stretch replaces the kept loop once it is this long
    rms_threshold: float = 0.002  # a frame's audio below this RMS (about -54 dBFS) is silent
    settle_s: float = 0.3  # silence needed before a frame (the mouth has finished closing)
    lead_s: float = 0.12  # silence needed after a frame (engines open the mouth ahead of the sound)

    def __post_init__(self) -> None:
        if self.after_s is not None and self.after_s < 0:
            raise ValueError(f"idle after_s must be >= 0 or None, got {self.after_s}")
        if self.cache_s <= 0 or self.min_loop_s < 0 or self.settle_s < 0 or self.lead_s < 0 or self.rms_threshold <= 0:
            raise ValueError(f"idle cache settings must be positive: {self}")


def _frames(seconds: float, spec: ChunkSpec) -> int:
    return max(0, math.ceil(seconds * float(spec.fps) - 1e-9))


class IdleCache:
    """The newest uninterrupted stretch of silent-voice frames (copies), bounded by ``cache_s``.

    A frame is idle when the audio of the ``settle_s`` before it, its own and the ``lead_s`` after it is
    all below ``rms_threshold``, so a frame whose mouth moves for speech is never taken. A frame is
    therefore decided ``lead_s`` after it arrives. Frames are kept only while consecutive (``add`` calls
    continue the same engine timeline, else call :meth:`break_run`): a loop made of them has no jump.
    """

    def __init__(self, spec: ChunkSpec, config: IdleConfig | None = None) -> None:
        self.spec = spec
        self.config = config or IdleConfig()
        self.max_frames = max(1, _frames(self.config.cache_s, spec))
        self.min_loop_frames = min(self.max_frames, _frames(self.config.min_loop_s, spec))
        self._settle = _frames(self.config.settle_s, spec)
        self._lead = _frames(self.config.lead_s, spec)
        self._window: deque[tuple[np.ndarray, bool]] = deque(maxlen=self._settle + self._lead + 1)
        self._run: deque[np.ndarray] = deque(maxlen=self.max_frames)
        self._loop: tuple[np.ndarray, ...] = ()

    @property
    def frames_held(self) -> int:
        """Frames this cache keeps alive (copies in the run and the loop, views in the decision window)."""
        return len(self._run) + len(self._loop) + len(self._window)

    def add(self, frames: np.ndarray, audio: np.ndarray) -> None:
        """Consider the frames of one chunk (the next on the engine timeline) and the audio they play with."""
        spf = self.spec.samples_per_frame
        for i in range(frames.shape[0]):
            pcm = audio[i * spf:(i + 1) * spf]
            quiet = pcm.size == 0 or float(np.sqrt(np.mean(np.square(pcm, dtype=np.float64)))) < self.config.rms_threshold
            self._window.append((frames[i], quiet))
            if not quiet:
                self._end_run()
            elif len(self._window) == self._window.maxlen and all(q for _, q in self._window):
                self._run.append(np.array(self._window[self._settle][0]))  # a copy: the chunk may be a bus buffer

    def break_run(self) -> None:
        """The next frames do not continue the previous ones (restart, barge-in, another session)."""
        self._window.clear()
        self._end_run()

    def snapshot(self) -> tuple[np.ndarray, ...]:
        """The frames of the idle loop, oldest first (empty: nothing idle seen yet)."""
        run = tuple(self._run)
        if len(run) >= self.min_loop_frames or len(run) >= len(self._loop):
            return run
        return self._loop

    def _end_run(self) -> None:
        if self._run:
            if len(self._run) >= self.min_loop_frames or len(self._run) >= len(self._loop):
                self._loop = tuple(self._run)
            self._run = deque(maxlen=self.max_frames)


def ping_pong(n: int, pos: int) -> int:
    """Index into ``n`` loop frames for step ``pos``: newest first, backwards, then forwards again."""
    if n <= 1:
        return 0
    m = pos % (2 * (n - 1))
    return n - 1 - m if m <= n - 1 else m - (n - 1)


class FrameGapFiller:
    """Renumbers chunks onto one output timeline and makes hold frames when chunks are late.

    ``hold_after_s``: how long after the content runs out the first hold frame is due (default: one
    frame period; raise it for an engine with a bursty chunk rhythm if repeated frames are unwanted).
    ``idle``: which frames are idle and when a hold switches from the last frame to them
    (``IdleConfig.after_s``, default 0.5 s). Before the first chunk nothing is held: there is no frame.
    """

    def __init__(self, spec: ChunkSpec, *, hold_after_s: float | None = None, idle: IdleConfig | None = None) -> None:
        self.spec = spec
        self.period_s = 1.0 / float(spec.fps)
        self.hold_after_s = self.period_s if hold_after_s is None else hold_after_s
        if self.hold_after_s < 0:
            raise ValueError(f"hold_after_s must be >= 0, got {self.hold_after_s}")
        self.idle = IdleCache(spec, idle)
        self.idle_after_s = self.idle.config.after_s
        self.out_frames = 0  # next output frame index
        self.filled_frames = 0  # hold frames emitted so far (last-frame and idle-loop ones)
        self.idle_frames = 0  # of which from the idle loop
        self.holding = False  # the last thing emitted was a hold frame
        self.epoch = 0  # newest epoch fed or interrupted to; emitted chunks carry it
        self._seq = 0
        self._covered_until: float | None = None  # wall time at which the scheduled content ends
        self._last: np.ndarray | None = None  # last frame (H, W, 3)
        self._session = ""
        self._engine_next: tuple[str, int, int] | None = None  # session, epoch, next engine frame index
        self._hold_start = 0.0  # wall time at which the current hold's content ran out
        self._loop: tuple[np.ndarray, ...] | None = None  # idle loop of the current hold (None: not yet)
        self._loop_pos = 0
        self._lite: Future[LiteIdleAnimator] | None = None  # last fallback of the current hold (None: not started)
        self.lite_frames = 0  # hold frames drawn by the lite renderer

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
        self.epoch = max(self.epoch, chunk.epoch)
        if self._engine_next != (chunk.session_id, chunk.epoch, chunk.first_frame):
            self.idle.break_run()
        self._engine_next = (chunk.session_id, chunk.epoch, chunk.first_frame + n)
        self.idle.add(chunk.frames, chunk.audio)
        self.holding = False
        self._loop = None
        return self._emit(chunk.frames, chunk.audio, chunk.alpha)

    def interrupt(self, epoch: int, now: float) -> None:
        """Barge-in: the content scheduled after ``now`` was dropped downstream; hold from now on."""
        self.epoch = max(self.epoch, epoch)
        if self._covered_until is not None and self._covered_until > now:
            self._covered_until = now
        self.idle.break_run()

    def due_frames(self, now: float) -> int:
        """Hold frames that ``poll(now)`` would emit."""
        if self._covered_until is None or self._last is None:
            return 0
        late_s = now - self._covered_until - self.hold_after_s
        if late_s < -1e-9:
            return 0
        return math.floor(late_s / self.period_s + 1e-9) + 1

    def poll(self, now: float) -> FrameChunk | None:
        """The hold frames due at ``now`` as one chunk (last frame or idle loop, with silence), or None."""
        n = self.due_frames(now)
        if n == 0:
            return None
        assert self._last is not None and self._covered_until is not None  # due_frames checked
        if not self.holding:
            self._hold_start, self._loop, self._loop_pos, self._lite = self._covered_until, None, 0, None
        frames = np.stack([self._hold_frame(self._covered_until + i * self.period_s) for i in range(n)])
        self._covered_until += n * self.period_s
        self.filled_frames += n
        self.holding = True
        audio = np.zeros(n * self.spec.samples_per_frame, dtype=np.float32)
        return self._emit(frames, audio)

    def _hold_frame(self, slot: float) -> np.ndarray:
        """The frame shown in the hold slot starting at wall time ``slot``."""
        assert self._last is not None
        if self.idle_after_s is None:
            return self._last
        held_s = slot - self._hold_start
        if held_s >= PREPARE_AT * self.idle_after_s - 1e-9:
            self._prepare_fallbacks()
        if held_s < self.idle_after_s - 1e-9:
            return self._last
        if not self._loop:
            return self._lite_frame()
        frame = self._loop[ping_pong(len(self._loop), self._loop_pos)]
        self._loop_pos += 1
        self.idle_frames += 1
        return frame

    def _prepare_fallbacks(self) -> None:
        """Take the idle loop; with none cached start setting the lite renderer up in the background."""
        if self._loop is not None:
            return
        assert self._last is not None
        self._loop = self.idle.snapshot()
        if not self._loop:
            self._lite = _build_lite_animator(self._last, self.spec)

    def wait_fallback(self, timeout_s: float) -> bool:
        """Block until the current hold's lite renderer set-up has finished (for tests and tools; the sink
        thread never waits). False if none was started or it is still running after ``timeout_s``."""
        if self._lite is None:
            return False
        try:
            self._lite.exception(timeout=timeout_s)
        except TimeoutError:
            return False
        return True

    def _lite_frame(self) -> np.ndarray:
        """No idle frames cached: the lite renderer animates the last frame (blinks, sway) once its set-up has
        finished; until then, or when it found no face, the last frame."""
        assert self._last is not None
        if self._lite is None or not self._lite.done() or self._lite.exception() is not None:
            return self._last
        frame = self._lite.result().next_frame()
        if frame is None:
            return self._last
        self.lite_frames += 1
        return frame

    def _emit(self, frames: np.ndarray, audio: np.ndarray, alpha: np.ndarray | None = None) -> FrameChunk:
        """A chunk on the output timeline; hold frames carry no alpha (an alpha sink keeps its last matte)."""
        first = self.out_frames
        chunk = FrameChunk(self._session, self._seq, first, frames, audio, first * self.spec.samples_per_frame,
                           epoch=self.epoch, alpha=alpha)
        self.out_frames += int(frames.shape[0])
        self._seq += 1
        return chunk


class HoldingSink:
    """A :class:`FrameSink` wrapper that never lets ``inner`` starve while the engine is live.

    The sink thread calls :meth:`write` for every chunk from the bus and :meth:`tick` at least once per
    frame period (e.g. after every ``recv`` with a timeout of one frame period). ``inner`` sees one
    continuous timeline; its ``hold(reason)`` is called once when a hold begins. :meth:`interrupt`
    (barge-in) is forwarded to ``inner`` when it has one; chunks of older epochs are dropped here
    (``stale_dropped``), and a chunk of a newer epoch counts as an interrupt to it.
    """

    def __init__(self, inner: FrameSink, *, hold_after_s: float | None = None, clock: Clock = time.monotonic,
                 idle: IdleConfig | None = None) -> None:
        self.inner = inner
        self.name = inner.name
        self.queue_chunks = int(getattr(inner, "queue_chunks", 0))
        self.filler: FrameGapFiller | None = None
        self.stale_dropped = 0  # chunks of an older epoch not written
        self._hold_after_s = hold_after_s
        self._idle = idle
        self._clock = clock
        self._reason = "engine late"
        self._epoch = 0

    @property
    def epoch(self) -> int:
        return self._epoch

    def open(self, spec: ChunkSpec) -> None:
        self.inner.open(spec)
        self.filler = FrameGapFiller(spec, hold_after_s=self._hold_after_s, idle=self._idle)

    def write(self, chunk: FrameChunk) -> None:
        filler = self._require_open()
        if chunk.epoch < self._epoch:
            self.stale_dropped += 1
            return
        if chunk.epoch > self._epoch:
            self.interrupt(chunk.epoch)
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

    def interrupt(self, epoch: int) -> None:
        """Barge-in to ``epoch``: drop older chunks from now on, end the scheduled content now and let
        ``inner`` drop what it buffered. Idempotent for an epoch already seen."""
        if epoch <= self._epoch:
            return
        self._epoch = epoch
        if self.filler is not None:  # before open() there is nothing scheduled yet
            self.filler.interrupt(epoch, self._clock())
        interrupt_sink(self.inner, epoch)

    def av_offset_s(self) -> float | None:
        return av_offset(self.inner)

    def hold(self, reason: str) -> None:
        """Why the engine is away: named in the inner sink's ``hold`` when holding begins, and passed on at once
        when it changes while frames are already held (late -> stalled -> restarting)."""
        changed, self._reason = reason != self._reason, reason
        if changed and self.filler is not None and self.filler.holding:
            self.inner.hold(reason)

    def close(self) -> object:
        return self.inner.close()

    def _require_open(self) -> FrameGapFiller:
        if self.filler is None:
            raise RuntimeError(f"{self.name}: HoldingSink used before open()")
        return self.filler

"""The sink side of the frame bus: what every output (recorder, virtual camera, OBS) implements.

A sink receives :class:`~engine.interface.FrameChunk` s in order from one bus subscriber thread.
``write`` must return quickly (about one frame period per frame); a sink that cannot keep up is
dropped chunks by the bus, it never slows the engine down.

Barge-in: a sink may also implement the optional ``interrupt(epoch: int) -> None`` (see
:class:`InterruptibleSink`): drop everything buffered that belongs to an older epoch, so queued audio
stops at once and video holds its last frame. The daemon calls it through :func:`interrupt_sink` from
the sink's own thread and drops chunks with ``chunk.epoch`` below the current epoch before ``write``.
It is not part of :class:`FrameSink`, so sinks without a buffer need not implement it.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from engine.interface import ChunkSpec, FrameChunk

__all__ = ["FrameSink", "InterruptibleSink", "SinkError", "interrupt_sink"]


class SinkError(RuntimeError):
    """A sink cannot open or keep writing; the message names the sink, the target and the fix."""


@runtime_checkable
class FrameSink(Protocol):
    """An output for frame chunks. Lifecycle: ``open`` once, ``write``/``hold`` many, ``close`` once."""

    name: str

    def open(self, spec: ChunkSpec) -> None:
        """Allocate the output for chunks of this geometry and timing."""

    def write(self, chunk: FrameChunk) -> None:
        """Consume one chunk (frames plus the audio that plays with them)."""

    def hold(self, reason: str) -> None:
        """The engine is not producing (restarting, starved): keep the output alive (repeat last frame or slate)."""

    def close(self) -> None:
        """Flush and release the output; safe to call twice and after a failed ``open``."""


@runtime_checkable
class InterruptibleSink(FrameSink, Protocol):
    """A sink that buffers output and can drop it on barge-in."""

    def interrupt(self, epoch: int) -> None:
        """Drop buffered chunks of epochs below ``epoch``: queued audio stops now, video holds its last frame."""


def av_offset(sink: FrameSink) -> float | None:
    """The sink's presented video time minus audio time for the same content, in seconds (positive: the picture
    is late), from its optional ``av_offset_s()``; None when the sink cannot tell or has presented nothing yet."""
    method = getattr(sink, "av_offset_s", None)
    return None if method is None else method()


def interrupt_sink(sink: FrameSink, epoch: int) -> bool:
    """Call ``sink.interrupt(epoch)`` when the sink has it; True if it did."""
    method = getattr(sink, "interrupt", None)
    if method is None:
        return False
    method(epoch)
    return True

"""The sink side of the frame bus: what every output (recorder, virtual camera, OBS) implements.

A sink receives :class:`~engine.interface.FrameChunk` s in order from one bus subscriber thread.
``write`` must return quickly (about one frame period per frame); a sink that cannot keep up is
dropped chunks by the bus, it never slows the engine down.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from engine.interface import ChunkSpec, FrameChunk

__all__ = ["FrameSink", "SinkError"]


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

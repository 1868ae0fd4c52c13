"""The preview sink: each chunk's frames (JPEG) and the audio that plays with them, in one binary message.

Why not WebRTC: the daemon's chunks already carry frames *and* their audio on one sample clock. Sending them
together over the page's WebSocket keeps that pairing exact, and the page schedules the audio on its
``AudioContext`` and shows each frame when that audio clock reaches it (``static/studio.js``): lip sync by
construction, no RTP/RTCP clock recovery. On loopback bandwidth is no concern (a 512x512 JPEG is ~30 kB), and no
video encoder runs unless a page is watching.

Message layout (little-endian): ``u32 header_len``, a JSON header (``type: "chunk"``, epoch, first_frame, fps,
sample_rate, ``sent_ms`` wall clock, ``sizes`` of the JPEGs), the JPEGs back to back, then the audio as int16.
"""
from __future__ import annotations

import json
import logging
import struct
import time
from collections.abc import Callable

import cv2
import numpy as np

from engine.interface import ChunkSpec, FrameChunk

__all__ = ["PREVIEW_SINK", "PreviewSink", "encode_chunk"]

log = logging.getLogger(__name__)

PREVIEW_SINK = "preview"


def encode_chunk(chunk: FrameChunk, spec: ChunkSpec, quality: int) -> bytes:
    """One chunk as the page's binary message (see the module docstring)."""
    jpegs = []
    for frame in chunk.frames:
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise RuntimeError("JPEG encoding of a preview frame failed")
        jpegs.append(data.tobytes())
    pcm = (np.clip(np.asarray(chunk.audio, dtype=np.float32), -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
    header = json.dumps({"type": "chunk", "session": chunk.session_id, "epoch": chunk.epoch,
                         "first_frame": chunk.first_frame, "fps": float(spec.fps), "sample_rate": spec.sample_rate,
                         "sent_ms": time.time() * 1000.0, "sizes": [len(j) for j in jpegs]}).encode()
    return b"".join([struct.pack("<I", len(header)), header, *jpegs, pcm])


class PreviewSink:
    """A :class:`~plugins.base.FrameSink` that hands each chunk to the page's WebSocket clients.

    ``publish(data)`` queues a binary message for every client (never blocks); ``watching()`` says whether any
    page is connected (no encoding otherwise); ``flush(epoch)`` tells the pages to drop what they scheduled.
    """

    def __init__(self, publish: Callable[[bytes], None], watching: Callable[[], bool],
                 flush: Callable[[int], None], quality: int = 80) -> None:
        self.name = PREVIEW_SINK
        self._publish = publish
        self._watching = watching
        self._flush = flush
        self._quality = quality
        self._spec: ChunkSpec | None = None
        self.chunks_sent = 0

    def open(self, spec: ChunkSpec) -> None:
        self._spec = spec

    def write(self, chunk: FrameChunk) -> None:
        if self._spec is None or not self._watching():
            return
        self._publish(encode_chunk(chunk, self._spec, self._quality))
        self.chunks_sent += 1

    def hold(self, reason: str) -> None:
        """Nothing to do: the page keeps showing its last frame."""

    def interrupt(self, epoch: int) -> None:
        """Barge-in: the pages drop the audio and frames they scheduled, so the avatar falls silent now."""
        self._flush(epoch)

    def close(self) -> None:
        self._spec = None

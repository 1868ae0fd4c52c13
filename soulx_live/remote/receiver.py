"""The laptop's decode thread: H.264 chunks from the link -> jitter buffer -> the local frame bus.

It owns the local :class:`~soulx_live.bus.FramePublisher` (the sinks subscribe to it exactly as to a local
engine) and never waits on a sink: the bus drops for a slow sink. Chunks are renumbered onto one local frame
timeline (a new remote session continues where the last one ended). After loss (a gap in ``seq``, a chunk the
link could not queue, a decode error) chunks are skipped until a keyframe, which the engine thread asks the
server for; meanwhile the sinks hold the last frame (then the idle loop).
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass

import numpy as np

from engine.interface import ChunkSpec, FrameChunk
from soulx_live.bus import FramePublisher
from soulx_live.remote import wire as w
from soulx_live.remote.codec import CodecError, VideoDecoder, pcm16_to_float
from soulx_live.remote.jitter import JitterBuffer

__all__ = ["Inbound", "Receiver", "ReceiverStats"]

log = logging.getLogger(__name__)

QUEUE_CHUNKS = 32
IDLE_WAIT_S = 0.02


@dataclass(frozen=True)
class Inbound:
    """A ChunkDown as the engine thread hands it over, with where its session starts on the local timeline."""

    header: w.ChunkDown
    video: bytes
    audio: bytes
    arrival: float
    frame_offset: int


@dataclass
class ReceiverStats:
    chunks: int = 0  # published to the local bus
    frames: int = 0
    decode_errors: int = 0
    gaps: int = 0  # chunks missing in a session's sequence
    skipped_frames: int = 0  # waiting for a keyframe after loss
    queue_dropped: int = 0  # the decode thread fell behind


class Receiver:
    """The decode thread's body (:meth:`run`); :meth:`put` and :attr:`want_keyframe` for the engine thread."""

    def __init__(self, address: str, spec: ChunkSpec, *, session_id: str, hwm_chunks: int, jitter_max_s: float,
                 on_dropped: object = None) -> None:
        self.address = address
        self.spec = spec
        self.session_id = session_id
        self.hwm_chunks = hwm_chunks
        self.stats = ReceiverStats()
        self.jitter = JitterBuffer(max_delay_s=jitter_max_s, chunk_s=spec.chunk_duration_s)
        self.want_keyframe = threading.Event()
        self.published = threading.Event()  # set on every publish (the drain watches it)
        self._on_dropped = on_dropped
        self._queue: queue.Queue[Inbound] = queue.Queue(QUEUE_CHUNKS)
        self._stop = threading.Event()
        self._decoder = VideoDecoder()
        self._remote: tuple[str, int] | None = None  # (session, seq) of the last chunk taken
        self._need_key = True
        self._seq = 0

    def put(self, item: Inbound) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.stats.queue_dropped += 1
            self._lost(item.header.n, "the decode thread fell behind")

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        publisher = FramePublisher(self.address, hwm_chunks=self.hwm_chunks)
        try:
            while not self._stop.is_set() or self._queue.qsize() or len(self.jitter):
                due = self.jitter.next_due()
                wait = IDLE_WAIT_S if due is None else max(0.0, min(IDLE_WAIT_S, due - time.monotonic()))
                try:
                    self._take(self._queue.get(timeout=wait))
                except queue.Empty:
                    pass
                for chunk in self.jitter.pop_due(time.monotonic()):
                    self._publish(publisher, chunk)  # type: ignore[arg-type]
                if self._stop.is_set() and not self._queue.qsize():
                    for chunk in self.jitter.pop_due(float("inf")):  # the end: what waits plays now
                        self._publish(publisher, chunk)  # type: ignore[arg-type]
        finally:
            publisher.close()

    # -- the decode thread -----------------------------------------------------------------------

    def _take(self, item: Inbound) -> None:
        h = item.header
        if self._remote is None or self._remote[0] != h.session_id:
            self._decoder.reset()
            self.jitter.reset()
            self._need_key = True
        elif h.seq != self._remote[1] + 1:
            self.stats.gaps += h.seq - self._remote[1] - 1
            self._loss("a gap in the chunk sequence")
        self._remote = (h.session_id, h.seq)
        if h.audio_samples != h.n * self.spec.samples_per_frame:
            self.stats.decode_errors += 1
            self._lost(h.n, "a chunk whose audio does not match its frames")
            return
        if self._need_key and not h.keyframe:
            self.stats.skipped_frames += h.n
            self._lost(h.n, None)
            return
        packets, start = [], 0
        for size in h.packet_sizes:
            packets.append(item.video[start:start + size])
            start += size
        try:
            frames = self._decoder.decode(packets, h.n, self.spec.height, self.spec.width)
        except CodecError as exc:
            self.stats.decode_errors += 1
            self._decoder.reset()
            self._loss(str(exc))
            self._lost(h.n, None)
            return
        self._need_key = False
        spf = self.spec.samples_per_frame
        first = h.first_frame + item.frame_offset
        chunk = FrameChunk(self.session_id, 0, first, frames, pcm16_to_float(item.audio), first * spf, epoch=h.epoch)
        if not self.jitter.push(chunk, h.sent_ns / 1e9, item.arrival, h.n):  # network jitter only
            self._lost(h.n, None)
            self._need_key = False  # a late chunk decoded fine: the reference chain is intact

    def _loss(self, why: str) -> None:
        if not self._need_key:
            log.info("remote video: %s; holding the last frame until the next keyframe", why)
        self._need_key = True
        self.want_keyframe.set()

    def _lost(self, frames: int, why: str | None) -> None:
        if why is not None:
            self._loss(why)
        if callable(self._on_dropped):
            self._on_dropped(frames)

    def _publish(self, publisher: FramePublisher, chunk: FrameChunk) -> None:
        out = FrameChunk(chunk.session_id, self._seq, chunk.first_frame, chunk.frames,
                         np.ascontiguousarray(chunk.audio, dtype=np.float32), chunk.audio_t0, epoch=chunk.epoch)
        self._seq += 1
        publisher.publish(out, self.spec, epoch=chunk.epoch)
        self.stats.chunks += 1
        self.stats.frames += chunk.num_frames
        self.published.set()

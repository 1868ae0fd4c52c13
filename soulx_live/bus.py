"""The frame bus: one publisher (the engine side) fans FrameChunks out to any number of sinks over ZeroMQ.

Wire format, one ZeroMQ multipart message per chunk::

    [b"frames", FrameHeader, pixels (n*h*w*3 bytes rgb24), audio (audio_samples float32 LE)(, alpha (n*h*w bytes))]
    [b"frames", EndOfStream]
    [b"status", EngineStatus]

Backpressure: a slow subscriber loses whole chunks, it never slows the publisher and never sees stale
video. Each subscriber's queue is bounded by ``hwm_chunks`` on both ends (SNDHWM on the publisher's
pipe to it, RCVHWM on its own); when they are full the publisher drops that subscriber's copy of the
next chunk (PUB semantics) while other subscribers keep theirs. Subscribers notice drops as gaps in
``seq``. A subscriber that stops reading therefore has at most ``2*hwm_chunks`` chunks queued for it
(measured; allow one more inside the I/O threads) plus what the kernel socket buffer holds (~200 KiB on
Linux, under one chunk at video sizes), so the video it sees is at most that many of its own
per-chunk processing times old, however long it stalls.
``ZMQ_CONFLATE`` is not used: it does not support multipart messages and ignores the HWM.

Zero copy: the publisher hands the chunk's numpy buffers to ZeroMQ without copying (``copy=False``);
pyzmq keeps a reference to each array until libzmq has finished sending it to every subscriber, so the
memory stays valid after ``publish`` returns even if the caller drops the chunk. What zero copy cannot
survive is *writing* into an array after publishing it (a reused output buffer): frames still queued
would change under the subscribers. FrameChunk arrays are immutable by contract, and ``publish`` marks
them read-only so that such a write fails loudly instead of corrupting frames in flight. We do not copy
because a FlashTalk chunk is ~29 MB (1080p: 6 MB per frame) and the copy would cost milliseconds and
memory bandwidth on every chunk. Received arrays are read-only views of the ZeroMQ message buffers.

Slow joiner: a PUB/SUB subscription reaches the publisher asynchronously, and chunks published before
it arrives are not delivered to that subscriber. The publisher is an XPUB socket that sees every
subscription, so tests and demos call :meth:`FramePublisher.wait_for_subscribers` before publishing.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import zmq

from engine.interface import ChunkSpec, FrameChunk

from .protocol import (
    TOPIC_FRAMES,
    TOPIC_STATUS,
    EndOfStream,
    EngineState,
    EngineStatus,
    FrameHeader,
    ProtocolError,
    decode,
    encode,
)

__all__ = ["EndOfStream", "EngineStatus", "FramePublisher", "FrameSubscriber", "PublisherStats", "SubscriberStats"]

log = logging.getLogger(__name__)


@dataclass
class PublisherStats:
    published: int = 0  # chunks handed to ZeroMQ
    frames: int = 0
    bytes: int = 0
    not_sent: int = 0  # sends ZeroMQ refused (socket busy); per-subscriber drops are invisible here


@dataclass
class SubscriberStats:
    received: int = 0  # chunks delivered to the caller
    frames: int = 0
    dropped_gaps: int = 0  # chunks missing between consecutive seqs of one session and epoch
    malformed: int = 0  # messages rejected as unparsable, inconsistent or unexpected
    unknown_version: int = 0  # messages with another schema version
    end_of_stream: int = 0
    status: int = 0


class FramePublisher:
    """Publishes FrameChunks on ``endpoint`` (binds). Never blocks: a full subscriber loses the chunk.

    Like any ZeroMQ socket, use it from one thread.
    """

    def __init__(self, endpoint: str, *, hwm_chunks: int = 2, context: zmq.Context | None = None) -> None:
        self._sock = (context or zmq.Context.instance()).socket(zmq.XPUB)
        self._sock.setsockopt(zmq.SNDHWM, hwm_chunks)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.XPUB_VERBOSER, 1)  # every (un)subscription comes up: count subscribers
        self._sock.bind(endpoint)
        self.endpoint: str = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)  # resolves tcp port 0
        self.stats = PublisherStats()
        self._subscriptions: Counter[bytes] = Counter()

    @property
    def subscribers(self) -> int:
        """Subscriptions that receive frames (one per connected FrameSubscriber)."""
        self._drain_subscriptions()
        return sum(n for topic, n in self._subscriptions.items() if TOPIC_FRAMES.startswith(topic))

    def wait_for_subscribers(self, count: int = 1, timeout_s: float = 5.0) -> bool:
        """Block until ``count`` subscribers are connected (the slow-joiner handshake); False on timeout."""
        deadline = time.monotonic() + timeout_s
        while self.subscribers < count:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0 or not self._sock.poll(remaining_ms, zmq.POLLIN):
                return self.subscribers >= count
        return True

    def publish(self, chunk: FrameChunk, spec: ChunkSpec, *, epoch: int | None = None) -> bool:
        """Send one chunk (zero copy; marks its arrays read-only). False if ZeroMQ refused it.

        ``spec`` supplies the frame rate and sample rate; ``epoch`` (default: ``chunk.epoch``) is the
        barge-in epoch the header carries. Raises ValueError for a chunk that breaks the FrameChunk
        contract (the producer's bug, not a wire problem).
        """
        epoch = chunk.epoch if epoch is None else epoch
        frames, audio, alpha = _check_chunk(chunk, spec)
        n, h, w, _ = frames.shape
        fps = Fraction(spec.fps)
        header = FrameHeader(
            session_id=chunk.session_id, seq=chunk.seq, first_frame=chunk.first_frame, n=n, h=h, w=w,
            fps_num=fps.numerator, fps_den=fps.denominator, sample_rate=spec.sample_rate,
            audio_t0=chunk.audio_t0, audio_samples=audio.shape[0], epoch=epoch, sent_mono_ns=time.monotonic_ns(),
            alpha=alpha is not None,
        )
        parts: list[bytes | np.ndarray] = [TOPIC_FRAMES, encode(header), frames, audio]
        if alpha is not None:
            parts.append(alpha)
        if not self._send(parts):
            return False
        self.stats.published += 1
        self.stats.frames += n
        self.stats.bytes += frames.nbytes + audio.nbytes + (0 if alpha is None else alpha.nbytes)
        return True

    def publish_end(self, session_id: str, last_frame: int) -> bool:
        """Announce the session's end. Advisory: like any message it is dropped for a full subscriber."""
        return self._send([TOPIC_FRAMES, encode(EndOfStream(session_id=session_id, last_frame=last_frame))])

    def publish_status(self, state: EngineState, *, detail: str = "", session_id: str | None = None,
                       chunks_done: int = 0) -> bool:
        """Broadcast the engine state on the ``status`` topic (for subscribers that asked for it)."""
        status = EngineStatus(state=state, detail=detail, session_id=session_id, chunks_done=chunks_done)
        return self._send([TOPIC_STATUS, encode(status)])

    def close(self, linger_ms: int = 1000) -> None:
        """Close, giving chunks still queued (the session's last chunk, EndOfStream) ``linger_ms``
        to reach connected subscribers; a closed publisher with linger 0 would discard them."""
        self._sock.close(linger=linger_ms)

    def __enter__(self) -> FramePublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, parts: list[bytes | np.ndarray]) -> bool:
        self._drain_subscriptions()
        try:
            self._sock.send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            self.stats.not_sent += 1
            return False
        return True

    def _drain_subscriptions(self) -> None:
        while self._sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            event = self._sock.recv()
            if event[:1] in (b"\x00", b"\x01"):
                self._subscriptions[event[1:]] += 1 if event[0] else -1


def _check_chunk(chunk: FrameChunk, spec: ChunkSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    frames, audio, alpha = chunk.frames, chunk.audio, chunk.alpha
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3 or frames.shape[0] < 1:
        raise ValueError(f"chunk {chunk.seq}: frames must be uint8 (n, H, W, 3), got {frames.dtype} {frames.shape}")
    expected = frames.shape[0] * spec.samples_per_frame
    if audio.ndim != 1 or audio.shape[0] != expected:
        raise ValueError(f"chunk {chunk.seq}: audio must be {expected} mono samples for {frames.shape[0]} frames, got {audio.shape}")
    if alpha is not None:
        if alpha.dtype != np.uint8 or alpha.shape != frames.shape[:3]:
            raise ValueError(f"chunk {chunk.seq}: alpha must be uint8 {frames.shape[:3]}, got {alpha.dtype} {alpha.shape}")
        alpha = np.ascontiguousarray(alpha)
        alpha.flags.writeable = False
    frames = np.ascontiguousarray(frames)  # no-op for a contract-abiding chunk
    audio = np.ascontiguousarray(audio, dtype="<f4")
    frames.flags.writeable = False
    audio.flags.writeable = False
    return frames, audio, alpha


class FrameSubscriber:
    """Receives FrameChunks from ``endpoint`` (connects). Bad messages are logged, counted and skipped.

    Like any ZeroMQ socket, use it from one thread.
    """

    def __init__(self, endpoint: str, *, hwm_chunks: int = 2, context: zmq.Context | None = None,
                 topics: tuple[bytes, ...] = (TOPIC_FRAMES,)) -> None:
        self.endpoint = endpoint
        self._sock = (context or zmq.Context.instance()).socket(zmq.SUB)
        self._sock.setsockopt(zmq.RCVHWM, hwm_chunks)
        self._sock.setsockopt(zmq.LINGER, 0)
        for topic in topics:
            self._sock.setsockopt(zmq.SUBSCRIBE, topic)
        self._sock.connect(endpoint)
        self.stats = SubscriberStats()
        self.last_header: FrameHeader | None = None
        self._last: tuple[str, int, int] | None = None  # session_id, epoch, seq of the last chunk

    @property
    def spec(self) -> ChunkSpec | None:
        """Geometry and timing of the last received chunk (None before the first)."""
        h = self.last_header
        if h is None:
            return None
        return ChunkSpec(Fraction(h.fps_num, h.fps_den), h.sample_rate, h.n, h.h, h.w)

    def recv(self, timeout_ms: int | None = None) -> FrameChunk | EndOfStream | EngineStatus | None:
        """The next valid message, or None after ``timeout_ms`` (None: wait indefinitely; 0: don't wait).

        EngineStatus only arrives when subscribed to the ``status`` topic.
        """
        deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000
        while True:
            wait_ms = None if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            if not self._sock.poll(wait_ms, zmq.POLLIN):
                return None
            try:
                parts = self._sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                continue
            msg = self._parse(parts)
            if msg is not None:
                return msg

    def close(self) -> None:
        self._sock.close(linger=0)

    def __enter__(self) -> FrameSubscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _parse(self, parts: list[zmq.Frame]) -> FrameChunk | EndOfStream | EngineStatus | None:
        if len(parts) < 2:
            return self._reject("malformed", f"{len(parts)}-part message, expected a topic and a header")
        topic = parts[0].bytes
        try:
            msg = decode(parts[1].buffer)
        except ProtocolError as exc:
            return self._reject(exc.reason, str(exc))
        if topic == TOPIC_FRAMES and isinstance(msg, FrameHeader):
            return self._chunk(msg, parts)
        expected = {TOPIC_FRAMES: EndOfStream, TOPIC_STATUS: EngineStatus}.get(topic)
        if expected is None or not isinstance(msg, expected) or len(parts) != 2:
            return self._reject("malformed", f"unexpected {type(msg).__name__} in a {len(parts)}-part message on topic {topic!r}")
        if isinstance(msg, EndOfStream):
            self.stats.end_of_stream += 1
        else:
            self.stats.status += 1
        return msg

    def _chunk(self, header: FrameHeader, parts: list[zmq.Frame]) -> FrameChunk | None:
        want = 5 if header.alpha else 4
        if len(parts) != want:
            return self._reject("malformed", f"chunk {header.seq} has {len(parts)} parts, expected {want} (topic, header, pixels, "
                                             f"audio{', alpha' if header.alpha else ''})")
        if min(header.n, header.h, header.w, header.fps_num, header.fps_den, header.sample_rate) < 1 or header.audio_samples < 0:
            return self._reject("malformed", f"chunk {header.seq} has a nonsensical header: {header}")
        alpha_len = len(parts[4]) if header.alpha else 0
        if len(parts[2]) != header.pixel_bytes or len(parts[3]) != header.audio_bytes or alpha_len != header.alpha_bytes:
            return self._reject("malformed", f"chunk {header.seq}: payload of {len(parts[2])}+{len(parts[3])}+{alpha_len} bytes, "
                                             f"header says {header.pixel_bytes}+{header.audio_bytes}+{header.alpha_bytes}")
        frames = np.frombuffer(parts[2].buffer, dtype=np.uint8).reshape(header.n, header.h, header.w, 3)
        audio = np.frombuffer(parts[3].buffer, dtype="<f4")
        frames.flags.writeable = audio.flags.writeable = False  # views of the message: immutable like any FrameChunk
        alpha = None
        if header.alpha:
            alpha = np.frombuffer(parts[4].buffer, dtype=np.uint8).reshape(header.n, header.h, header.w)
            alpha.flags.writeable = False
        key = (header.session_id, header.epoch)
        if self._last is not None and self._last[:2] == key and header.seq > self._last[2] + 1:
            self.stats.dropped_gaps += header.seq - self._last[2] - 1
        self._last = (*key, header.seq)
        self.last_header = header
        self.stats.received += 1
        self.stats.frames += header.n
        return FrameChunk(header.session_id, header.seq, header.first_frame, frames, audio, header.audio_t0,
                          epoch=header.epoch, alpha=alpha)

    def _reject(self, reason: str, detail: str) -> None:
        if reason == "version":
            self.stats.unknown_version += 1
        else:
            self.stats.malformed += 1
        log.error("frame bus %s: skipped a bad message (%s): %s [malformed %d, unknown version %d so far]",
                  self.endpoint, reason, detail, self.stats.malformed, self.stats.unknown_version)
        return None

"""The live feed an OBS Media Source reads: NUT (rawvideo BGRA + pcm_s16le mono) over TCP.

The alpha byte is 255 (opaque) unless frames come with a person matte (``sinks.obs.alpha``): then it is the
matte, and OBS's Media Source, which honours BGRA alpha, shows the sources behind the avatar through it.

Measured in ``../shared/research/integration.md`` §1 as the best live path into OBS here (about
0.1-0.2 s, no encode cost, audio and video muxed together so OBS keeps them in sync).

The server owns its listening socket (bound in :meth:`FeedServer.start`, so a taken port fails at once
and port 0 picks a free one) and one sender thread:

- ``push`` (the sink thread) copies the frames into a short queue and returns; it never blocks.
- The sender accepts one reader at a time (OBS's ``ffmpeg_source``), muxes with PyAV into the socket
  and paces frames on its own output timeline: one frame per period from the moment the reader is
  accepted (so the blocking accept never causes a burst), pts = output frame index, audio pts = output
  sample index. When the queue is empty at a tick, a frame arriving within one frame period is sent
  on arrival and the clock re-anchored to it (this aligns the ticks with the engine's chunks, saving
  up to a frame period of latency); otherwise the last frame repeats with silence (the picture holds,
  the stream never stalls, so OBS keeps its timing); a queue longer than ``max_queue_frames`` drops its
  oldest frames, which bounds the latency a late burst can add; a backlog that never drains (the queue
  stayed at two frames or more for ``trim_window`` ticks) loses one frame whose audio is near silence.
- When OBS disconnects (source removed, OBS closed) the send fails, or stalls for ``SEND_TIMEOUT_S``;
  the sender closes that connection and goes back to accepting. A new connection while streaming
  replaces the current reader (OBS re-opens its Media Source when its settings change; one source
  reads one feed), so the newest reader wins. A new reader starts from the newest queued frame.
"""
from __future__ import annotations

import logging
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import cv2
import numpy as np

__all__ = ["FeedServer", "FeedStats", "feed_url"]

log = logging.getLogger(__name__)

SEND_TIMEOUT_S = 2.0  # a reader that stops reading for this long counts as gone
ACCEPT_POLL_S = 0.2
QUIET_PCM = 330  # int16 peak below about -40 dBFS: a frame whose audio may be skipped


def feed_url(host: str, port: int) -> str:
    """The URL OBS's Media Source opens for a feed served on ``host:port`` (wildcards become loopback)."""
    reach = "127.0.0.1" if host in ("", "0.0.0.0") else ("::1" if host == "::" else host)
    return f"tcp://[{reach}]:{port}" if ":" in reach else f"tcp://{reach}:{port}"


@dataclass
class FeedStats:
    """Counters of the feed (read from any thread; updated by the sender)."""

    connections: int = 0
    connected: bool = False
    frames_sent: int = 0  # frames muxed to a reader, repeats included
    frames_repeated: int = 0  # ticks with an empty queue (last frame + silence)
    frames_dropped: int = 0  # queued frames skipped (queue too long, no reader, interrupt)
    frames_trimmed: int = 0  # quiet frames skipped to remove a standing backlog (latency)
    last_send_wall: float = 0.0
    av_offset_s: float | None = None  # end of the latest muxed frame minus the end of its audio, seconds


class _SocketWriter:
    """The file-like PyAV muxes into: ``write`` sends everything or raises (a gone reader)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.failed: BaseException | None = None  # PyAV may not re-raise a callback's error: checked after each mux

    def write(self, data: bytes | memoryview) -> int:
        if self.failed is not None:
            raise self.failed
        try:
            self._sock.sendall(data)
        except OSError as exc:
            self.failed = exc
            raise
        return len(data)

    def flush(self) -> None:
        pass


class FeedServer:
    """Serve frames and audio as a paced NUT stream on ``tcp://host:port``; see the module docstring."""

    def __init__(self, host: str, port: int, *, width: int, height: int, fps: Fraction | int, sample_rate: int,
                 max_queue_frames: int = 8, trim_window: int = 10, name: str = "obs-feed",
                 on_frame_sent: Callable[[int, np.ndarray], None] | None = None) -> None:
        self.host, self.name = host, name
        self.width, self.height = width, height
        self.fps = Fraction(fps)
        self.sample_rate = sample_rate
        spf = Fraction(sample_rate) / self.fps
        if spf.denominator != 1:
            raise ValueError(f"{sample_rate} Hz is not a whole number of samples per frame at {self.fps} fps")
        self.samples_per_frame = int(spf)
        self.max_queue_frames = max(1, max_queue_frames)
        self.trim_window = max(2, trim_window)
        self._depths: deque[int] = deque(maxlen=self.trim_window)
        self.on_frame_sent = on_frame_sent  # (output index, RGB frame) after each mux: benchmarks and tests
        self.stats = FeedStats()
        self._requested_port = port
        self._sock: socket.socket | None = None
        self._queue: deque[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = deque()  # rgb, pcm, alpha
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: socket.socket | None = None
        self._silence = np.zeros(self.samples_per_frame, np.int16)

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._sock.getsockname()[1] if self._sock is not None else self._requested_port

    @property
    def url(self) -> str:
        return feed_url(self.host, self.port)

    def start(self) -> None:
        """Bind and listen now (OSError naming the port if it is taken), then start sending."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self._requested_port))
        except OSError as exc:
            sock.close()
            raise OSError(exc.errno, f"{self.name}: cannot listen on {self.host}:{self._requested_port} ({exc.strerror}); "
                                     f"set sinks.obs.feed_port to a free port") from None
        sock.listen(1)
        sock.settimeout(ACCEPT_POLL_S)
        self._sock = sock
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        log.info("%s: serving %dx%d @ %s fps + %d Hz audio at %s", self.name, self.width, self.height, self.fps,
                 self.sample_rate, self.url)

    def close(self) -> None:
        """Stop the sender and close every socket; safe to call twice."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        conn = self._conn
        if conn is not None:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    # -- producer side (never blocks) ------------------------------------------------------------

    def push(self, frames: np.ndarray, audio: np.ndarray, alpha: np.ndarray | None = None) -> None:
        """Queue RGB uint8 ``(n, H, W, 3)`` frames and the float32 mono audio that plays with them, and their
        alpha (uint8 ``(n, H, W)``, None: opaque)."""
        n = int(frames.shape[0])
        if frames.shape[1:] != (self.height, self.width, 3):
            raise ValueError(f"{self.name}: frames of shape {frames.shape[1:]}, the feed is {self.height}x{self.width}x3")
        pcm = np.zeros(n * self.samples_per_frame, np.int16)
        a = np.asarray(audio, np.float32).reshape(-1)[: pcm.shape[0]]
        pcm[: a.shape[0]] = np.round(np.clip(a, -1.0, 1.0) * 32767.0).astype(np.int16)
        frames = np.array(frames, dtype=np.uint8, copy=True)  # the bus may reuse its buffer after write returns
        if alpha is not None and alpha.shape != frames.shape[:3]:
            raise ValueError(f"{self.name}: alpha of shape {alpha.shape}, the frames are {frames.shape[:3]}")
        mattes = None if alpha is None else np.array(alpha, dtype=np.uint8, copy=True)
        spf = self.samples_per_frame
        with self._cond:
            for i in range(n):
                self._queue.append((frames[i], pcm[i * spf:(i + 1) * spf], None if mattes is None else mattes[i]))
            self._cond.notify_all()

    def clear(self) -> int:
        """Drop every queued frame (barge-in): the picture holds its last frame. Returns how many."""
        with self._cond:
            n = len(self._queue)
            self._queue.clear()
            self._depths.clear()
            self.stats.frames_dropped += n
        return n

    def queued(self) -> int:
        with self._cond:
            return len(self._queue)

    # -- sender thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            conn = self._accept()
            if conn is None:
                continue
            self._conn = conn
            self.stats.connections += 1
            self.stats.connected = True
            try:
                self._stream(conn)
            except Exception as exc:  # noqa: BLE001 - a gone reader in any form: back to listening
                if not self._stop.is_set():
                    log.info("%s: reader disconnected (%s); listening again on %s", self.name, type(exc).__name__, self.url)
            finally:
                self.stats.connected = False
                self._conn = None
                try:
                    conn.close()
                except OSError:
                    pass

    def _accept(self) -> socket.socket | None:
        sock = self._sock
        if sock is None:
            self._stop.wait(ACCEPT_POLL_S)
            return None
        self._trim(self.max_queue_frames)
        try:
            conn, peer = sock.accept()
        except TimeoutError:
            return None
        except OSError:
            if not self._stop.is_set():
                log.warning("%s: accept failed", self.name, exc_info=True)
                self._stop.wait(ACCEPT_POLL_S)
            return None
        conn.settimeout(SEND_TIMEOUT_S)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        log.info("%s: reader connected from %s:%s", self.name, peer[0], peer[1])
        return conn

    def _reader_waiting(self) -> bool:
        """A new connection is pending (OBS re-opened its source): the newest reader wins."""
        sock = self._sock
        if sock is None:
            return False
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return bool(readable)

    def _trim(self, keep: int) -> None:
        with self._cond:
            while len(self._queue) > keep:
                self._queue.popleft()
                self.stats.frames_dropped += 1

    def _stream(self, conn: socket.socket) -> None:
        import av

        writer = _SocketWriter(conn)
        container = av.open(writer, mode="w", format="nut", options={"flush_packets": "1"})
        try:
            video = container.add_stream("rawvideo", rate=self.fps)
            video.width, video.height, video.pix_fmt = self.width, self.height, "bgra"
            video.codec_context.time_base = 1 / self.fps
            audio = container.add_stream("pcm_s16le", rate=self.sample_rate)
            audio.layout = "mono"
            audio.codec_context.time_base = Fraction(1, self.sample_rate)
            self._trim(1)  # a new reader starts from the newest frame
            self._depths.clear()
            last: np.ndarray | None = None
            last_alpha: np.ndarray | None = None
            n = 0
            t0 = time.monotonic()
            while not self._stop.is_set():
                if last is None:  # nothing sent yet: wait for the first frame, the clock starts with it
                    item = self._wait_item(time.monotonic() + ACCEPT_POLL_S)
                    if item is None:
                        if self._reader_waiting():
                            return
                        continue
                else:
                    item = self._next_item(t0 + float(n / self.fps))
                if item is None:
                    assert last is not None
                    due = t0 + float(n / self.fps)
                    # Empty at the tick: a chunk due about now gets one frame period before the picture
                    # repeats; sending it on arrival re-anchors the clock, which aligns the ticks with
                    # the engine's chunk arrivals (no waiting for the next tick).
                    item = self._wait_item(due + float(1 / self.fps))
                    if item is not None:
                        t0 = time.monotonic() - float(n / self.fps)
                    else:
                        item = (last, self._silence, last_alpha)
                        self.stats.frames_repeated += 1
                rgb, pcm, matte = item
                last, last_alpha = rgb, matte
                self._mux(container, video, audio, rgb, pcm, n, matte)
                if writer.failed is not None:
                    raise writer.failed
                if n == 0:
                    t0 = time.monotonic()  # the first mux writes the header: start the clock after it
                n += 1
                if self._reader_waiting():
                    log.info("%s: a new reader is connecting; dropping the old one", self.name)
                    return
        finally:
            try:
                container.close()
            except Exception:
                log.debug("%s: error closing the muxer", self.name, exc_info=True)

    def _wait_item(self, deadline: float) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
        """The next queued frame as soon as one arrives before ``deadline`` (monotonic), else None."""
        with self._cond:
            while not self._queue and not self._stop.is_set():
                wait = deadline - time.monotonic()
                if wait <= 0:
                    return None
                self._cond.wait(wait)
            return self._queue.popleft() if self._queue else None

    def _next_item(self, due: float) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
        """Wait until ``due`` (monotonic) and take the next queued frame, or None when the queue is empty."""
        with self._cond:
            while not self._stop.is_set():
                wait = due - time.monotonic()
                if wait <= 0:
                    break
                self._cond.wait(wait)
            while len(self._queue) > self.max_queue_frames:
                self._queue.popleft()
                self.stats.frames_dropped += 1
            self._trim_backlog()
            return self._queue.popleft() if self._queue else None

    def _trim_backlog(self) -> None:
        """Skip one quiet frame when the queue never ran below two frames for ``trim_window`` ticks.

        Frames are shown at their output index, so a frame that waits here is shown that much later;
        a backlog that never drains (the ticks happened to start a few frames behind the engine's
        chunks) is pure latency. Only a frame whose audio is near silence is skipped, so no speech is cut.
        """
        self._depths.append(len(self._queue))
        if len(self._depths) < self.trim_window or min(self._depths) < 2:
            return
        if int(np.abs(self._queue[0][1]).max(initial=0)) < QUIET_PCM:
            self._queue.popleft()
            self.stats.frames_trimmed += 1
            self._depths.clear()

    def _mux(self, container: object, video: object, audio: object, rgb: np.ndarray, pcm: np.ndarray, n: int,
             alpha: np.ndarray | None = None) -> None:
        import av

        bgra = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA)
        if alpha is not None:
            bgra[..., 3] = alpha
        vf = av.VideoFrame.from_ndarray(bgra, format="bgra")
        vf.pts = n
        vf.time_base = 1 / self.fps
        af = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        af.sample_rate = self.sample_rate
        af.pts = n * self.samples_per_frame
        af.time_base = Fraction(1, self.sample_rate)
        for packet in video.encode(vf):  # type: ignore[attr-defined]
            container.mux(packet)  # type: ignore[attr-defined]
        for packet in audio.encode(af):  # type: ignore[attr-defined]
            container.mux(packet)  # type: ignore[attr-defined]
        self.stats.frames_sent += 1
        self.stats.av_offset_s = (n + 1) / float(self.fps) - (af.pts + pcm.shape[0]) / self.sample_rate
        self.stats.last_send_wall = time.time()
        if self.on_frame_sent is not None:
            self.on_frame_sent(n, rgb)

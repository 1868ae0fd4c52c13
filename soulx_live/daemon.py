"""The daemon: audio source -> engine -> ZeroMQ frame bus -> sinks, with a staged shutdown.

Threads (ZeroMQ sockets never cross threads):

- **main**: installs the signal handlers, starts the others, then only polls flags (every 50 ms) and
  drives the shutdown stages. It never blocks in engine or sink code, so Ctrl-C is always seen.
- **engine**: builds the engine and the session (slow for FlashTalk), owns the ``FramePublisher``;
  moves audio from the intake ring into ``session.push_audio`` and publishes every ready chunk.
- **intake**: plays the audio source into the :class:`~soulx_live.audio.ring.AudioRing`.
- **sink-<name>**: one per sink, each with its own ``FrameSubscriber``; ``sink.write`` per chunk.
- **control**: REP socket on ``endpoint("cli")`` answering ``StatusRequest`` and ``StopRequest``.

Lifecycle (uvicorn/LiveKit style): start -> run -> drain -> close. The first SIGINT/SIGTERM (or a
``StopRequest``) stops intake; the engine turns the audio it already has into chunks, publishes
``EndOfStream`` and the sinks finalise; all of it bounded by ``supervisor.shutdown_grace_s``, after
which the sinks are told to close with what they have. A second signal exits at once
(``os._exit(1)``). When a file source ends, the session ends the same way and the daemon exits 0.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import numpy as np

from engine.interface import AvatarEngine, AvatarSession, ChunkSpec, FrameChunk, SessionRequest
from plugins.base import FrameSink, SinkError
from soulx_live.audio.file_source import FileSource
from soulx_live.audio.ring import AudioRing
from soulx_live.bus import EndOfStream, FramePublisher, FrameSubscriber
from soulx_live import protocol
from soulx_live.config import BusConfig, SoulxConfig
from soulx_live.protocol import StatusReply
from soulx_live.extras import MissingExtraError, require

if TYPE_CHECKING:
    from soulx_live.audio.device_source import DeviceSource

__all__ = [
    "Daemon",
    "DaemonError",
    "DaemonUnavailable",
    "build_engine",
    "build_sinks",
    "build_source",
    "default_speech_path",
    "load_avatar",
    "query_status",
]

log = logging.getLogger(__name__)

POLL_S = 0.05
RING_SECONDS = 10.0  # audio the intake can buffer ahead of the engine before dropping the oldest
SUBSCRIBER_WAIT_S = 5.0
SINK_CLOSE_S = 5.0  # extra time sinks get to finalise after the drain deadline
SINK_STALL_S = 10.0  # non-live input: the longest the engine waits for a sink to catch up
END_QUIET_S = 3.0  # after the engine finished, a sink that heard nothing for this long stops (generous: a starved CPU delays the last chunk)


class DaemonError(RuntimeError):
    """The daemon cannot start or run as configured; the message says what is missing and the fix."""


class DaemonUnavailable(DaemonError):
    """No daemon answered on the control socket."""


# --- building blocks ------------------------------------------------------------------------------


def default_speech_path() -> Path:
    """The built-in demo speech (16 kHz mono wav shipped in the package)."""
    return Path(str(resources.files("soulx_live").joinpath("assets/demo_speech.wav")))


def load_avatar(path: Path | None) -> np.ndarray | None:
    """Read a portrait as uint8 RGB ``(H, W, 3)``; None stays None (the engine's built-in avatar)."""
    if path is None:
        return None
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))
    except FileNotFoundError:
        raise DaemonError(f"avatar image not found: {path}") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DaemonError(f"cannot read avatar image {path}: {exc}") from exc


def build_engine(config: SoulxConfig) -> AvatarEngine:
    """The engine named by ``engine.kind``; heavy imports happen here, not at module import."""
    kind = config.engine.kind
    if kind == "lite":
        from engine.lite.engine import LiteConfig, LiteEngine

        lite = config.engine.lite
        return LiteEngine(
            LiteConfig(
                width=lite.width,
                height=lite.height,
                fps=lite.fps,
                frames_per_chunk=lite.frames_per_chunk,
                sample_rate=config.audio.sample_rate,
                blinks=lite.blinks,
                idle_motion=lite.idle_motion,
            )
        )
    if kind == "flashtalk":
        return _build_flashtalk(config)
    raise DaemonError(f"unknown engine.kind {kind!r}; use 'lite' or 'flashtalk'")


def _build_flashtalk(config: SoulxConfig) -> AvatarEngine:
    from soulx_live.doctor import weights_problems

    problems = []
    weights = config.engine.weights_dir
    if weights is None:
        problems.append("engine.weights_dir is not set (--set engine.weights_dir=models/SoulX-FlashTalk-14B)")
    else:
        problems += [f"weights: {p}" for p in weights_problems(weights)]
    try:
        require("transformers", "engine", "the FlashTalk audio encoder")
    except ImportError as exc:
        problems.append(str(exc))
    torch = require("torch", "engine")
    device = config.engine.device or "cuda"
    if device.startswith("cuda") and not torch.cuda.is_available():
        problems.append("no CUDA GPU is usable (FlashTalk needs one; `soulx-live doctor` shows why)")
    if problems:
        raise DaemonError("the flashtalk engine cannot start: " + "; ".join(problems))
    try:
        from engine import flashtalk  # the GPU engine; imported only when asked for
    except ImportError as exc:
        raise DaemonError(f"the flashtalk engine is not available in this build: {exc}") from exc
    factory = getattr(flashtalk, "build_engine", None)
    if factory is None:
        raise DaemonError("engine.flashtalk has no build_engine(config) entry point in this build")
    return factory(config.engine)


def build_sinks(config: SoulxConfig) -> list[FrameSink]:
    """The sinks enabled in ``config.sinks``."""
    sinks: list[FrameSink] = []
    rec = config.sinks.recorder
    if rec.enabled:
        from plugins.recorder import RecorderSink

        path = rec.path or Path.cwd() / f"soulx-live-{datetime.now():%Y%m%d-%H%M%S}.mp4"
        sinks.append(RecorderSink(path))
    vcam = config.sinks.virtualcam
    if vcam.enabled:
        require("pyvirtualcam", "vcam", "the virtual camera sink")  # fail early with the install hint
        from plugins.virtualcam import VirtualCamSink

        sinks.append(VirtualCamSink(vcam))  # keeps the last frame up by itself: no HoldingSink needed
    if config.sinks.obs.enabled:
        require("obsws_python", "obs", "the OBS integration")
        raise DaemonError("sinks.obs: the OBS integration is not part of this build yet")
    return sinks


def build_source(config: SoulxConfig, block_samples: int) -> FileSource | DeviceSource:
    """The audio input named by ``audio.source``."""
    audio = config.audio
    if audio.source == "file":
        path = audio.file or default_speech_path()
        from soulx_live.audio.file import AudioFileError

        try:
            return FileSource(path, sample_rate=audio.sample_rate, block_samples=block_samples, realtime=audio.realtime)
        except AudioFileError as exc:
            raise DaemonError(str(exc)) from exc
    if audio.source in ("mic", "loopback"):
        from soulx_live.audio.device_source import open_live_source
        from soulx_live.audio.loopback import LoopbackError

        try:
            return open_live_source(audio.source, audio.device, sample_rate=audio.sample_rate, block_samples=block_samples)
        except (LoopbackError, MissingExtraError) as exc:
            raise DaemonError(str(exc)) from exc
    raise DaemonError(f"audio.source={audio.source!r} is not supported by this build yet; use audio.source=file")


# --- the daemon -----------------------------------------------------------------------------------


@dataclass
class _Counters:
    """Shared numbers for ``status``; written by one thread each, read by the control thread."""

    started_mono: float = field(default_factory=time.monotonic)
    state: str = "starting"
    detail: str = ""
    session_id: str | None = None
    chunks: int = 0
    frames: int = 0
    audio_dropped: int = 0
    bus_not_sent: int = 0
    bad_audio_packets: int = 0
    sinks: dict[str, str] = field(default_factory=dict)


class Daemon:
    """One daemon run. ``run()`` blocks until the session ends or a signal stops it; returns the exit code.

    ``engine_factory`` and ``sink_factory`` default to :func:`build_engine` and :func:`build_sinks`
    (tests inject fakes there).
    """

    def __init__(
        self,
        config: SoulxConfig,
        *,
        engine_factory: Callable[[SoulxConfig], AvatarEngine] = build_engine,
        sink_factory: Callable[[SoulxConfig], list[FrameSink]] = build_sinks,
    ) -> None:
        self.config = config
        self._engine_factory = engine_factory
        self._sink_factory = sink_factory
        self.counters = _Counters()
        self.sinks: list[FrameSink] = []
        self.spec: ChunkSpec | None = None
        self._signals = 0  # written only by the signal handler
        self._stop = threading.Event()  # stop intake, drain
        self._abort = threading.Event()  # drain deadline passed: stop now with what we have
        self._intake_done = threading.Event()
        self._audio_ready = threading.Event()
        self._engine_done = threading.Event()
        self._ring: AudioRing | None = None
        self._last_frame = -1  # last frame index published (engine thread)
        self._final_frame: int | None = None  # set once the engine published its last chunk
        self._final_mono = 0.0
        self._source: FileSource | None = None
        self._threads: dict[str, threading.Thread] = {}
        self._sink_progress: dict[str, int] = {}  # sink name -> last frame it wrote (sink threads write)
        self._errors: list[str] = []
        self._startup_error: Exception | None = None

    # -- public ----------------------------------------------------------------------------------

    def run(self) -> int:
        """Start, wait for the end or a stop, drain, close. Returns 0 on a clean end, 1 otherwise.

        A failure before the session starts (engine, avatar, audio file, sockets) is raised instead,
        after everything started so far has been closed.
        """
        self._refuse_if_running()
        restore = self._install_signal_handlers()
        try:
            self._start_thread("control", self._control_loop)
            self._start_thread("engine", self._engine_main)
            self._wait_running()
            self._drain()
        finally:
            self._stop.set()
            self._abort.set()
            self._join_all(timeout_s=2.0)
            restore()
        self.counters.state = "stopped" if not self._errors else "failed"
        if self._startup_error is not None:
            raise self._startup_error  # nothing ran: the caller shows the reason (the CLI as one line)
        for err in self._errors:
            log.error("%s", err)
        return 0 if not self._errors else 1

    def request_stop(self, reason: str = "stop requested") -> None:
        """Begin the drain (thread-safe; what the first signal and ``StopRequest`` do)."""
        if not self._stop.is_set():
            log.info("%s: stopping intake and draining", reason)
            self.counters.detail = "draining"
            self._stop.set()
            if self._source is not None:
                self._source.stop()

    def _refuse_if_running(self) -> None:
        """Binding an ipc:// address replaces a live daemon's socket silently: ask first."""
        try:
            reply = query_status(self.config.bus, timeout_s=0.5)
        except DaemonUnavailable:
            return
        raise DaemonError(f"a daemon is already running (session {reply.session_id}, state {reply.state}); "
                          "stop it first (Ctrl-C in its terminal) or give this one another bus.runtime_dir")

    # -- signals ---------------------------------------------------------------------------------

    def _install_signal_handlers(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None  # embedded use (tests): the caller handles signals
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum: int, frame: FrameType | None) -> None:
            self._signals += 1  # the main loop acts on it; nothing else happens in a handler

        for sig in previous:
            signal.signal(sig, handler)

        def restore() -> None:
            for sig, old in previous.items():
                signal.signal(sig, old)

        return restore

    def _poll_signals(self) -> None:
        if self._signals >= 2:
            log.error("second interrupt: exiting immediately without finalising outputs")
            logging.shutdown()
            os._exit(1)
        if self._signals == 1 and not self._stop.is_set():
            grace = self.config.supervisor.shutdown_grace_s
            self.request_stop(f"interrupt (press Ctrl-C again to force; draining for at most {grace:g} s)")

    # -- main-thread stages ----------------------------------------------------------------------

    def _wait_running(self) -> None:
        """Poll until the session ends on its own (file source finished) or a stop begins."""
        while not self._stop.is_set() and not self._engine_done.is_set():
            self._poll_signals()
            time.sleep(POLL_S)

    def _drain(self) -> None:
        grace_s = self.config.supervisor.shutdown_grace_s
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and not self._sinks_done():
            self._poll_signals()
            time.sleep(POLL_S)
        if not self._sinks_done():
            log.warning("drain not finished after %.1f s (supervisor.shutdown_grace_s); closing outputs now", grace_s)
            self._errors.append(f"shutdown exceeded supervisor.shutdown_grace_s={grace_s:g}")
            self._abort.set()
            end = time.monotonic() + SINK_CLOSE_S
            while time.monotonic() < end and not self._sinks_done(engine_too=False):
                self._poll_signals()
                time.sleep(POLL_S)

    def _sinks_done(self, engine_too: bool = True) -> bool:
        threads = [t for n, t in list(self._threads.items()) if n.startswith("sink-") or (engine_too and n in ("engine", "intake"))]
        return all(not t.is_alive() for t in threads) and (self._engine_done.is_set() or not engine_too)

    def _start_thread(self, name: str, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=self._guard, args=(name, target, *args), name=name, daemon=True)
        self._threads[name] = thread
        thread.start()

    def _guard(self, name: str, target: Callable[..., None], *args: object) -> None:
        try:
            target(*args)
        except Exception as exc:  # noqa: BLE001 - a thread's failure is reported (and the engine's stops the daemon)
            log.debug("thread %s failed", name, exc_info=True)
            self._errors.append(f"{name}: {exc}")
            if name in ("engine", "control") and self.counters.state == "starting":
                self._startup_error = self._startup_error or exc
                self._stop.set()  # run() raises it; no drain messages for a session that never started
            elif not name.startswith("sink-"):  # a broken output does not stop the others
                self.counters.state = "failed"
                self.request_stop(f"{name} failed")
            else:
                log.error("%s failed: %s", name, exc)
        finally:
            if name == "engine":
                self._engine_done.set()

    def _join_all(self, timeout_s: float) -> None:
        end = time.monotonic() + timeout_s
        for thread in list(self._threads.values()):
            thread.join(max(0.0, end - time.monotonic()))

    # -- engine thread ---------------------------------------------------------------------------

    def _engine_main(self) -> None:
        from soulx_live.runtime_dir import endpoint

        log.info("building the %s engine", self.config.engine.kind)
        engine = self._engine_factory(self.config)
        spec = self.spec = engine.spec
        source = self._source = build_source(self.config, block_samples=spec.samples_per_frame)
        if self._stop.is_set():
            source.stop()
        self._ring = AudioRing(int(RING_SECONDS * spec.sample_rate))
        session_id = uuid.uuid4().hex[:12]
        avatar = load_avatar(self.config.engine.avatar)
        session = engine.start_session(
            SessionRequest(session_id=session_id, avatar=avatar, prompt=self.config.engine.prompt, seed=self.config.engine.seed)
        )
        self.counters.session_id = session_id
        address = endpoint("frames", self.config.bus)
        publisher = FramePublisher(address, hwm_chunks=self.config.bus.hwm_chunks)
        try:
            self._start_sinks(address, spec)
            if self.sinks and not publisher.wait_for_subscribers(len(self.sinks), timeout_s=SUBSCRIBER_WAIT_S):
                log.warning("not every sink connected to the bus within %.0f s; their first chunks may be lost", SUBSCRIBER_WAIT_S)
            self.counters.state = "running"
            log.info(
                "session %s: %s engine %dx%d @ %s fps, %s from %s (%.1f s)",
                session_id, engine.name, spec.width, spec.height, spec.fps,
                "real-time" if source.realtime else "as fast as possible", source.name, source.duration_s,
            )
            self._start_thread("intake", self._intake_loop)
            self._pump(session, publisher, spec)
            log.info("session %s ended: %d chunks, %d frames", session_id, self.counters.chunks, self.counters.frames)
        finally:
            # Always announce the end, also after an engine error, so sinks finalise what they have.
            # EndOfStream is advisory on the bus (a full subscriber drops it); _final_frame backs it up.
            self._final_mono = time.monotonic()
            self._final_frame = self._last_frame
            publisher.publish_end(session_id, self._last_frame)
            publisher.close()

    def _pump(self, session: AvatarSession, publisher: FramePublisher, spec: ChunkSpec) -> None:
        """Move audio into the session and publish chunks until intake ends (or the drain is aborted)."""
        ring = self._ring
        assert ring is not None
        pushed = consumed = 0
        while not self._abort.is_set():
            self._audio_ready.wait(POLL_S)
            self._audio_ready.clear()
            intake_over = self._intake_done.is_set()  # read before draining the ring: no sample is missed
            pcm = ring.read(ring.available())
            if pcm.shape[0]:
                pushed += self._push_or_silence(session, pcm)
            # At the end, pad the last partial chunk with silence instead of leaving it unsaid.
            while not self._abort.is_set() and (session.chunks_ready() > 0 or (intake_over and pushed > consumed)):
                chunk = session.next_chunk()
                if not self._source_is_live():
                    self._wait_for_sinks(chunk.first_frame - self.config.bus.hwm_chunks * spec.frames_per_chunk)
                if not publisher.publish(chunk, spec):
                    self.counters.bus_not_sent += 1
                consumed += chunk.num_frames * spec.samples_per_frame
                self._last_frame = chunk.first_frame + chunk.num_frames - 1
                self.counters.chunks += 1
                self.counters.frames += chunk.num_frames
            self.counters.audio_dropped = ring.dropped
            if intake_over:
                break

    def _push_or_silence(self, session: AvatarSession, pcm: np.ndarray) -> int:
        """Push ``pcm``; a bad packet (NaN, wrong shape) becomes silence of the same length so the
        session and the timeline go on instead of ending."""
        try:
            session.push_audio(pcm)
        except (ValueError, TypeError) as exc:
            self.counters.bad_audio_packets += 1
            log.warning("dropped a bad audio packet of %d samples (%s); playing silence instead", pcm.shape[0], exc)
            session.push_audio(np.zeros(pcm.shape[0], dtype=np.float32))
        return int(pcm.shape[0])

    def _source_is_live(self) -> bool:
        return self._source is None or self._source.realtime

    def _wait_for_sinks(self, frame: int) -> None:
        """Non-live input only: hold the engine until every sink has written up to ``frame``.

        The bus drops chunks for a subscriber that falls behind, which is right for live audio (late
        video is useless) but wrong when a file is processed as fast as possible: there the slowest
        sink sets the pace instead. Sinks report progress in-process; no extra wire traffic."""
        stall_end = time.monotonic() + SINK_STALL_S
        while not self._abort.is_set():
            progress = list(self._sink_progress.values())
            if not progress or min(progress) >= frame:
                return
            if time.monotonic() > stall_end:
                log.warning("a sink made no progress for %.0f s; continuing without waiting for it", SINK_STALL_S)
                return
            time.sleep(0.002)

    def _intake_loop(self) -> None:
        ring, source = self._ring, self._source
        assert ring is not None and source is not None
        try:
            for block in source.blocks():
                # A file can wait for the engine; live input cannot (the ring drops the oldest instead).
                while not source.realtime and ring.capacity - ring.available() < block.shape[0]:
                    if self._stop.is_set():
                        return
                    time.sleep(0.005)
                ring.write(block)
                self._audio_ready.set()
                if self._stop.is_set():
                    return
        finally:
            self._intake_done.set()
            self._audio_ready.set()

    # -- sinks -----------------------------------------------------------------------------------

    def _start_sinks(self, address: str, spec: ChunkSpec) -> None:
        self.sinks = self._sink_factory(self.config)
        if not self.sinks:
            log.warning("no sinks enabled: frames go only to the bus at %s", address)
        for sink in self.sinks:
            self.counters.sinks[sink.name] = "opening"
            ready = threading.Event()
            self._start_thread(f"sink-{sink.name}", self._sink_loop, sink, address, spec, ready)
            ready.wait(SUBSCRIBER_WAIT_S)

    def _sink_loop(self, sink: FrameSink, address: str, spec: ChunkSpec, ready: threading.Event) -> None:
        # A sink may ask for a deeper queue than the live default (the recorder prefers late to lost).
        depth = max(self.config.bus.hwm_chunks, int(getattr(sink, "queue_chunks", 0)))
        subscriber = FrameSubscriber(address, hwm_chunks=depth)
        try:
            sink.open(spec)
            self._sink_progress[sink.name] = -1
            self.counters.sinks[sink.name] = "open"
            ready.set()
            written, last_frame, quiet_since = 0, -1, time.monotonic()
            while not self._abort.is_set():
                item = subscriber.recv(timeout_ms=int(POLL_S * 1000))
                if item is None:
                    if self._session_over(last_frame, quiet_since):
                        break
                    continue
                if isinstance(item, EndOfStream):
                    break
                if not isinstance(item, FrameChunk):  # status messages are not for this loop
                    continue
                sink.write(item)
                written, last_frame, quiet_since = written + 1, item.first_frame + item.num_frames - 1, time.monotonic()
                self._sink_progress[sink.name] = last_frame
                self.counters.sinks[sink.name] = f"{written} chunks"
        except SinkError:
            self.counters.sinks[sink.name] = "failed"
            raise
        finally:
            self._sink_progress.pop(sink.name, None)  # a finished or failed sink no longer sets the pace
            ready.set()
            subscriber.close()
            try:
                sink.close()
            finally:
                if self.counters.sinks.get(sink.name) != "failed":
                    self.counters.sinks[sink.name] = "closed"

    def _session_over(self, last_frame: int, quiet_since: float) -> bool:
        """EndOfStream may be dropped for a full subscriber: also stop once the engine is done and
        this sink has the final frame, or nothing has arrived for a while since the engine finished."""
        final = self._final_frame
        if final is None:
            return False
        return last_frame >= final or time.monotonic() - max(quiet_since, self._final_mono) > END_QUIET_S

    # -- control ---------------------------------------------------------------------------------

    def _control_loop(self) -> None:
        import zmq

        from soulx_live.runtime_dir import endpoint

        address = endpoint("cli", self.config.bus)
        ctx = zmq.Context.instance()
        sock = ctx.socket(zmq.REP)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.bind(address)
        except zmq.ZMQError as exc:
            raise DaemonError(f"cannot listen on {address}: {exc} (is another daemon running? `soulx-live status`)") from exc
        try:
            while not self._abort.is_set():
                if not sock.poll(int(POLL_S * 1000)):
                    continue
                sock.send(protocol.encode(self._answer(sock.recv())))
        finally:
            sock.close()

    def _answer(self, data: bytes) -> protocol.Message:
        try:
            msg = protocol.decode(data)
        except protocol.ProtocolError as exc:
            return protocol.Ack(ok=False, message=str(exc))
        if isinstance(msg, protocol.StatusRequest):
            return self.status()
        if isinstance(msg, protocol.StopRequest):
            self.request_stop("stop requested by `soulx-live`")
            return protocol.Ack(ok=True, message="draining")
        return protocol.Ack(ok=False, message=f"the daemon does not handle {type(msg).__name__}")

    def status(self) -> StatusReply:
        """The current :class:`~soulx_live.protocol.StatusReply`."""
        c = self.counters
        detail = f"frames={c.frames} audio_dropped_samples={c.audio_dropped}" + (f" {c.detail}" if c.detail else "")
        return protocol.StatusReply(
            state=c.state if c.state in ("starting", "running", "failed", "stopped") else "running",
            engine=self.config.engine.kind,
            session_id=c.session_id,
            chunks_done=c.chunks,
            uptime_s=time.monotonic() - c.started_mono,
            detail=detail,
            sinks=dict(c.sinks),
        )


# --- client side of the control socket ------------------------------------------------------------


def query_status(bus: BusConfig, timeout_s: float = 2.0) -> StatusReply:
    """Ask the running daemon for its :class:`~soulx_live.protocol.StatusReply`.

    Raises :class:`DaemonUnavailable` when nothing answers within ``timeout_s``.
    """
    reply = _request(bus, protocol.StatusRequest(), timeout_s)
    if not isinstance(reply, protocol.StatusReply):
        raise DaemonError(f"the daemon answered a status request with {type(reply).__name__}")
    return reply


def _request(bus: BusConfig, msg: protocol.Message, timeout_s: float) -> protocol.Message:
    import zmq

    from soulx_live.runtime_dir import endpoint

    address = endpoint("cli", bus)
    if address.startswith("ipc://") and not Path(address[len("ipc://"):]).exists():
        raise DaemonUnavailable(f"no daemon is running (no control socket at {address[len('ipc://'):]}); "
                                "start one with `soulx-live run`")
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(address)
        if not sock.poll(int(timeout_s * 1000), zmq.POLLOUT):
            raise DaemonUnavailable(f"no daemon is running (could not reach {address} within {timeout_s:g} s); "
                                    "start one with `soulx-live run`")
        sock.send(protocol.encode(msg), flags=zmq.NOBLOCK)
        if not sock.poll(int(timeout_s * 1000), zmq.POLLIN):
            raise DaemonUnavailable(f"no daemon answered on {address} within {timeout_s:g} s "
                                    "(a stale socket from a crashed daemon? start one with `soulx-live run`)")
        return protocol.decode(sock.recv())
    finally:
        sock.close()

"""The daemon: audio source -> engine -> ZeroMQ frame bus -> sinks, with a staged shutdown.

Threads (ZeroMQ sockets never cross threads):

- **main**: installs the signal handlers, starts the others, then only polls flags (every 50 ms) and
  drives the shutdown stages. It never blocks in engine or sink code, so Ctrl-C is always seen.
- **engine**: with in-process isolation builds the engine and the session (slow for FlashTalk), owns
  the ``FramePublisher``, moves audio from the intake ring into ``session.push_audio`` and publishes
  every ready chunk. With process isolation it starts a supervised engine worker
  (:class:`~soulx_live.live_engine.WorkerEngine`; the worker binds the frame bus) and moves audio
  from the ring to it; a restarted worker resumes the session.
- **intake**: plays the audio source into the :class:`~soulx_live.audio.ring.AudioRing`.
- **sink-<name>**: one per sink, each with its own ``FrameSubscriber``; ``sink.write`` per chunk. With
  process isolation every sink is wrapped in :class:`~plugins.hold.HoldingSink` and the thread calls
  ``tick()`` every few milliseconds, so the sink gets a frame per frame period while the worker is late
  or restarting (last frame, then the idle loop), on one continuous frame timeline.
- **control**: REP socket on ``endpoint("cli")`` answering ``StatusRequest``, ``StopRequest`` and
  ``Interrupt`` (barge-in; :func:`request_interrupt`, ``soulx-live interrupt``).

Isolation (``supervisor.isolation``): ``auto`` runs the engine in a worker process for live input
(mic, loopback, push, script, a file played in real time) and in this process for a file rendered as
fast as possible (no process hop, lossless: the engine waits for the slowest sink); ``process`` and
``thread`` force one. An engine injected through ``engine_factory`` (tests) always runs in-process.

Barge-in: :meth:`Daemon.interrupt` bumps the epoch (worker: ``EngineClient.interrupt``; in-process:
``session.reset()`` on the engine thread), drops queued input audio, and every sink thread drops
chunks of older epochs and calls ``sink.interrupt(epoch)`` when the sink has it.

Push input (``audio.source=push``): :class:`~soulx_live.audio.push_source.PushSource` plays pushed
audio on a real-time timeline (silence in between, so the avatar idles) and the daemon hosts
``soulx_live.push.server.PushServer`` with a :class:`~soulx_live.push_bridge.PushBridge`.

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
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.interface import (
    AvatarEngine,
    AvatarSession,
    ChunkSpec,
    FrameChunk,
    SessionRequest,
    mono_pcm,
)
from plugins.base import FrameSink, SinkError
from soulx_live import protocol
from soulx_live.audio.file_source import FileSource
from soulx_live.audio.push_source import PushSource
from soulx_live.audio.ring import AudioRing
from soulx_live.bus import EndOfStream, FramePublisher, FrameSubscriber
from soulx_live.config import BusConfig, SoulxConfig
from soulx_live.extras import MissingExtraError, require
from soulx_live.protocol import StatusReply

if TYPE_CHECKING:
    from soulx_live.audio.device_source import DeviceSource
    from soulx_live.live_engine import WorkerEngine
    from soulx_live.push_bridge import PushBridge

    AudioSource = FileSource | DeviceSource | PushSource

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
    "request_interrupt",
]

log = logging.getLogger(__name__)

POLL_S = 0.05
RING_SECONDS = 10.0  # audio the intake can buffer ahead of the engine before dropping the oldest
SUBSCRIBER_WAIT_S = 5.0
SINK_CLOSE_S = 5.0  # extra time sinks get to finalise after the drain deadline
SINK_STALL_S = 10.0  # non-live input: the longest the engine waits for a sink to catch up
END_QUIET_S = 3.0  # after the engine finished, a sink that heard nothing for this long stops (generous: a starved CPU delays the last chunk)
TICK_S = 0.005  # process isolation: how often a sink thread lets its HoldingSink emit due hold frames
DRAIN_SETTLE_S = 0.5  # process isolation: no new chunk for this long after StopSession = worker drained
DRAINED_QUIET_S = 0.1  # ...then a sink whose queue stayed empty this long has everything
HOLD_AFTER_PERIODS = 0.25  # a hold frame is due this many frame periods after a sink's content ran out


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

    if config.engine.flashtalk.preset == "tiny-random":  # random tiny models on the CPU: no weights, no GPU
        require("torch", "engine")
        return _flashtalk_factory()(config.engine)
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
    return _flashtalk_factory()(config.engine)


def _flashtalk_factory() -> Callable[..., AvatarEngine]:
    try:
        from engine import flashtalk  # the GPU engine; imported only when asked for
    except ImportError as exc:
        raise DaemonError(f"the flashtalk engine is not available in this build: {exc}") from exc
    factory = getattr(flashtalk, "build_engine", None)
    if factory is None:
        raise DaemonError("engine.flashtalk has no build_engine(config) entry point in this build")
    return factory


def build_sinks(config: SoulxConfig) -> list[FrameSink]:
    """The sinks enabled in ``config.sinks``. The virtual camera and the virtual microphone share one
    A/V clock when both are on, so the picture and the voice leave the machine in step."""
    sinks: list[FrameSink] = []
    rec = config.sinks.recorder
    if rec.enabled:
        from plugins.recorder import RecorderSink

        path = rec.path or Path.cwd() / f"soulx-live-{datetime.now():%Y%m%d-%H%M%S}.mp4"
        sinks.append(RecorderSink(path))
    vcam, mic = config.sinks.virtualcam, config.sinks.virtualmic
    clock = None
    if vcam.enabled and mic.enabled:
        from plugins.av_clock import AvClock

        clock = AvClock(config.audio.sample_rate)
    if vcam.enabled:
        require("pyvirtualcam", "vcam", "the virtual camera sink")  # fail early with the install hint
        from plugins.virtualcam import VirtualCamSink

        # keeps the last frame up by itself; under process isolation it is also behind a HoldingSink
        sinks.append(VirtualCamSink(vcam, av_clock=clock))
    if mic.enabled:
        from plugins.virtualmic import VirtualMicSink

        sinks.append(VirtualMicSink(mic, av_clock=clock))
    if config.sinks.obs.enabled:
        require("obsws_python", "obs", "the OBS integration")
        try:
            from plugins.obs.sink import ObsSink
        except ImportError as exc:
            raise DaemonError(f"sinks.obs: the OBS integration is not part of this build ({exc})") from exc
        sinks.append(ObsSink(config.sinks.obs))
    return sinks


def build_source(config: SoulxConfig, block_samples: int) -> AudioSource:
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
    if audio.source == "push":
        return PushSource(sample_rate=audio.sample_rate, block_samples=block_samples)
    if audio.source == "script":
        return _script_source(config, block_samples)
    raise DaemonError(f"audio.source={audio.source!r} is not supported; use file, mic, loopback, push or script")


def _script_source(config: SoulxConfig, block_samples: int) -> AudioSource:
    """``audio.source=script``: timed lines of ``tts.script`` spoken by the configured TTS."""
    if config.tts.script is None:
        raise DaemonError("audio.source=script needs tts.script (--set tts.script=lines.txt)")
    try:
        from soulx_live.audio.script_source import ScriptSource
        from soulx_live.tts import build_tts
    except ImportError as exc:
        raise DaemonError(f"audio.source=script is not available in this build: {exc}") from exc
    try:
        tts = build_tts(config.tts)
        return ScriptSource(config.tts.script, tts, sample_rate=config.audio.sample_rate, block_samples=block_samples,
                            realtime=config.audio.realtime, loop=config.tts.loop_script)
    except Exception as exc:  # TtsError, a bad script: their messages name the fix
        raise DaemonError(f"audio.source=script: {exc}") from exc


def choose_isolation(config: SoulxConfig, *, injected_engine: bool = False) -> str:
    """``"process"`` (supervised worker) or ``"thread"`` (in this process) for this configuration.

    ``auto``: process for live input (mic, loopback, push, a file or script played in real time),
    in-process for a file or script rendered as fast as possible. An injected engine cannot cross a process
    boundary, so it always runs in-process (``isolation=process`` with one is an error).
    """
    mode = config.supervisor.isolation
    if injected_engine:
        if mode == "process":
            raise DaemonError("supervisor.isolation=process needs the engine built from the configuration "
                              "(an engine object passed in cannot move to a worker process); use isolation=auto")
        return "thread"
    if mode != "auto":
        return mode
    live = config.audio.source not in ("file", "script") or config.audio.realtime
    return "process" if live else "thread"


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
    stale_chunks: int = 0  # chunks of an older barge-in epoch dropped before a sink
    interrupts: int = 0
    sinks: dict[str, str] = field(default_factory=dict)


SpeechListener = Callable[[object], None]


class Daemon:
    """One daemon run. ``run()`` blocks until the session ends or a signal stops it; returns the exit code.

    ``engine_factory`` and ``sink_factory`` default to :func:`build_engine` and :func:`build_sinks`
    (tests inject fakes there; an injected engine runs in-process). ``speech_listeners`` get every
    speech event (started/finished/interrupted) of pushed audio, besides the push API's clients.
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
        self.isolation = choose_isolation(config, injected_engine=engine_factory is not build_engine)
        self.counters = _Counters()
        self.sinks: list[FrameSink] = []
        self.spec: ChunkSpec | None = None
        self.speech_listeners: list[SpeechListener] = []
        self._signals = 0  # written only by the signal handler
        self._stop = threading.Event()  # stop intake, drain
        self._abort = threading.Event()  # drain deadline passed: stop now with what we have
        self._intake_done = threading.Event()
        self._audio_ready = threading.Event()
        self._engine_done = threading.Event()
        self._spec_ready = threading.Event()  # process isolation: the worker's spec is known
        self._ended = threading.Event()  # no more audio goes to the engine: its last chunks are on the way
        self._ring: AudioRing | None = None
        self._last_frame = -1  # last frame index published (engine thread)
        self._final_frame: int | None = None  # set once the engine published its last chunk (in-process)
        self._final_mono = 0.0
        self._drained_mono: float | None = None  # process isolation: the worker has published its last chunk
        self._source: AudioSource | None = None
        self._worker: WorkerEngine | None = None
        self._bridge: PushBridge | None = None
        self._push_server: object | None = None
        self._threads: dict[str, threading.Thread] = {}
        self._sink_progress: dict[str, int] = {}  # sink name -> last frame it wrote (sink threads write)
        self._sink_frames: dict[str, int] = {}  # sink name -> frames written, held ones included
        self._errors: list[str] = []
        self._startup_error: Exception | None = None
        # barge-in: _epoch is the newest epoch; the in-process engine thread applies it to its session
        self._epoch_lock = threading.Lock()
        self._feed_lock = threading.Lock()  # ring -> engine moves vs. interrupt's flush
        self._epoch = 0
        self._applied_epoch = 0
        self._fed_samples = 0  # samples moved from the ring to the engine
        self._timeline_skip = 0  # samples of the fed timeline that never became frames (in-process resets)
        self._engine_note = ("", "")  # process isolation: last (state, detail) from the supervisor
        self._engine_rss_mb = 0.0  # process isolation: the worker's RSS from the memory watch
        self._engine_gpu_mb = 0  # process isolation: the worker's CUDA memory from its heartbeats
        self.metrics: Any = None  # soulx_live.metrics.DaemonMetrics when metrics are on and built
        self._interrupt_mono = 0.0  # when the newest interrupt was asked for (barge-in latency)
        self._bargein_seen = 0  # newest epoch whose latency was observed
        self._first_frame_seen = False
        self._pending_phonemes: list[list[tuple[int, int, str]]] = []  # in-process: for the engine thread

    # -- public ----------------------------------------------------------------------------------

    def run(self) -> int:
        """Start, wait for the end or a stop, drain, close. Returns 0 on a clean end, 1 otherwise.

        A failure before the session starts (engine, avatar, audio file, sockets) is raised instead,
        after everything started so far has been closed.
        """
        self._refuse_if_running()
        restore = self._install_signal_handlers()
        try:
            self.metrics = self._start_metrics()
            self._start_thread("control", self._control_loop)
            engine_main = self._engine_process_main if self.isolation == "process" else self._engine_main
            self._start_thread("engine", engine_main)
            self._wait_running()
            self._drain()
        finally:
            self._stop.set()
            self._abort.set()
            self._join_all(timeout_s=2.0)
            self._close_metrics()
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

    def interrupt(self) -> int:
        """Barge-in (thread-safe): drop the audio not yet turned into frames and return the new epoch.

        Queued input (pushed audio, the intake ring) is dropped; the worker (or, in-process, the
        engine thread) resets the session; sink threads drop chunks of older epochs and call
        ``sink.interrupt(epoch)``. The avatar goes back to idle on the audio that follows (silence).
        """
        asked = time.monotonic()
        with self._feed_lock:
            self._interrupt_mono = asked  # before the sinks can see the new epoch (barge-in latency)
            source = self._source
            if isinstance(source, PushSource):
                source.clear()
            if self._ring is not None:
                self._timeline_skip += self._ring.clear()
            with self._epoch_lock:
                worker = self._worker
                epoch = worker.interrupt() if worker is not None else self._epoch + 1
                self._epoch = max(self._epoch, epoch)
                self.counters.interrupts += 1
        log.info("interrupt: epoch %d", epoch)
        return epoch

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def push_handler(self) -> PushBridge | None:
        """The push API's handler (``audio.source=push``, once the session runs), else None."""
        return self._bridge

    @property
    def worker_pid(self) -> int | None:
        """The engine worker's pid (process isolation), else None."""
        return self._worker.pid if self._worker is not None else None

    def push_phonemes(self, spans: list[tuple[int, int, str]]) -> None:
        """Forward phoneme timings given on the fed audio timeline to the engine session (thread-safe)."""
        shift = self._timeline_skip + (self._worker.dropped_samples if self._worker is not None else 0)
        moved = [(int(a) - shift, int(b) - shift, str(ph)) for a, b, ph in spans if int(b) - shift > 0]
        if not moved:
            return
        if self._worker is not None:
            self._worker.push_phonemes(moved)
        else:
            self._pending_phonemes.append(moved)  # the engine thread owns the session

    def played_samples(self) -> int:
        """How far the sinks have played the fed audio timeline (the slowest sink; no sinks: all fed)."""
        spec = self.spec
        frames = list(self._sink_frames.values())
        if spec is None or not frames:
            return self._fed_samples
        return min(self._fed_samples, min(frames) * spec.samples_per_frame + self._timeline_skip)

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
        except Exception as exc:
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

    # -- engine thread: in-process ---------------------------------------------------------------

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
            self._spec_ready.set()
            self._start_sinks(address, wrap=False)
            if self.sinks and not publisher.wait_for_subscribers(len(self.sinks), timeout_s=SUBSCRIBER_WAIT_S):
                log.warning("not every sink connected to the bus within %.0f s; their first chunks may be lost", SUBSCRIBER_WAIT_S)
            self._start_push(source, spec)
            self.counters.state = "running"
            log.info(
                "session %s: %s engine %dx%d @ %s fps in this process, %s from %s (%.1f s)",
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
            self._ended.set()
            publisher.publish_end(session_id, self._last_frame)
            publisher.close()
            self._stop_push()

    def _pump(self, session: AvatarSession, publisher: FramePublisher, spec: ChunkSpec) -> None:
        """Move audio into the session and publish chunks until intake ends (or the drain is aborted)."""
        ring = self._ring
        assert ring is not None
        pushed = consumed = 0
        while not self._abort.is_set():
            self._audio_ready.wait(POLL_S)
            self._audio_ready.clear()
            if self._applied_epoch < self._epoch:  # barge-in: drop what the session holds, go idle now
                session.reset()
                self._timeline_skip += pushed - consumed
                consumed = pushed
                self._applied_epoch = self._epoch
                primed = self._prime_idle(session, spec)
                pushed += primed
                self._timeline_skip -= primed  # frames that no fed audio stands for
            self._forward_phonemes(session)
            intake_over = self._intake_done.is_set()  # read before draining the ring: no sample is missed
            with self._feed_lock:
                pcm = ring.read(ring.available())
            if pcm.shape[0]:
                pushed += self._push_or_silence(session, pcm)
                self._fed_samples += int(pcm.shape[0])
            # At the end, pad the last partial chunk with silence instead of leaving it unsaid.
            while not self._abort.is_set() and (session.chunks_ready() > 0 or (intake_over and pushed > consumed)):
                t_chunk = time.perf_counter()
                chunk = session.next_chunk()
                self._observe("observe_chunk", time.perf_counter() - t_chunk, spec.chunk_duration_s)
                if not self._source_is_live():
                    self._wait_for_sinks(chunk.first_frame - self.config.bus.hwm_chunks * spec.frames_per_chunk)
                if not publisher.publish(chunk, spec, epoch=self._applied_epoch):
                    self.counters.bus_not_sent += 1
                consumed += chunk.num_frames * spec.samples_per_frame
                self._last_frame = chunk.first_frame + chunk.num_frames - 1
                self.counters.chunks += 1
                self.counters.frames += chunk.num_frames
            self.counters.audio_dropped = ring.dropped
            self._report_played()
            self._observe("set_queue_depth", "intake_samples", ring.available())
            if intake_over:
                break

    def _prime_idle(self, session: AvatarSession, spec: ChunkSpec) -> int:
        """After a reset, push silence a frame at a time until a chunk can be made (at most two
        chunks' worth), so an idle chunk follows the interrupt at once; returns the samples pushed."""
        silence = np.zeros(spec.samples_per_frame, dtype=np.float32)
        primed = 0
        while session.chunks_ready() < 1 and primed < 2 * spec.samples_per_chunk:
            session.push_audio(silence)
            primed += spec.samples_per_frame
        return primed

    def _forward_phonemes(self, session: AvatarSession) -> None:
        push = getattr(session, "push_phonemes", None)
        while self._pending_phonemes:
            spans = self._pending_phonemes.pop(0)
            if push is not None:
                push(spans)

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

    # -- engine thread: worker process -----------------------------------------------------------

    def _engine_process_main(self) -> None:
        """Process isolation: sinks subscribe first, then a supervised worker starts and binds the bus."""
        from soulx_live.live_engine import WorkerEngine
        from soulx_live.supervisor import SupervisorError

        config = self.config
        load_avatar(config.engine.avatar)  # a bad path fails here, with the same message as in-process
        self.sinks = self._sink_factory(config)
        worker = WorkerEngine(config, subscribers=len(self.sinks), on_state=self._on_engine_state,
                              health_checks=self._health_checks(), on_chunk_time=self._on_worker_chunk_time)
        self._start_sinks(worker.frames_address, wrap=True)
        try:
            log.info("starting the %s engine in a worker process", config.engine.kind)
            try:
                spec = worker.start(cancelled=self._stop.is_set)
            except SupervisorError as exc:
                raise DaemonError(f"the engine worker did not start: {exc}") from exc
            self.spec = spec
            self._spec_ready.set()
            source = self._source = build_source(config, block_samples=spec.samples_per_frame)
            if self._stop.is_set():
                source.stop()
            self._ring = AudioRing(int(RING_SECONDS * spec.sample_rate))
            session_id = uuid.uuid4().hex[:12]
            worker.start_session(session_id, seed=config.engine.seed, prompt=config.engine.prompt, avatar=config.engine.avatar)
            with self._epoch_lock:
                self._worker = worker
            self.counters.session_id = session_id
            self._start_push(source, spec)
            self.counters.state = "running"
            log.info("session %s: %s engine %dx%d @ %s fps in worker pid %s, real-time from %s",
                     session_id, config.engine.kind, spec.width, spec.height, spec.fps, worker.pid, source.name)
            self._start_thread("intake", self._intake_loop)
            self._feed_worker(worker)
            worker.stop_session()  # the worker turns what it has into chunks, then EndOfStream
            self._final_mono = time.monotonic()
            self._ended.set()
            log.info("session %s: input ended; the engine worker finishes its last chunks", session_id)
            self._await_worker_drained(worker, spec)
        finally:
            if not self._ended.is_set():
                self._final_mono = time.monotonic()
                self._ended.set()
            self._await_sink_threads()
            self._stop_push()
            worker.close(self.config.supervisor.shutdown_grace_s)
            self._worker = None

    def _feed_worker(self, worker: WorkerEngine) -> None:
        """Move audio from the ring to the worker until intake ends; fail if the worker cannot be kept up."""
        ring = self._ring
        assert ring is not None
        while not self._abort.is_set():
            self._audio_ready.wait(POLL_S)
            self._audio_ready.clear()
            intake_over = self._intake_done.is_set()
            with self._feed_lock:
                pcm = ring.read(ring.available())
                if pcm.shape[0]:
                    worker.push_audio(self._clean_pcm(pcm))
                    self._fed_samples += int(pcm.shape[0])
            self.counters.audio_dropped = ring.dropped + worker.dropped_samples
            self._report_played()
            self._observe("set_queue_depth", "intake_samples", ring.available())
            if worker.state == "failed":
                raise DaemonError(f"the engine worker failed and is not restarted: {worker.detail}")
            if intake_over:
                return

    def _await_worker_drained(self, worker: WorkerEngine, spec: ChunkSpec) -> None:
        """After StopSession: wait until the worker's chunk count stops moving (it has published its
        last chunk), then let the sinks finish as soon as their queues are empty. EndOfStream alone is
        not enough: the bus drops it for a subscriber whose queue is full after the final burst."""
        window = max(DRAIN_SETTLE_S, 3 * spec.chunk_duration_s)
        count, since = worker.chunks_done, time.monotonic()
        while not self._abort.is_set() and worker.state not in ("failed", "stopped"):
            time.sleep(POLL_S)
            now = time.monotonic()
            if worker.chunks_done != count:
                count, since = worker.chunks_done, now
            elif now - since >= window:
                break
        self._drained_mono = time.monotonic()
        log.debug("engine worker drained: %d chunks in all", count)

    def _clean_pcm(self, pcm: np.ndarray) -> np.ndarray:
        """Mono float32 ``pcm``; a bad packet (NaN, wrong dtype or shape) becomes silence of its length."""
        try:
            return mono_pcm(pcm)
        except (ValueError, TypeError) as exc:
            self.counters.bad_audio_packets += 1
            log.warning("dropped a bad audio packet of %d samples (%s); playing silence instead", len(pcm), exc)
            return np.zeros(len(pcm), dtype=np.float32)

    def _on_engine_state(self, state: str, detail: str) -> None:
        """Supervisor thread: remember the engine state for status and the sinks' hold reason."""
        self._engine_note = (state, detail)
        if state == "restarting":
            self._observe("add_restart", _restart_reason(detail))
            log.warning("engine worker restarting (%s); the sinks hold the picture meanwhile", detail)

    def _on_worker_chunk_time(self, compute_s: float, gpu_mb: int = 0) -> None:
        """Supervisor thread: the worker's compute time of its latest chunk and its GPU memory (heartbeat)."""
        self._engine_gpu_mb = gpu_mb
        spec = self.spec
        if spec is not None:
            self._observe("observe_chunk", compute_s, spec.chunk_duration_s)

    def _health_checks(self) -> list[Callable[[int], str | None]]:
        """Worker health checks: the memory watermark (``supervisor.memory_limit_mb``) and leak trend."""
        from soulx_live.memory_watch import MemoryWatch

        sup = self.config.supervisor
        watch = MemoryWatch(sup.memory_limit_mb, sup.leak_mb_per_hour)

        def check(pid: int) -> str | None:
            verdict = watch.check(pid)
            self._engine_rss_mb = watch.last_rss_mb
            return verdict

        return [check]

    def _await_sink_threads(self) -> None:
        """Until every sink thread has finished (EndOfStream, or quiet after the end) or the drain is aborted."""
        while not self._abort.is_set():
            sinks = [t for n, t in list(self._threads.items()) if n.startswith("sink-")]
            if all(not t.is_alive() for t in sinks):
                return
            time.sleep(POLL_S)

    # -- metrics ---------------------------------------------------------------------------------

    def _start_metrics(self) -> Any:
        """``soulx_live.metrics.DaemonMetrics`` served on loopback when ``metrics.enabled`` (None when
        off or not in this build). A busy port costs the endpoint, not the session."""
        cfg = self.config.metrics
        if not cfg.enabled:
            return None
        try:
            from soulx_live.metrics import DaemonMetrics
        except ImportError as exc:
            log.debug("metrics are not part of this build: %s", exc)
            return None
        metrics = DaemonMetrics()
        try:
            port = metrics.serve(cfg.host, cfg.port)
            log.info("metrics on http://%s:%d/metrics", cfg.host, port)
        except OSError as exc:
            log.warning("metrics endpoint not served on %s:%d (%s); set metrics.port (0: any free port)",
                        cfg.host, cfg.port, exc)
        return metrics

    def _close_metrics(self) -> None:
        metrics, self.metrics = self.metrics, None
        if metrics is not None:
            try:
                metrics.close()
            except Exception:
                log.exception("closing the metrics endpoint failed")

    def _observe(self, method: str, *args: object) -> None:
        """Call ``metrics.<method>(*args)`` when metrics are on; a metrics bug never stops the session."""
        metrics = self.metrics
        if metrics is None:
            return
        try:
            getattr(metrics, method)(*args)
        except Exception:
            log.debug("metrics.%s failed", method, exc_info=True)

    def _observe_delivery(self, sink_epoch: int) -> None:
        """A sink got frames: time to first frame (once) and barge-in latency (once per epoch)."""
        now = time.monotonic()
        if not self._first_frame_seen:
            self._first_frame_seen = True
            self._observe("observe_ttff", now - self.counters.started_mono)
        if sink_epoch > self._bargein_seen and self._interrupt_mono:
            self._bargein_seen = sink_epoch
            self._observe("observe_bargein_latency", now - self._interrupt_mono)

    def _metrics_snapshot(self) -> dict[str, float]:
        metrics = self.metrics
        if metrics is None:
            return {}
        try:
            from soulx_live.memory_watch import process_rss_bytes

            own = process_rss_bytes(os.getpid(), children=False)
            gpu = self._engine_gpu_mb * 2**20 if self._engine_gpu_mb else None
            metrics.set_memory(own + int(self._engine_rss_mb * 2**20), gpu)
            return {str(k): float(v) for k, v in metrics.snapshot().items()}
        except Exception:
            log.debug("metrics snapshot failed", exc_info=True)
            return {}

    # -- push API --------------------------------------------------------------------------------

    def _start_push(self, source: AudioSource, spec: ChunkSpec) -> None:
        """``audio.source=push``: the handler, the utterance tracker and (when built) the push server.
        ``audio.source=script``: the script's phoneme timings go to the engine session."""
        if hasattr(source, "on_phonemes"):  # ScriptSource: spans on the fed timeline, as push_phonemes takes them
            source.on_phonemes = self.push_phonemes
        if not isinstance(source, PushSource):
            return
        from soulx_live.push_bridge import PushBridge, make_tracker

        tracker = make_tracker(spec.sample_rate, self._emit_speech)
        self._bridge = PushBridge(self.config, source, tracker, interrupt=self.interrupt,
                                  push_phonemes=self.push_phonemes, status=self._push_status)
        if not self.config.push.enabled:
            log.info("push.enabled is false: pushed audio only through Daemon.push_handler")
            return
        try:
            from soulx_live.push.server import PushServer
        except ImportError as exc:
            log.warning("the push server is not part of this build (%s); only Daemon.push_handler can push audio", exc)
            return
        server = PushServer(self.config, self._bridge)
        server.start()
        self._push_server = server
        log.info("push API on %s%s", server.zmq_address, f" and {server.http_url}" if server.http_url else "")

    def _stop_push(self) -> None:
        server, self._push_server = self._push_server, None
        if server is not None:
            try:
                server.close()  # type: ignore[attr-defined]
            except Exception:
                log.exception("closing the push server failed")

    def _emit_speech(self, event: object) -> None:
        kind = getattr(event, "kind", "")
        if kind in ("started", "finished", "interrupted"):
            for sink in self.sinks:  # e.g. the OBS sink switches scenes while the avatar speaks
                on_speech = getattr(sink, "on_speech", None)
                if on_speech is not None:
                    on_speech(kind == "started")
        for listener in list(self.speech_listeners):
            try:
                listener(event)
            except Exception:
                log.exception("speech listener failed")
        server = self._push_server
        if server is not None:
            server.publish_event(event)  # type: ignore[attr-defined]

    def _report_played(self) -> None:
        bridge = self._bridge
        if bridge is not None:
            bridge.on_played(self.played_samples())

    def _push_status(self) -> dict[str, object]:
        reply = self.status()
        return {"state": reply.state, "session_id": reply.session_id, "epoch": self._epoch,
                "restarts": reply.restarts, "chunks_done": reply.chunks_done}

    # -- sinks -----------------------------------------------------------------------------------

    def _start_sinks(self, address: str, *, wrap: bool) -> None:
        """One thread per sink. ``wrap`` (process isolation): each sink behind a HoldingSink, and the
        thread subscribes before the spec is known (the worker waits for its subscribers)."""
        if not wrap:
            self.sinks = self._sink_factory(self.config)
        if not self.sinks:
            log.warning("no sinks enabled: frames go only to the bus at %s", address)
        for sink in self.sinks:
            self.counters.sinks[sink.name] = "opening"
            ready = threading.Event()
            self._start_thread(f"sink-{sink.name}", self._sink_loop, sink, address, ready, wrap)
            ready.wait(SUBSCRIBER_WAIT_S)

    def _await_spec(self) -> ChunkSpec | None:
        while not self._spec_ready.wait(POLL_S):
            if self._abort.is_set() or self._startup_error is not None:
                return None
        return self.spec

    def _sink_loop(self, sink: FrameSink, address: str, ready: threading.Event, wrap: bool) -> None:
        # A sink may ask for a deeper queue than the live default (the recorder prefers late to lost).
        depth = max(self.config.bus.hwm_chunks, int(getattr(sink, "queue_chunks", 0)))
        subscriber = FrameSubscriber(address, hwm_chunks=depth)
        out: FrameSink = sink
        try:
            if wrap:
                ready.set()  # subscribed (ZeroMQ connects in the background); the worker waits for us
            spec = self._await_spec()
            if spec is None:
                return
            if wrap:
                from plugins.hold import HoldingSink

                out = HoldingSink(sink, hold_after_s=HOLD_AFTER_PERIODS / float(spec.fps))
            out.open(spec)
            self._sink_progress[sink.name] = -1
            self._sink_frames[sink.name] = 0
            self.counters.sinks[sink.name] = "open"
            ready.set()
            self._feed_sink(sink.name, out, subscriber, wrap)
        except SinkError:
            self.counters.sinks[sink.name] = "failed"
            raise
        finally:
            self._sink_progress.pop(sink.name, None)  # a finished or failed sink no longer sets the pace
            self._sink_frames.pop(sink.name, None)
            ready.set()
            subscriber.close()
            try:
                out.close()
            finally:
                if self.counters.sinks.get(sink.name) != "failed":
                    self.counters.sinks[sink.name] = "closed"

    def _feed_sink(self, name: str, out: FrameSink, subscriber: FrameSubscriber, wrap: bool) -> None:
        """Write chunks (of the current epoch) to ``out`` until the session is over; with ``wrap`` tick
        the HoldingSink between chunks so held frames go out on time."""
        timeout_ms = max(1, int(TICK_S * 1000)) if wrap else int(POLL_S * 1000)
        written, last_frame, quiet_since = 0, -1, time.monotonic()
        epoch, note = 0, self._engine_note
        held_seen = gaps_seen = 0
        while not self._abort.is_set():
            if self._epoch > epoch:  # barge-in: the sink drops what it buffered
                epoch = self._epoch
                interrupt = getattr(out, "interrupt", None)
                if interrupt is not None:
                    interrupt(epoch)
            if wrap and self._engine_note != note:  # the reason the next hold names
                note = self._engine_note
                out.hold("engine late" if note[0] == "running" else f"engine {note[0]}: {note[1]}")
            item = subscriber.recv(timeout_ms=timeout_ms)
            if isinstance(item, FrameChunk):
                if item.epoch < self._epoch:
                    self.counters.stale_chunks += 1
                else:
                    out.write(item)
                    self._observe_delivery(epoch)
                    written, last_frame, quiet_since = written + 1, item.first_frame + item.num_frames - 1, time.monotonic()
                    self._sink_progress[name] = last_frame
                    self.counters.sinks[name] = f"{written} chunks"
                    if not wrap:
                        self._sink_frames[name] = self._sink_frames.get(name, 0) + item.num_frames
            elif isinstance(item, EndOfStream) and (not wrap or self._ended.is_set()):
                break  # (a worker stopped for a restart also says EndOfStream: only the real end counts)
            elif item is None and self._session_over(last_frame, quiet_since, wrap):
                break
            if wrap:
                if out.tick():  # type: ignore[attr-defined]
                    self._observe_delivery(epoch)
                filler = getattr(out, "filler", None)
                if filler is not None:
                    self._sink_frames[name] = int(filler.out_frames)
                    held = int(filler.filled_frames)
                    if held > held_seen:
                        self._observe("add_duplicated_frames", name, held - held_seen)
                        held_seen = held
            gaps = subscriber.stats.dropped_gaps
            if gaps > gaps_seen and self.spec is not None:
                self._observe("add_dropped_frames", name, (gaps - gaps_seen) * self.spec.frames_per_chunk)
                gaps_seen = gaps

    def _session_over(self, last_frame: int, quiet_since: float, wrap: bool = False) -> bool:
        """EndOfStream may be dropped for a full subscriber: also stop once the engine is done and
        this sink has the final frame, or nothing has arrived for a while since the engine finished."""
        if not self._ended.is_set():
            return False
        final = self._final_frame
        if not wrap and final is not None and last_frame >= final:
            return True
        now = time.monotonic()
        drained = self._drained_mono
        if drained is not None and now - max(quiet_since, drained) > DRAINED_QUIET_S:
            return True  # the worker published its last chunk and this sink's queue is empty
        return now - max(quiet_since, self._final_mono) > END_QUIET_S

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
        if isinstance(msg, protocol.Interrupt):  # barge-in from a client; its epoch field is not used
            return protocol.Ack(ok=True, message=f"epoch {self.interrupt()}")
        return protocol.Ack(ok=False, message=f"the daemon does not handle {type(msg).__name__}")

    def status(self) -> StatusReply:
        """The current :class:`~soulx_live.protocol.StatusReply`."""
        c = self.counters
        worker = self._worker
        chunks, restarts, state = c.chunks, 0, c.state
        if worker is not None:
            chunks, restarts = worker.chunks_done, worker.restarts
            if worker.state in ("restarting", "failed", "degraded") and state == "running":
                state = worker.state
        frames = chunks * self.spec.frames_per_chunk if worker is not None and self.spec is not None else c.frames
        detail = (f"isolation={self.isolation} frames={frames} audio_dropped_samples={c.audio_dropped} "
                  f"epoch={self._epoch}" + (f" engine={self._engine_note[0]}" if worker is not None else "")
                  + (f" {c.detail}" if c.detail else ""))
        known = ("starting", "running", "restarting", "degraded", "failed", "stopped")
        return protocol.StatusReply(
            state=state if state in known else "running",  # type: ignore[arg-type]
            engine=self.config.engine.kind,
            session_id=c.session_id,
            chunks_done=chunks,
            restarts=restarts,
            uptime_s=time.monotonic() - c.started_mono,
            detail=detail,
            sinks=dict(c.sinks),
            metrics=self._metrics_snapshot(),
        )


def _restart_reason(detail: str) -> str:
    """A short, low-cardinality reason for the restart counter from the supervisor's detail text."""
    text = detail.lower()
    for key, reason in (("killed by", "killed"), ("exited", "exited"), ("no heartbeat", "hung"),
                        ("no chunk", "stalled"), ("no ready", "init_timeout")):
        if key in text:
            return reason
    return "health"


# --- client side of the control socket ------------------------------------------------------------


def query_status(bus: BusConfig, timeout_s: float = 2.0) -> StatusReply:
    """Ask the running daemon for its :class:`~soulx_live.protocol.StatusReply`.

    Raises :class:`DaemonUnavailable` when nothing answers within ``timeout_s``.
    """
    reply = _request(bus, protocol.StatusRequest(), timeout_s)
    if not isinstance(reply, protocol.StatusReply):
        raise DaemonError(f"the daemon answered a status request with {type(reply).__name__}")
    return reply


def request_interrupt(bus: BusConfig, timeout_s: float = 2.0) -> int:
    """Barge-in on the running daemon; returns the new epoch. Raises :class:`DaemonUnavailable`."""
    reply = _request(bus, protocol.Interrupt(session_id="", epoch=0), timeout_s)
    if not isinstance(reply, protocol.Ack) or not reply.ok:
        raise DaemonError(f"the daemon refused the interrupt: {getattr(reply, 'message', type(reply).__name__)}")
    return int(reply.message.rpartition(" ")[2])


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

"""The daemon: owns one live run's lifecycle and composes its parts (see :mod:`soulx_live.live`).

audio source → :class:`~soulx_live.live.intake.AudioIntake` → engine driver (in this process, or a supervised
worker) → ZeroMQ frame bus → :class:`~soulx_live.live.fanout.SinkFanout` → sinks.

Threads (ZeroMQ sockets never cross threads): **main** installs the signal handlers, starts the others, then
only polls and drives the shutdown stages, so Ctrl-C is always seen; **engine** runs the driver; **intake**
plays the source into the ring; **sink-<name>** one per sink; **control** answers ``soulx-live status``,
``stop`` and ``interrupt`` (:mod:`soulx_live.control`).

Lifecycle (:mod:`soulx_live.live.lifecycle`, uvicorn/LiveKit style): starting → running → draining → closing →
stopped. The first SIGINT/SIGTERM (or a ``StopRequest``) stops intake; the engine turns the audio it has into
chunks, the sinks finalise; all of it bounded by ``supervisor.shutdown_grace_s``, after which the sinks close
with what they have. A second signal exits at once. When a file source ends the run ends the same way, exit 0.

Isolation (``supervisor.isolation``, :mod:`soulx_live.factory.isolation`): ``auto`` runs the engine in a worker
process for live input and in this process for a file rendered as fast as possible; with ``remote.address`` it
runs on another machine (:mod:`soulx_live.live.remote`). An engine injected
through ``engine_factory`` (tests) always runs in-process.

Barge-in (:meth:`Daemon.interrupt`): the epoch goes up, queued input audio is dropped, the engine resets, and
every sink drops chunks of older epochs and calls ``sink.interrupt(epoch)`` when it has one.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from engine.interface import AvatarEngine, ChunkSpec
from plugins.base import FrameSink
from soulx_live import protocol
from soulx_live.config import SoulxConfig
from soulx_live.control.client import query_status
from soulx_live.control.server import ControlHandlers, ControlServer
from soulx_live.errors import DaemonError, DaemonUnavailable
from soulx_live.factory.engine import build_engine
from soulx_live.factory.isolation import choose_isolation
from soulx_live.factory.sinks import build_sinks
from soulx_live.live.driver import EngineDriver, RunParts
from soulx_live.live.fanout import SINK_PREFIX, SinkFanout
from soulx_live.live.inprocess import InProcessDriver
from soulx_live.live.lifecycle import Lifecycle, Phase
from soulx_live.live.metrics_hub import MetricsHub
from soulx_live.live.push_host import PushHost, SpeechListener
from soulx_live.live.remote import RemoteDriver
from soulx_live.live.session import Counters, LiveSession
from soulx_live.live.signals import SignalLatch
from soulx_live.live.supervised import SupervisedDriver
from soulx_live.live.threads import ThreadGroup
from soulx_live.push_bridge import PushBridge
from soulx_live.runtime_dir import endpoint, remove_socket_files
from soulx_live.studio.host import attach_studio

__all__ = ["Daemon"]

log = logging.getLogger(__name__)

POLL_S = 0.05
SINK_CLOSE_S = 5.0  # extra time sinks get to finalise after the drain deadline
JOIN_S = 2.0
STATUS_STATES = ("starting", "running", "stalled", "restarting", "degraded", "failed", "stopped")


class Daemon:
    """One daemon run. ``run()`` blocks until the session ends or a signal stops it; returns the exit code.

    ``engine_factory`` and ``sink_factory`` default to :func:`~soulx_live.factory.engine.build_engine` and
    :func:`~soulx_live.factory.sinks.build_sinks` (tests inject fakes; an injected engine runs in-process).
    ``speech_listeners`` get every speech event (started/finished/interrupted) of pushed audio.
    """

    def __init__(self, config: SoulxConfig, *,
                 engine_factory: Callable[[SoulxConfig], AvatarEngine] = build_engine,
                 sink_factory: Callable[[SoulxConfig], list[FrameSink]] = build_sinks,
                 announce: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.studio, sink_factory = attach_studio(self, sink_factory, announce)  # the control page (studio.enabled)
        self.isolation = choose_isolation(config, injected_engine=engine_factory is not build_engine)
        self.lifecycle = Lifecycle()
        self.session = LiveSession()
        self.hub = MetricsHub(config.metrics)
        self.threads = ThreadGroup(self._on_thread_error)
        self.fanout = SinkFanout(hwm_chunks=config.bus.hwm_chunks, session=self.session, lifecycle=self.lifecycle,
                                 metrics=self.hub, threads=self.threads)
        self.push = PushHost(config, lambda: self.fanout.sinks)
        parts = RunParts(config=config, lifecycle=self.lifecycle, session=self.session, fanout=self.fanout,
                         push=self.push, metrics=self.hub, threads=self.threads, sink_factory=sink_factory,
                         interrupt=self.interrupt, push_phonemes=self.push_phonemes, push_status=self._push_status)
        drivers: dict[str, Callable[[], EngineDriver]] = {"process": lambda: SupervisedDriver(parts),
                                                          "remote": lambda: RemoteDriver(parts)}
        self.driver = drivers.get(self.isolation, lambda: InProcessDriver(parts, engine_factory))()
        self._signals = SignalLatch()
        self._errors: list[str] = []
        self._startup_error: Exception | None = None

    # -- public ----------------------------------------------------------------------------------

    def run(self) -> int:
        """Start, wait for the end or a stop, drain, close. Returns 0 on a clean end, 1 otherwise.

        A failure before the session starts (engine, avatar, audio file, sockets) is raised instead, after
        everything started so far has been closed.
        """
        self._refuse_if_running()
        restore = self._signals.install()
        try:
            self.hub.start()
            if self.studio is not None:
                self.studio.start()
            control = ControlServer(endpoint("cli", self.config.bus),
                                    ControlHandlers(status=self.status, stop=self.request_stop, interrupt=self.interrupt,
                                                    studio_link=self.studio.new_link if self.studio else lambda: None))
            self.threads.start("control", control.serve, lambda: self.lifecycle.closing)
            self.threads.start("engine", self.driver.run)
            self._wait_running()
            self._drain()
        finally:
            self.lifecycle.close()
            self.threads.join_all(JOIN_S)
            if self._engine_running():
                self.driver.abort()  # no engine process may outlive the daemon
                self.threads.join_all(JOIN_S)
            if self.studio is not None:
                self.studio.close()
            self.hub.close()
            remove_socket_files(self.config.bus)  # every socket of this run is closed (a live daemon refused us)
            restore()
        if self._startup_error is not None:
            raise self._startup_error  # nothing ran: the caller shows the reason (the CLI as one line)
        for err in self._errors:
            log.error("%s", err)
        return 0 if not self._errors else 1

    def request_stop(self, reason: str = "stop requested") -> None:
        """Begin the drain (thread-safe; what the first signal and ``StopRequest`` do)."""
        if self.lifecycle.advance(Phase.DRAINING):
            self.lifecycle.drain_deadline = time.monotonic() + self.config.supervisor.shutdown_grace_s
            log.info("%s: stopping intake and draining", reason)
            self.session.counters.detail = "draining"
            intake = self.driver.intake
            if intake is not None:
                intake.source.stop()

    def interrupt(self) -> int:
        """Barge-in (thread-safe): drop the audio not yet turned into frames and return the new epoch."""
        shared = self.session
        with shared.feed_lock:
            shared.interrupt_mono = time.monotonic()  # before the sinks can see the new epoch (barge-in latency)
            intake = self.driver.intake
            if intake is not None:
                shared.timeline_skip += intake.clear()
            if shared.onsets is not None:
                shared.onsets.clear()
            with shared.epoch_lock:
                epoch = self.driver.next_epoch()
                shared.epoch = max(shared.epoch, epoch)
                shared.counters.interrupts += 1
        log.info("interrupt: epoch %d", epoch)
        return epoch

    def push_phonemes(self, spans: list[tuple[int, int, str]]) -> None:
        """Phoneme timings given on the fed audio timeline, for the engine session (thread-safe)."""
        self.driver.push_phonemes(spans)

    def played_samples(self) -> int:
        """How far the sinks have played the fed audio timeline (the slowest sink; no sinks: all fed)."""
        return self.session.played_samples()

    @property
    def epoch(self) -> int:
        return self.session.epoch

    @property
    def counters(self) -> Counters:
        return self.session.counters

    @property
    def spec(self) -> ChunkSpec | None:
        return self.session.spec

    @property
    def sinks(self) -> list[FrameSink]:
        return self.fanout.sinks

    @property
    def speech_listeners(self) -> list[SpeechListener]:
        return self.push.listeners

    @property
    def push_handler(self) -> PushBridge | None:
        """The push API's handler (``audio.source=push``, once the session runs), else None."""
        return self.push.bridge

    @property
    def metrics(self) -> Any:
        """The run's ``DaemonMetrics`` while it runs with metrics on, else None."""
        return self.hub.metrics

    @property
    def worker_pid(self) -> int | None:
        """The engine worker's pid (process isolation), else None."""
        return self.driver.pid

    def status(self) -> protocol.StatusReply:
        """The current :class:`~soulx_live.protocol.StatusReply`."""
        c, view = self.session.counters, self.driver.view()
        state = self._state()
        if view.state is not None and state == "running":
            state = view.state
        detail = (f"isolation={self.isolation} frames={view.frames} audio_dropped_samples={c.audio_dropped} "
                  f"epoch={self.session.epoch}" + (f" engine={view.note}" if view.note is not None else "")
                  + (f" {c.detail}" if c.detail else ""))
        return protocol.StatusReply(
            state=state if state in STATUS_STATES else "running",  # type: ignore[arg-type]
            engine=self.config.engine.kind, session_id=c.session_id, chunks_done=view.chunks, restarts=view.restarts,
            uptime_s=time.monotonic() - c.started_mono, detail=detail,
            sinks={**c.sinks, **(self.studio.sink_states() if self.studio else {})},
            metrics=self.hub.snapshot(*self.driver.memory), studio_url=(self.studio.url or "") if self.studio else "")

    # -- internals -------------------------------------------------------------------------------

    def _state(self) -> str:
        """The run's state as ``status`` names it."""
        phase = self.lifecycle.phase
        if phase is Phase.STOPPED:
            return "failed" if self._errors else "stopped"
        if self.lifecycle.failed:
            return "failed"
        return "starting" if phase is Phase.STARTING else "running"

    def _refuse_if_running(self) -> None:
        """Binding an ipc:// address replaces a live daemon's socket silently: ask first."""
        try:
            reply = query_status(self.config.bus, timeout_s=0.5)
        except DaemonUnavailable:
            return
        raise DaemonError(f"a daemon is already running (session {reply.session_id}, state {reply.state}); "
                          "stop it first (Ctrl-C in its terminal) or give this one another bus.runtime_dir")

    def _on_thread_error(self, name: str, exc: Exception) -> None:
        """A thread failed: before the session runs that is a startup error (raised by ``run``); later the
        engine, intake or control failing stops the run with exit 1; a broken sink stops alone."""
        self._errors.append(f"{name}: {exc}")
        if name in ("engine", "control") and not self.lifecycle.started:
            self._startup_error = self._startup_error or exc
            self.lifecycle.advance(Phase.CLOSING)  # no drain for a session that never started
        elif not name.startswith(SINK_PREFIX):
            self.lifecycle.failed = True
            self.request_stop(f"{name} failed")
        else:
            log.error("%s failed: %s", name, exc)

    def _poll_signals(self) -> None:
        if self._signals.count >= 2:
            log.error("second interrupt: exiting immediately without finalising outputs")
            logging.shutdown()
            os._exit(1)
        if self._signals.count == 1 and not self.lifecycle.stopping:
            grace = self.config.supervisor.shutdown_grace_s
            self.request_stop(f"interrupt (press Ctrl-C again to force; draining for at most {grace:g} s)")

    def _engine_running(self) -> bool:
        return self.threads.alive(lambda name: name == "engine")

    def _wait_running(self) -> None:
        """Until the session ends on its own (file source finished) or a stop begins."""
        while not self.lifecycle.stopping and self._engine_running():
            self._poll_signals()
            self.lifecycle.wait_stopping(POLL_S)

    def _drain(self) -> None:
        grace_s = self.config.supervisor.shutdown_grace_s
        if self.lifecycle.drain_deadline is None:  # the session ended on its own (a file source finished)
            self.lifecycle.drain_deadline = time.monotonic() + grace_s
        deadline = self.lifecycle.drain_deadline
        while time.monotonic() < deadline and not self._outputs_done():
            self._poll_signals()
            time.sleep(POLL_S)
        if self._outputs_done():
            return
        log.warning("drain not finished after %.1f s (supervisor.shutdown_grace_s); closing outputs now", grace_s)
        self._errors.append(f"shutdown exceeded supervisor.shutdown_grace_s={grace_s:g}")
        self.lifecycle.advance(Phase.CLOSING)
        end = time.monotonic() + SINK_CLOSE_S
        while time.monotonic() < end and not self._outputs_done(engine_too=False):
            self._poll_signals()
            time.sleep(POLL_S)

    def _outputs_done(self, engine_too: bool = True) -> bool:
        """Every sink thread (and with ``engine_too`` the engine and intake threads) has finished."""
        return not self.threads.alive(
            lambda n: n.startswith(SINK_PREFIX) or (engine_too and n in ("engine", "intake")))

    def _push_status(self) -> dict[str, object]:
        reply = self.status()
        return {"state": reply.state, "session_id": reply.session_id, "epoch": self.session.epoch,
                "restarts": reply.restarts, "chunks_done": reply.chunks_done}

"""How the daemon drives an engine: the :class:`EngineDriver` protocol and what its two implementations share.

:class:`~soulx_live.live.inprocess.InProcessDriver` runs the engine on the daemon's engine thread;
:class:`~soulx_live.live.supervised.SupervisedDriver` runs it in a supervised worker process (or torchrun
group) and only moves audio to it. Both open the audio intake, start the push API and the intake thread the
same way (:meth:`DriverBase.go_live`).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from engine.interface import ChunkSpec
from plugins.base import FrameSink
from soulx_live.audio.source import AudioSource
from soulx_live.config import SoulxConfig
from soulx_live.factory.sources import build_source
from soulx_live.live.fanout import SinkFanout
from soulx_live.live.intake import AudioIntake
from soulx_live.live.lifecycle import Lifecycle
from soulx_live.live.metrics_hub import MetricsHub
from soulx_live.live.push_host import PushHost
from soulx_live.live.session import LiveSession
from soulx_live.live.threads import ThreadGroup

__all__ = ["DriverBase", "EngineDriver", "EngineView", "RunParts"]

log = logging.getLogger(__name__)

POLL_S = 0.05
Phonemes = list[tuple[int, int, str]]


@dataclass(frozen=True)
class EngineView:
    """The engine as ``status`` shows it."""

    chunks: int
    frames: int
    restarts: int = 0
    state: str | None = None  # the worker's state when it overrides the run's ("restarting", "failed", ...)
    note: str | None = None  # the worker's last reported state, for the status detail


@dataclass(frozen=True)
class RunParts:
    """The parts of a run a driver works with, and the daemon calls it hands on (push API, phonemes)."""

    config: SoulxConfig
    lifecycle: Lifecycle
    session: LiveSession
    fanout: SinkFanout
    push: PushHost
    metrics: MetricsHub
    threads: ThreadGroup
    sink_factory: Callable[[SoulxConfig], list[FrameSink]]
    interrupt: Callable[[], int]
    push_phonemes: Callable[[Phonemes], None]
    push_status: Callable[[], dict[str, object]]


class EngineDriver(Protocol):
    isolation: str
    intake: AudioIntake | None

    def run(self) -> None:
        """The engine thread: start the engine and the session, move audio until intake ends, drain."""

    def next_epoch(self) -> int:
        """Barge-in (called with the feed and epoch locks held): reset the engine; the new epoch."""

    def push_phonemes(self, spans: Phonemes) -> None:
        """Phoneme timings on the fed audio timeline, for the session (thread-safe)."""

    def view(self) -> EngineView: ...

    def abort(self) -> None:
        """The daemon is exiting now: end whatever of the engine is still running (no orphan survives it)."""

    def change_avatar(self, path: Path) -> None:
        """A new session with this portrait (thread-safe)."""

    @property
    def pid(self) -> int | None: ...

    @property
    def memory(self) -> tuple[float, int]: ...


class DriverBase:
    """What both drivers do around the engine: the intake, the push API and going live."""

    isolation = "thread"

    def __init__(self, parts: RunParts) -> None:
        self.parts = parts
        self.intake: AudioIntake | None = None
        self.pending_avatar: Path | None = None  # a new session with this portrait, at the engine thread's next step

    def change_avatar(self, path: Path) -> None:
        """Start a new session with the portrait at ``path`` (any thread; the engine thread switches). The caller
        has checked the image (a face in it) and interrupted what was being said."""
        self.pending_avatar = path

    def open_intake(self, spec: ChunkSpec) -> AudioIntake:
        """The configured audio source behind an intake ring (stopped at once when a stop came meanwhile)."""
        parts = self.parts
        source = build_source(parts.config, block_samples=spec.samples_per_frame)
        if parts.lifecycle.stopping:
            source.stop()
        self.intake = AudioIntake(source, spec.sample_rate, lambda: parts.lifecycle.stopping, parts.session.feed_lock)
        return self.intake

    def go_live(self, intake: AudioIntake, spec: ChunkSpec, session_id: str) -> None:
        """The session runs: push API up, lifecycle running, intake thread started."""
        parts = self.parts
        parts.session.counters.session_id = session_id
        parts.push.start(intake.source, spec, interrupt=parts.interrupt, push_phonemes=parts.push_phonemes,
                         status=parts.push_status)
        parts.lifecycle.session_started()
        parts.threads.start("intake", intake.run)

    def after_feed(self, intake: AudioIntake, dropped_elsewhere: int = 0) -> None:
        """Bookkeeping after each move of audio: drops, how far the sinks played, the intake queue depth."""
        parts = self.parts
        parts.session.counters.audio_dropped = intake.dropped + dropped_elsewhere
        parts.push.report_played(parts.session.played_samples())
        parts.metrics.observe("set_queue_depth", "intake_samples", intake.buffered)

    def abort(self) -> None:
        """Nothing outlives an in-process engine: its threads end with the daemon."""

    @property
    def memory(self) -> tuple[float, int]:
        """The engine's own RSS and CUDA memory in MB when it lives in another process (else zeros)."""
        return 0.0, 0

    @staticmethod
    def source_is_live(source: AudioSource | None) -> bool:
        return source is None or source.realtime

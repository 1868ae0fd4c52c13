"""The engine behind a process boundary, as the daemon sees it: a supervised worker plus its client.

:class:`WorkerEngine` bundles :class:`~soulx_live.supervisor.Supervisor` (spawn, handshake, heartbeat
watchdog, restarts) and :class:`~soulx_live.engine_client.EngineClient` (never-blocking sends) behind the
few calls the daemon makes: ``start`` (blocks for the first Ready and returns the chunk spec),
``start_session``, ``push_audio``, ``push_phonemes``, ``interrupt``, ``stop_session``, ``close``.
The worker binds the frame bus itself; the daemon's sink threads subscribe to it and stay connected
across restarts (ZeroMQ reconnects). Only numpy and ZeroMQ are imported here, never torch.

``chunks_done`` counts chunks over all worker generations (a restarted worker counts from 0 again).
Audio the worker has not yet put into a published chunk is kept (up to ``supervisor.replay_max_s``) and
replayed to a restarted worker, so a crash delays speech instead of losing it; audio that is lost anyway
(beyond that cap, or dropped by an engine that fell behind) is reported to ``on_audio_lost(start, n)``.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from engine.interface import ChunkSpec
from soulx_live.config import SoulxConfig
from soulx_live.protocol import EngineState, Heartbeat

__all__ = ["WorkerEngine"]

log = logging.getLogger(__name__)

READY_MARGIN_S = 5.0  # on top of supervisor.init_timeout_s for the first Ready (spawn, imports)
READY_POLL_S = 0.1  # how often a start checks whether it was cancelled

StateListener = Callable[[EngineState, str], None]


class WorkerEngine:
    """One supervised engine worker process for the daemon. Thread-safe except ``start``/``close``."""

    def __init__(self, config: SoulxConfig, *, subscribers: int, on_state: StateListener | None = None,
                 health_checks: Sequence[Callable[[int], str | None]] = (),
                 on_progress: Callable[[Heartbeat], None] | None = None,
                 on_audio_lost: Callable[[int, int], None] | None = None) -> None:
        from soulx_live.engine_client import EngineClient
        from soulx_live.supervisor import Supervisor
        from soulx_live.worker_launch import WorkerLaunch

        self.config = config
        self._on_state = on_state
        self._lock = threading.Lock()
        self._chunks_before = 0  # chunks made by earlier worker generations
        # a replayed outage adds to the live latency (sinks play what arrives back to back) but loses no speech
        self.client = EngineClient(config.audio.sample_rate, max_pending_s=config.supervisor.replay_max_s,
                                   on_audio_lost=on_audio_lost)
        launch = WorkerLaunch.from_config(config, subscribers=subscribers)
        self.frames_address = launch.frames
        kwargs: dict[str, object] = {"client": self.client, "on_state": self._state_changed,
                                     "sample_rate": config.audio.sample_rate}
        if health_checks:
            kwargs["health_checks"] = tuple(health_checks)
        if on_progress is not None:
            kwargs["on_progress"] = on_progress  # each heartbeat that reports new chunks
        self.supervisor = Supervisor(config.supervisor, launch, **kwargs)  # type: ignore[arg-type]

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self, cancelled: Callable[[], bool] = lambda: False) -> ChunkSpec:
        """Spawn the worker and wait for its Ready; the chunk spec. Raises SupervisorError (also
        when ``cancelled()`` turns true meanwhile: a stop during a long model load)."""
        from soulx_live.supervisor import SupervisorError

        self.supervisor.start()
        deadline = time.monotonic() + self.config.supervisor.init_timeout_s + READY_MARGIN_S
        while True:
            try:
                return self.supervisor.wait_ready(READY_POLL_S)
            except SupervisorError:
                if self.supervisor.state == "failed" or time.monotonic() > deadline:
                    raise
                if cancelled():
                    raise SupervisorError("stopped while the engine worker was starting") from None

    def close(self, grace_s: float | None = None) -> None:
        """Staged stop of the worker (Shutdown, drain, SIGTERM, SIGKILL)."""
        self.supervisor.close(grace_s)

    def kill_now(self) -> None:
        """SIGKILL the worker's process group now (the daemon is exiting and the staged close has not finished)."""
        self.supervisor.kill_now()

    # -- session ---------------------------------------------------------------------------------

    def start_session(self, session_id: str, *, seed: int, prompt: str, avatar: Path | None,
                      first_frame: int = 0) -> None:
        data = avatar.read_bytes() if avatar is not None else None
        self.client.start_session(session_id, seed=seed, prompt=prompt, avatar=data, first_frame=first_frame)

    def push_audio(self, pcm: np.ndarray) -> None:
        self.client.push_audio(pcm)

    def push_phonemes(self, spans: list[tuple[int, int, str]]) -> None:
        push = getattr(self.client, "push_phonemes", None)
        if push is not None:
            push(spans)

    def interrupt(self) -> int:
        """Barge-in: the new epoch (queued audio dropped, Interrupt sent ahead of later audio)."""
        return int(self.client.interrupt())

    def stop_session(self) -> None:
        self.client.stop_session()

    # -- state -----------------------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        return int(getattr(self.client, "epoch", 0))

    @property
    def state(self) -> EngineState:
        return self.supervisor.state

    @property
    def detail(self) -> str:
        return self.supervisor.detail

    @property
    def restarts(self) -> int:
        return self.supervisor.stats.restarts

    @property
    def pid(self) -> int | None:
        return self.supervisor.pid

    @property
    def chunks_done(self) -> int:
        with self._lock:
            return self._chunks_before + self.supervisor.stats.chunks_done

    @property
    def dropped_samples(self) -> int:
        """Samples of the session's audio that no worker will render (reported to ``on_audio_lost``)."""
        return int(self.client.dropped_samples)

    @property
    def replayed_samples(self) -> int:
        """Samples sent again to a restarted worker (the dead one had not rendered them)."""
        return int(self.client.replayed_samples)

    def _state_changed(self, state: EngineState, detail: str) -> None:
        if state == "restarting":
            with self._lock:  # the dead worker's count is final; the next one starts from 0
                self._chunks_before += self.supervisor.stats.chunks_done
                self.supervisor.stats.chunks_done = 0
        if self._on_state is not None:
            self._on_state(state, detail)

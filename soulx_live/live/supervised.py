"""The engine in a supervised worker process (or torchrun group): the daemon only moves audio to it.

Sinks subscribe first, then :class:`~soulx_live.live_engine.WorkerEngine` spawns the worker, which binds the
frame bus; a restarted worker resumes the session while the sinks hold the picture. After intake ends the
worker turns what it has into chunks; the driver waits until its chunk count stops moving (EndOfStream alone is
not enough: the bus drops it for a subscriber whose queue is full after the final burst).

A restarted worker gets the audio its predecessor had not rendered first (nothing is lost up to
``supervisor.replay_max_s``); audio lost anyway is reported, as fed-timeline spans, to the push API
(``parts.push.audio_lost(start_sample, n_samples)``) so that what it says was played stays true.
"""
from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable

from engine.interface import ChunkSpec
from soulx_live.errors import DaemonError
from soulx_live.factory.engine import load_avatar
from soulx_live.live.driver import POLL_S, DriverBase, EngineView, Phonemes, RunParts
from soulx_live.live.intake import AudioIntake, clean_pcm
from soulx_live.live.lifecycle import Phase
from soulx_live.live_engine import WorkerEngine
from soulx_live.protocol import Heartbeat

__all__ = ["SupervisedDriver", "restart_reason"]

log = logging.getLogger(__name__)

DRAIN_SETTLE_S = 0.5  # no new chunk for this long after StopSession: the worker has drained


def restart_reason(detail: str) -> str:
    """A short, low-cardinality reason for the restart counter from the supervisor's detail text."""
    text = detail.lower()
    for key, reason in (("killed by", "killed"), ("exited", "exited"), ("no heartbeat", "hung"),
                        ("no chunk", "stalled"), ("no ready", "init_timeout")):
        if key in text:
            return reason
    return "health"


class SupervisedDriver(DriverBase):
    """:class:`~soulx_live.live.driver.EngineDriver` for the engine in a supervised worker."""

    isolation = "process"

    def __init__(self, parts: RunParts) -> None:
        super().__init__(parts)
        self.worker: WorkerEngine | None = None  # set once the session runs (under the epoch lock)
        self._process: WorkerEngine | None = None  # the worker from its spawn to its close (for abort)
        self._engine_rss_mb = 0.0  # the worker's RSS from the memory watch
        self._engine_gpu_mb = 0  # the worker's CUDA memory from its heartbeats
        self._session_base = 0  # engine-timeline sample where the current session started (a new avatar)

    # -- EngineDriver ----------------------------------------------------------------------------

    def next_epoch(self) -> int:
        worker = self.worker
        return worker.interrupt() if worker is not None else self.parts.session.epoch + 1

    def push_phonemes(self, spans: Phonemes) -> None:
        worker = self.worker
        moved = self.parts.session.shift_to_engine(spans, (worker.dropped_samples if worker is not None else 0)
                                                   + self._session_base)
        if moved and worker is not None:
            worker.push_phonemes(moved)

    def view(self) -> EngineView:
        worker, shared = self.worker, self.parts.session
        if worker is None:
            return EngineView(chunks=shared.counters.chunks, frames=shared.counters.frames)
        chunks = worker.chunks_done
        frames = chunks * shared.spec.frames_per_chunk if shared.spec is not None else shared.counters.frames
        state = worker.state if worker.state in ("stalled", "restarting", "failed", "degraded") else None
        return EngineView(chunks=chunks, frames=frames, restarts=worker.restarts, state=state,
                          note=self.parts.fanout.engine_note[0])

    def abort(self) -> None:
        process = self._process
        if process is not None:
            log.warning("the engine worker is still closing as the daemon exits; killing its process group")
            process.kill_now()

    @property
    def pid(self) -> int | None:
        return self.worker.pid if self.worker is not None else None

    @property
    def memory(self) -> tuple[float, int]:
        """The worker's RSS (MB) and CUDA memory (MB) as last seen."""
        return self._engine_rss_mb, self._engine_gpu_mb

    # -- the engine thread -----------------------------------------------------------------------

    def run(self) -> None:
        from soulx_live.supervisor import SupervisorError

        parts, config = self.parts, self.parts.config
        load_avatar(config.engine.avatar)  # a bad path fails here, with the same message as in-process
        parts.fanout.sinks = parts.sink_factory(config)
        worker = WorkerEngine(config, subscribers=len(parts.fanout.sinks), on_state=self._on_engine_state,
                              health_checks=[self._memory_check()], on_progress=self._on_progress,
                              on_audio_lost=self._on_audio_lost)
        self._process = worker
        parts.fanout.start(worker.frames_address, hold=True)
        try:
            log.info("starting the %s engine in a worker process", config.engine.kind)
            try:
                spec = worker.start(cancelled=lambda: parts.lifecycle.stopping)
            except SupervisorError as exc:
                raise DaemonError(f"the engine worker did not start: {exc}") from exc
            parts.session.set_spec(spec)
            intake = self.open_intake(spec)
            session_id = uuid.uuid4().hex[:12]
            worker.start_session(session_id, seed=config.engine.seed, prompt=config.engine.prompt,
                                 avatar=config.engine.avatar)
            with parts.session.epoch_lock:
                self.worker = worker
            self.go_live(intake, spec, session_id)
            log.info("session %s: %s engine %dx%d @ %s fps in worker pid %s, real-time from %s",
                     session_id, config.engine.kind, spec.width, spec.height, spec.fps, worker.pid, intake.source.name)
            self._feed(worker, intake)
            worker.stop_session()  # the worker turns what it has into chunks, then EndOfStream
            parts.session.mark_ended()
            log.info("session %s: input ended; the engine worker finishes its last chunks", session_id)
            self._await_drained(worker, spec)
        finally:
            parts.session.mark_ended()
            parts.fanout.await_done()
            parts.push.stop()
            # whatever is left of the drain (all of it when the session ended on its own), never more
            worker.close(parts.lifecycle.drain_left_s(config.supervisor.shutdown_grace_s))
            self.worker = self._process = None

    def _feed(self, worker: WorkerEngine, intake: AudioIntake) -> None:
        """Move audio from the ring to the worker until intake ends; fail if the worker cannot be kept up."""
        parts = self.parts
        while not parts.lifecycle.closing:
            intake.wait(POLL_S)
            if self.pending_avatar is not None:
                self._replace_session(worker)
            intake_over = intake.over
            with intake.lock:
                pcm = intake.take()
                if pcm.shape[0]:
                    clean = clean_pcm(pcm, parts.session.counters)
                    worker.push_audio(clean)
                    parts.session.record_fed(clean, live=intake.source.realtime)
            parts.session.engine_dropped = worker.dropped_samples
            self.after_feed(intake, worker.dropped_samples)
            if worker.state == "failed":
                raise DaemonError(f"the engine worker failed and is not restarted: {worker.detail}")
            if intake_over:
                return

    def _replace_session(self, worker: WorkerEngine) -> None:
        """A new session for :attr:`pending_avatar`, its frames continuing after the audio the worker has."""
        path, self.pending_avatar = self.pending_avatar, None
        shared, config = self.parts.session, self.parts.config
        spec = shared.spec
        assert spec is not None and path is not None
        engine_samples = shared.fed_samples - shared.timeline_skip - worker.dropped_samples
        first = -(-engine_samples // spec.samples_per_frame)
        self._session_base = first * spec.samples_per_frame
        session_id = uuid.uuid4().hex[:12]
        worker.start_session(session_id, seed=config.engine.seed, prompt=config.engine.prompt, avatar=path,
                             first_frame=first)
        shared.counters.session_id = session_id
        log.info("session %s: new avatar %s (frames continue at %d)", session_id, path, first)

    def _await_drained(self, worker: WorkerEngine, spec: ChunkSpec) -> None:
        """After StopSession: wait until the worker's chunk count stops moving (its last chunk is out), then
        let the sinks finish as soon as their queues are empty."""
        window = max(DRAIN_SETTLE_S, 3 * spec.chunk_duration_s)
        count, since = worker.chunks_done, time.monotonic()
        while not self.parts.lifecycle.closing and worker.state not in ("failed", "stopped"):
            time.sleep(POLL_S)
            now = time.monotonic()
            if worker.chunks_done != count:
                count, since = worker.chunks_done, now
            elif now - since >= window:
                break
        self.parts.session.drained_mono = time.monotonic()
        log.debug("engine worker drained: %d chunks in all", count)

    # -- supervisor callbacks (its thread) -------------------------------------------------------

    def _on_engine_state(self, state: str, detail: str) -> None:
        """Remember the engine state for status and the sinks' hold reason; follow restarts in the lifecycle."""
        self.parts.fanout.engine_note = (state, detail)
        if state == "restarting":
            self.parts.metrics.observe("add_restart", restart_reason(detail))
            self.parts.metrics.engine_restarted()
            self.parts.lifecycle.advance(Phase.RESTARTING)
            log.warning("engine worker restarting (%s); the sinks hold the picture meanwhile", detail)
        elif state == "running" and self.parts.lifecycle.phase is Phase.RESTARTING:
            self.parts.lifecycle.advance(Phase.RUNNING)

    def _on_progress(self, beat: Heartbeat) -> None:
        """A heartbeat after new chunks: the latest chunk's compute time, GPU memory and drift corrections."""
        self._engine_gpu_mb = beat.cuda_mem_mb
        spec = self.parts.session.spec
        if spec is not None:
            self.parts.metrics.observe("observe_chunk", beat.last_step_ms / 1000.0, spec.chunk_duration_s)
        self.parts.metrics.note_corrections(beat.regenerated, beat.re_anchored)

    def _on_audio_lost(self, start_sample: int, n_samples: int) -> None:
        """Fed audio no worker will render (engine thread or supervisor thread): the push API reports the
        utterances it cuts (an utterance must not claim to have played audio that was never shown)."""
        self.parts.push.audio_lost(start_sample, n_samples)

    def _memory_check(self) -> Callable[[int], str | None]:
        """Worker health check: the memory watermark (``supervisor.memory_limit_mb``) and leak trend."""
        from soulx_live.memory_watch import MemoryWatch

        sup = self.parts.config.supervisor
        watch = MemoryWatch(sup.memory_limit_mb, sup.leak_mb_per_hour)

        def check(pid: int) -> str | None:
            verdict = watch.check(pid)
            self._engine_rss_mb = watch.last_rss_mb
            return verdict

        return check

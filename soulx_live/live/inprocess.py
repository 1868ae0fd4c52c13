"""The engine in the daemon's own process: built on the engine thread, which owns the session and the frame
publisher, moves audio from the intake ring into ``session.push_audio`` and publishes every ready chunk.

Used for a file rendered as fast as possible (no process hop, lossless: the engine waits for the slowest sink)
and for engines injected by tests. Barge-in resets the session on this thread and primes it with silence so
an idle chunk follows at once.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np

from engine.interface import AvatarEngine, AvatarSession, ChunkSpec
from soulx_live.bus import FramePublisher
from soulx_live.config import SoulxConfig
from soulx_live.corrections import correction_counts
from soulx_live.factory.engine import load_avatar, session_request
from soulx_live.live.driver import POLL_S, DriverBase, EngineView, Phonemes, RunParts
from soulx_live.live.fanout import SUBSCRIBER_WAIT_S
from soulx_live.live.intake import AudioIntake, clean_pcm
from soulx_live.timeline import shift_frames

__all__ = ["InProcessDriver"]

log = logging.getLogger(__name__)


class InProcessDriver(DriverBase):
    """:class:`~soulx_live.live.driver.EngineDriver` for an engine built (or injected) in this process."""

    isolation = "thread"

    def __init__(self, parts: RunParts, engine_factory: Callable[[SoulxConfig], AvatarEngine]) -> None:
        super().__init__(parts)
        self._engine_factory = engine_factory
        self._applied_epoch = 0  # the newest epoch the session was reset for (engine thread)
        self._last_frame = -1  # last frame index published (engine thread)
        self._pending_phonemes: list[Phonemes] = []  # for the engine thread, which owns the session
        self._frame_offset = 0  # frames of the sessions before this one (a new avatar continues the timeline)
        self._engine: AvatarEngine | None = None

    # -- EngineDriver ----------------------------------------------------------------------------

    def next_epoch(self) -> int:
        return self.parts.session.epoch + 1  # the engine thread resets the session when it sees it

    def push_phonemes(self, spans: Phonemes) -> None:
        spec = self.parts.session.spec  # a replacing session's own timeline starts at its first frame
        moved = self.parts.session.shift_to_engine(spans, self._frame_offset * spec.samples_per_frame if spec else 0)
        if moved:
            self._pending_phonemes.append(moved)

    def view(self) -> EngineView:
        counters = self.parts.session.counters
        return EngineView(chunks=counters.chunks, frames=counters.frames)

    @property
    def pid(self) -> int | None:
        return None

    # -- the engine thread -----------------------------------------------------------------------

    def run(self) -> None:
        from soulx_live.runtime_dir import endpoint

        parts, config = self.parts, self.parts.config
        log.info("building the %s engine", config.engine.kind)
        engine = self._engine = self._engine_factory(config)
        spec = parts.session.spec = engine.spec
        intake = self.open_intake(spec)
        request = session_request(config, load_avatar(config.engine.avatar), realtime=intake.source.realtime)
        session, session_id = engine.start_session(request), request.session_id
        address = endpoint("frames", config.bus)
        publisher = FramePublisher(address, hwm_chunks=config.bus.hwm_chunks)
        try:
            parts.session.set_spec(spec)
            parts.fanout.sinks = parts.sink_factory(config)
            parts.fanout.start(address, hold=False)
            sinks = len(parts.fanout.sinks)
            if sinks and not publisher.wait_for_subscribers(sinks, timeout_s=SUBSCRIBER_WAIT_S):
                log.warning("not every sink connected to the bus within %.0f s; their first chunks may be lost",
                            SUBSCRIBER_WAIT_S)
            source = intake.source
            self.go_live(intake, spec, session_id)
            log.info("session %s: %s engine %dx%d @ %s fps in this process, %s from %s (%.1f s)",
                     session_id, engine.name, spec.width, spec.height, spec.fps,
                     "real-time" if source.realtime else "as fast as possible", source.name, source.duration_s)
            self._pump(session, publisher, spec, intake)
            counters = parts.session.counters
            log.info("session %s ended: %d chunks, %d frames", session_id, counters.chunks, counters.frames)
        finally:
            # Always announce the end, also after an engine error, so sinks finalise what they have.
            # EndOfStream is advisory on the bus (a full subscriber drops it); final_frame backs it up.
            parts.session.mark_ended(final_frame=self._last_frame)
            publisher.publish_end(parts.session.counters.session_id or session_id, self._last_frame)
            publisher.close()
            parts.push.stop()

    def _pump(self, session: AvatarSession, publisher: FramePublisher, spec: ChunkSpec, intake: AudioIntake) -> None:
        """Move audio into the session and publish chunks until intake ends (or the run is closing)."""
        parts, shared = self.parts, self.parts.session
        pushed = consumed = 0
        while not parts.lifecycle.closing:
            intake.wait(POLL_S)
            if self._applied_epoch < shared.epoch:  # barge-in: drop what the session holds, go idle now
                session.reset()
                shared.timeline_skip += pushed - consumed
                consumed = pushed
                self._applied_epoch = shared.epoch
                primed = _prime_idle(session, spec)
                pushed += primed
                shared.timeline_skip -= primed  # frames that no fed audio stands for
            if self.pending_avatar is not None:  # a new avatar: a new session continuing the frame timeline
                session = self._replace_session(session, intake)
                shared.timeline_skip += pushed - consumed
                consumed = pushed
            self._forward_phonemes(session)
            intake_over = intake.over  # read before draining the ring: no sample is missed
            with intake.lock:
                pcm = intake.take()
            if pcm.shape[0]:
                clean = clean_pcm(pcm, shared.counters)
                session.push_audio(clean)
                pushed += int(clean.shape[0])
                shared.record_fed(clean, live=intake.source.realtime)
            # At the end, pad the last partial chunk with silence instead of leaving it unsaid.
            while not parts.lifecycle.closing and (session.chunks_ready() > 0 or (intake_over and pushed > consumed)):
                consumed += self._publish_next(session, publisher, spec, intake)
            self.after_feed(intake)
            if intake_over:
                break

    def _publish_next(self, session: AvatarSession, publisher: FramePublisher, spec: ChunkSpec,
                      intake: AudioIntake) -> int:
        """Make the next chunk and publish it (pacing non-live input to the slowest sink); samples it used."""
        parts, counters = self.parts, self.parts.session.counters
        t_chunk = time.perf_counter()
        chunk = shift_frames(session.next_chunk(), self._frame_offset, spec.samples_per_frame)
        parts.metrics.observe("observe_chunk", time.perf_counter() - t_chunk, spec.chunk_duration_s)
        parts.metrics.note_corrections(*correction_counts(getattr(session, "stats", None)))
        if not self.source_is_live(intake.source):
            parts.fanout.wait_for_progress(chunk.first_frame - parts.config.bus.hwm_chunks * spec.frames_per_chunk)
        if not publisher.publish(chunk, spec, epoch=self._applied_epoch):
            counters.bus_not_sent += 1
        self._last_frame = chunk.first_frame + chunk.num_frames - 1
        counters.chunks += 1
        counters.frames += chunk.num_frames
        return chunk.num_frames * spec.samples_per_frame

    def _replace_session(self, session: AvatarSession, intake: AudioIntake) -> AvatarSession:
        """The session for :attr:`pending_avatar`; the old one stays when the new one cannot start."""
        path, self.pending_avatar = self.pending_avatar, None
        assert self._engine is not None and path is not None
        try:
            request = session_request(self.parts.config, load_avatar(path), realtime=intake.source.realtime)
            new = self._engine.start_session(request)
        except Exception as exc:  # noqa: BLE001 - a bad portrait must not end the run: the old session goes on
            log.error("new avatar %s not used: %s", path, exc)
            return session
        self._frame_offset = self._last_frame + 1
        self.parts.session.counters.session_id = request.session_id
        log.info("session %s: new avatar %s (frames continue at %d)", request.session_id, path, self._frame_offset)
        return new

    def _forward_phonemes(self, session: AvatarSession) -> None:
        push = getattr(session, "push_phonemes", None)
        while self._pending_phonemes:
            spans = self._pending_phonemes.pop(0)
            if push is not None:
                push(spans)


def _prime_idle(session: AvatarSession, spec: ChunkSpec) -> int:
    """After a reset, push silence a frame at a time until a chunk can be made (at most two chunks' worth), so
    an idle chunk follows the interrupt at once; returns the samples pushed."""
    silence = np.zeros(spec.samples_per_frame, dtype=np.float32)
    primed = 0
    while session.chunks_ready() < 1 and primed < 2 * spec.samples_per_chunk:
        session.push_audio(silence)
        primed += spec.samples_per_frame
    return primed

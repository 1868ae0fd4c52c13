"""The engine worker's loop around one engine: :class:`EngineWorker`, its options and exit codes.

Sockets: the worker *connects* ``ctrl`` (PULL) and ``events`` (PUSH) to the supervisor, which binds
them and so keeps them across worker restarts; it *binds* ``frames`` (the
:class:`~soulx_live.bus.FramePublisher`), to which the sinks stay connected (ZeroMQ reconnects).

One thread, one loop, one dispatcher (:meth:`EngineWorker.run`): read every waiting control message,
make at most one chunk, publish it, send a :class:`~soulx_live.protocol.Heartbeat`. Heartbeats come
from this loop itself, after every chunk and every ``heartbeat_interval_s`` while idle, so a heartbeat
proves the loop is alive and a stuck ``next_chunk`` stops them. Bad control messages are answered with
a non-fatal :class:`~soulx_live.protocol.EngineError` and the loop goes on; an exception that escapes
the loop is reported as a fatal EngineError before the process exits (``run_engine_process``).

Each heartbeat also says where on the session timeline the audio not yet in a published chunk starts
(``rendered_t``) and which spans the worker dropped (``lost``: its engine fell behind ``max_backlog_s``): the
client keeps the rest and replays it to a successor. Replayed audio (``AudioIn.replay``) may exceed the backlog
limit (it is owed), and with live input (``pace_lead_chunks``) chunks are published no further ahead of real time
than the bus queues hold, so a replayed backlog reaches sinks that play in real time without overflowing them.

Barge-in (:class:`~soulx_live.protocol.Interrupt`): control messages are all read before the next
chunk is made, so an Interrupt takes effect between two chunks: the staged audio and the audio inside
the session are dropped, ``session.reset()`` returns the avatar to its idle pose, and every later
chunk carries the new epoch. So that the picture goes idle at once rather than after a chunk of new
audio has arrived, the worker then pushes just enough silence for one chunk (``idle_after_interrupt``)
and publishes it right away; it replaces audio that was dropped, so the pipeline latency stays as it
was. Frame indices keep counting.
"""
from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import zmq

from engine.interface import (
    AvatarEngine,
    AvatarSession,
    ChunkSpec,
    SessionRequest,
    mono_pcm,
)
from soulx_live import protocol as p
from soulx_live.bus import FramePublisher
from soulx_live.corrections import correction_counts
from soulx_live.timeline import shift_frames

__all__ = ["EXIT_CONFIG", "EXIT_CRASH", "EXIT_OK", "EXIT_PARENT_GONE", "EngineWorker", "WorkerOptions"]

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_CRASH = 1
EXIT_CONFIG = 3
EXIT_PARENT_GONE = 4

IDLE_POLL_S = 0.02  # longest the loop sleeps in poll() when it has nothing to do
DROP_LOG_EVERY_S = 5.0


@dataclass(frozen=True)
class WorkerOptions:
    """Everything the worker needs besides the configuration (JSON-able)."""

    ctrl: str  # connect, PULL
    events: str  # connect, PUSH
    frames: str  # bind, PUB (FramePublisher)
    parent_pid: int = 0  # exit when the parent changes (0: do not watch)
    generation: int = 0  # restart count (names the process and its engine_id)
    heartbeat_interval_s: float = 0.5
    max_backlog_s: float = 2.0  # audio waiting for the engine beyond this is dropped, oldest first
    hwm_chunks: int = 2
    subscribers: int = 0  # wait for this many bus subscribers (the sinks) before Ready...
    subscribers_wait_s: float = 2.0  # ...at most this long
    drain_timeout_s: float = 10.0  # StopSession/Shutdown: longest time spent turning buffered audio into chunks
    epoch: int = 0  # barge-in epoch to start at (the daemon's current one, so a restarted worker continues it)
    idle_after_interrupt: bool = True  # after an Interrupt, publish one silent (idle) chunk at once
    # live input: publish at most this many chunks ahead of real time (0: as fast as the engine goes). Audio
    # arrives in real time, so this only holds back a backlog (audio replayed after a restart), which would
    # otherwise reach the bus in one burst and overflow the queues of sinks that play in real time
    pace_lead_chunks: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WorkerOptions:
        return cls(**data)


class _BadRequest(ValueError):
    """A control message that is well-formed but cannot be acted on (answered with EngineError)."""


# --- the loop -------------------------------------------------------------------------------------


class EngineWorker:
    """The worker's loop around one engine. Sockets are created by the caller and used from one thread."""

    def __init__(self, engine: AvatarEngine, options: WorkerOptions, ctrl: zmq.Socket, events: zmq.Socket,
                 publisher: FramePublisher, *, model: str = "") -> None:
        self.engine = engine
        self.world_size = 1  # ranks of a torchrun group behind this worker (rank 0 runs this loop)
        self.spec: ChunkSpec = engine.spec
        self.options = options
        self.chunks_done = 0
        self._ctrl, self._events, self._publisher = ctrl, events, publisher
        self._model = model or engine.name
        self._session: AvatarSession | None = None
        self._last_frame = -1  # of the current session
        self._frame_offset = 0  # added to the session's frame indices (StartSession.first_frame)
        # audio received but not yet pushed into the session, with its session-timeline t0 (AudioIn.t0)
        self._staged: deque[tuple[int, np.ndarray]] = deque()
        self._staged_samples = 0
        self._in_session = 0  # samples pushed into the session and not yet consumed by a chunk
        # [t0, n] of the audio inside the session, oldest first (t0 -1: silence the worker added itself), so a
        # heartbeat can say where the audio not yet in a published chunk starts (the client replays it after a crash)
        self._session_spans: deque[list[int]] = deque()
        self._next_t = -1  # the timeline sample just after the newest audio received (-1: none yet)
        self._lost: list[tuple[int, int]] = []  # spans dropped here, reported with the next heartbeat
        self._replay_headroom = 0  # replayed samples of this session: the worker's backlog may exceed
        # max_backlog_s by that much (the outage it covered is a lag that stays until the input pauses)
        self._played_until = 0.0  # monotonic time the published chunks last until when played back to back
        self._dropped_samples = 0
        self.interrupted_samples = 0  # audio dropped by Interrupts
        self.epoch = options.epoch
        self._last_drop_log = -DROP_LOG_EVERY_S
        self._last_step_ms = 0.0
        self._last_heartbeat = 0.0
        self._exit_code: int | None = None
        self.terminate = threading.Event()  # set by SIGTERM: behave as on Shutdown
        self._handlers: dict[type, Callable[[p.Message, list[bytes]], None]] = {
            p.StartSession: self._on_start,
            p.AudioIn: self._on_audio,
            p.PhonemesIn: self._on_phonemes,
            p.Interrupt: self._on_interrupt,
            p.StopSession: self._on_stop,
            p.Shutdown: self._on_shutdown,
        }

    # -- main loop -------------------------------------------------------------------------------

    def run(self) -> int:
        """Send Ready, then serve until Shutdown/SIGTERM. Returns the process exit code."""
        self._send(p.Ready(engine_id=f"{self.engine.name}-g{self.options.generation}-pid{os.getpid()}", world_size=self.world_size,
                           model=self._model, spec=p.SpecInfo.from_spec(self.spec)))
        self._heartbeat()
        while self._exit_code is None:
            wait = self._due_in_s() if self._can_step() else IDLE_POLL_S
            self._receive(min(wait, IDLE_POLL_S, self.options.heartbeat_interval_s))
            if self._exit_code is not None:
                break
            if self.terminate.is_set():
                self._shutdown("SIGTERM")
            elif self._can_step() and self._due_in_s() == 0.0:
                self._step()
            elif time.monotonic() - self._last_heartbeat >= self.options.heartbeat_interval_s:
                self._heartbeat()
        return self._exit_code

    def _receive(self, timeout_s: float) -> None:
        """Dispatch every control message waiting (waiting up to ``timeout_s`` for the first)."""
        if not self._ctrl.poll(int(timeout_s * 1000), zmq.POLLIN):
            return
        while self._exit_code is None:
            try:
                parts = self._ctrl.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            self._dispatch(parts)

    def _dispatch(self, parts: list[bytes]) -> None:
        try:
            msg = p.decode(parts[0])
        except p.ProtocolError as exc:
            self._reject(exc.reason, f"control message rejected: {exc}")
            return
        handler = self._handlers.get(type(msg))
        if handler is None:
            self._reject("unexpected", f"the engine worker does not accept {type(msg).__name__} on ctrl")
            return
        try:
            handler(msg, parts[1:])
        except _BadRequest as exc:
            self._reject("bad_request", str(exc))

    def _reject(self, kind: str, message: str) -> None:
        log.warning("%s", message)
        self._send(p.EngineError(kind=kind, message=message, fatal=False))

    # -- handlers --------------------------------------------------------------------------------

    def _on_start(self, msg: p.StartSession, extra: list[bytes]) -> None:
        if self._session is not None and self._session.session_id == msg.session_id:
            return  # a repeated StartSession (the supervisor re-sends it after a restart): already running
        avatar = _decode_avatar(msg, extra)
        if self._session is not None:
            log.info("session %s replaced by %s", self._session.session_id, msg.session_id)
            self._end_session(drain=False)
        self._session = self.engine.start_session(
            SessionRequest(session_id=msg.session_id, avatar=avatar, prompt=msg.prompt, seed=msg.seed))
        self._last_frame = -1
        self._frame_offset = msg.first_frame  # a replacing session continues the frame timeline
        log.info("session %s started", msg.session_id)
        self._send(p.SessionStarted(session_id=msg.session_id, first_frame=0))

    def _on_audio(self, msg: p.AudioIn, extra: list[bytes]) -> None:
        if self._session is None or msg.session_id != self._session.session_id:
            active = self._session.session_id if self._session else "none"
            raise _BadRequest(f"AudioIn for session {msg.session_id!r}, active session {active!r}; send StartSession first")
        if msg.sample_rate != self.spec.sample_rate:
            raise _BadRequest(f"AudioIn at {msg.sample_rate} Hz; this engine takes {self.spec.sample_rate} Hz (resample first)")
        if len(extra) != 1 or len(extra[0]) != msg.n_samples * 4:
            got = len(extra[0]) if len(extra) == 1 else f"{len(extra)} frames"
            raise _BadRequest(f"AudioIn seq {msg.seq}: header says {msg.n_samples} f32le samples, payload is {got} bytes")
        try:
            pcm = mono_pcm(np.frombuffer(extra[0], dtype="<f4"))
        except (ValueError, TypeError) as exc:
            self._reject("bad_audio", f"AudioIn seq {msg.seq}: {exc}; playing silence instead")
            pcm = np.zeros(msg.n_samples, dtype=np.float32)
        if msg.replay:
            self._replay_headroom += pcm.shape[0]
        self._stage(pcm, msg.t0)

    def _on_phonemes(self, msg: p.PhonemesIn, extra: list[bytes]) -> None:
        if self._session is None or msg.session_id != self._session.session_id:
            active = self._session.session_id if self._session else "none"
            raise _BadRequest(f"PhonemesIn for session {msg.session_id!r}, active session {active!r}; send StartSession first")
        push = getattr(self._session, "push_phonemes", None)
        if push is not None:
            push([(int(a), int(b), str(ph)) for a, b, ph in msg.spans])

    def _on_interrupt(self, msg: p.Interrupt, extra: list[bytes]) -> None:
        """Barge-in: adopt the epoch, drop every sample not yet in a chunk, reset the session, go idle."""
        if msg.epoch <= self.epoch:
            log.info("Interrupt to epoch %d ignored: already at epoch %d", msg.epoch, self.epoch)
            return
        self.epoch = msg.epoch
        dropped = self._staged_samples + self._in_session
        self._staged.clear()
        self._staged_samples = 0
        self._session_spans.clear()  # dropped on purpose: not lost, and nothing to replay
        self._replay_headroom = 0
        self._played_until = 0.0  # the sinks drop what they buffered
        session = self._session
        if session is None:
            return
        if msg.session_id and msg.session_id != session.session_id:
            # everything received before an Interrupt is stale, whichever session it named
            log.warning("Interrupt names session %r; cutting the active session %r", msg.session_id, session.session_id)
        session.reset()
        self._in_session = 0
        self.interrupted_samples += dropped
        log.info("interrupt: epoch %d, dropped %.2f s of audio", msg.epoch, dropped / self.spec.sample_rate)
        if self.options.idle_after_interrupt:
            self._prime_idle(session)

    def _prime_idle(self, session: AvatarSession) -> None:
        """Push silence, a frame at a time, until the session can make one chunk (at most two chunks'
        worth, for an engine that needs look-ahead), so an idle chunk follows the interrupt at once."""
        spf = self.spec.samples_per_frame
        silence = np.zeros(spf, dtype=np.float32)
        pushed = 0
        while session.chunks_ready() < 1 and pushed < 2 * self.spec.samples_per_chunk:
            session.push_audio(silence)
            pushed += spf
        self._in_session += pushed
        if pushed:
            self._session_spans.append([-1, pushed])

    def _on_stop(self, msg: p.StopSession, extra: list[bytes]) -> None:
        if self._session is None or msg.session_id != self._session.session_id:
            raise _BadRequest(f"StopSession for {msg.session_id!r}, but that session is not running")
        self._end_session(drain=True)

    def _on_shutdown(self, msg: p.Shutdown, extra: list[bytes]) -> None:
        self._shutdown(msg.reason or "Shutdown")

    def _shutdown(self, reason: str) -> None:
        """Stop intake (no more ctrl reads), drain the session within the timeout, ack, exit 0."""
        log.info("shutting down (%s)", reason)
        if self._session is not None:
            self._end_session(drain=True)
        self._send(p.ShutdownAck())
        self._exit_code = EXIT_OK

    # -- audio staging and chunks ----------------------------------------------------------------

    def _stage(self, pcm: np.ndarray, t0: int) -> None:
        """Queue audio (starting at timeline sample ``t0``) for the engine; beyond ``max_backlog_s`` of waiting
        audio (plus the replayed audio still held, owed from a crashed worker) drop the oldest."""
        self._staged.append((t0, pcm))
        self._staged_samples += pcm.shape[0]
        self._next_t = t0 + pcm.shape[0]
        limit = int(self.options.max_backlog_s * self.spec.sample_rate) + self._replay_headroom
        dropped = 0
        while self._staged and self._staged_samples + self._in_session > limit:
            old_t0, old = self._staged.popleft()
            self._staged_samples -= old.shape[0]
            dropped += old.shape[0]
            self._lost.append((old_t0, old.shape[0]))
        if dropped:
            self._dropped_samples += dropped
            if time.monotonic() - self._last_drop_log < DROP_LOG_EVERY_S:
                return
            self._last_drop_log = time.monotonic()
            log.warning("engine behind: dropped %d samples of the oldest audio (%d so far; engine.max_backlog_s=%g)",
                        dropped, self._dropped_samples, self.options.max_backlog_s)

    def _feed(self) -> None:
        """Move staged audio into the session while it holds less than two chunks plus a second."""
        target = 2 * self.spec.samples_per_chunk + self.spec.sample_rate
        while self._staged and self._session is not None and self._in_session < target:
            t0, pcm = self._staged.popleft()
            self._staged_samples -= pcm.shape[0]
            self._session.push_audio(pcm)
            self._in_session += pcm.shape[0]
            self._session_spans.append([t0, pcm.shape[0]])

    def _can_step(self) -> bool:
        if self._session is None:
            return False
        self._feed()
        return self._session.chunks_ready() > 0

    def _step(self) -> None:
        """Make, publish and count one chunk; heartbeat right after (the loop proves its progress)."""
        assert self._session is not None
        start = time.perf_counter()
        chunk = shift_frames(self._session.next_chunk(), self._frame_offset, self.spec.samples_per_frame)
        self._last_step_ms = (time.perf_counter() - start) * 1000
        self._publisher.publish(chunk, self.spec, epoch=self.epoch)
        self._played_until = max(self._played_until, time.monotonic()) + chunk.num_frames / float(self.spec.fps)
        used = chunk.num_frames * self.spec.samples_per_frame
        self._in_session = max(0, self._in_session - used)
        self._consume(used)
        self._last_frame = chunk.first_frame + chunk.num_frames - 1
        self.chunks_done += 1
        self._heartbeat()

    def _end_session(self, *, drain: bool) -> None:
        """Finish the session: with ``drain`` turn all its audio into chunks (the last one padded with
        silence) within ``drain_timeout_s``; then announce EndOfStream on the bus."""
        session = self._session
        assert session is not None
        deadline = time.monotonic() + self.options.drain_timeout_s
        while drain and (self._staged or self._in_session > 0):
            if time.monotonic() > deadline:
                log.warning("drain of session %s cut after %.1f s", session.session_id, self.options.drain_timeout_s)
                break
            self._feed()
            self._step()
        self._publisher.publish_end(session.session_id, self._last_frame)
        log.info("session %s ended at frame %d", session.session_id, self._last_frame)
        self._session = None
        self._staged.clear()
        self._session_spans.clear()
        self._staged_samples = self._in_session = self._replay_headroom = 0
        self._next_t = -1

    def _due_in_s(self) -> float:
        """Seconds until the next chunk may be published (``pace_lead_chunks``); 0.0: now."""
        if self.options.pace_lead_chunks <= 0:
            return 0.0
        lead = self._played_until - time.monotonic()
        return max(0.0, lead - self.options.pace_lead_chunks * self.spec.chunk_duration_s)

    def _consume(self, n: int) -> None:
        """A published chunk used the oldest ``n`` samples of the session: they are rendered."""
        spans = self._session_spans
        while n > 0 and spans:
            take = min(n, spans[0][1])
            spans[0][1] -= take
            if spans[0][0] >= 0:
                spans[0][0] += take
            n -= take
            if spans[0][1] == 0:
                spans.popleft()

    def rendered_t(self) -> int:
        """Where, on the session timeline, the audio this worker has not yet put into a published chunk starts
        (-1 before any audio): all before it is rendered or was dropped here."""
        for t0, _n in self._session_spans:
            if t0 >= 0:
                return t0
        if self._staged:
            return self._staged[0][0]
        return self._next_t

    # -- events ----------------------------------------------------------------------------------

    def _heartbeat(self) -> None:
        # Chunks the engine could make right now: audio still short of a chunk (or of the engine's
        # look-ahead) is not work, or a speaker's pause would look like a stall to the supervisor.
        ready = self._session.chunks_ready() if self._session is not None else 0
        depth = ready + self._staged_samples // self.spec.samples_per_chunk
        regenerated, re_anchored = correction_counts(getattr(self._session, "stats", None))
        session_id = self._session.session_id if self._session is not None else ""
        if self._send(p.Heartbeat(mono_ns=time.monotonic_ns(), chunks_done=self.chunks_done,
                                  last_step_ms=self._last_step_ms, queue_depth=depth, cuda_mem_mb=_cuda_mem_mb(),
                                  regenerated=regenerated, re_anchored=re_anchored, session_id=session_id,
                                  rendered_t=self.rendered_t() if self._session is not None else -1,
                                  lost=self._lost[:])):
            self._lost.clear()  # reported; kept for the next heartbeat when this one could not go out
        self._last_heartbeat = time.monotonic()

    def _send(self, msg: p.Message) -> bool:
        try:
            self._events.send(p.encode(msg), flags=zmq.NOBLOCK)
            return True
        except zmq.Again:
            log.debug("events socket full; %s not sent", type(msg).__name__)
            return False


def _cuda_mem_mb() -> int:
    """GPU memory this process holds (torch's allocator), for the daemon's metrics; 0 without CUDA or torch."""
    torch = sys.modules.get("torch")  # never imported just for this: the lite worker stays torch-free
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return 0
    return int(torch.cuda.memory_reserved() // 2**20)


def _decode_avatar(msg: p.StartSession, extra: list[bytes]) -> np.ndarray | None:
    """The avatar image that follows a StartSession with ``avatar_sha256`` set, as uint8 RGB."""
    if msg.avatar_sha256 is None:
        return None
    if len(extra) != 1:
        raise _BadRequest(f"StartSession {msg.session_id!r} names an avatar but carries {len(extra)} extra frames, expected 1")
    if hashlib.sha256(extra[0]).hexdigest() != msg.avatar_sha256:
        raise _BadRequest(f"StartSession {msg.session_id!r}: the avatar bytes do not match avatar_sha256")
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(extra[0])) as img:
            return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))
    except (UnidentifiedImageError, OSError) as exc:
        raise _BadRequest(f"StartSession {msg.session_id!r}: the avatar is not a readable image: {exc}") from exc

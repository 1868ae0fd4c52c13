"""``soulx-live serve``: the engine on this machine, offered to one laptop at a time over TCP.

The engine runs in the usual supervised worker (:class:`~soulx_live.live_engine.WorkerEngine`: any engine kind
and world size, heartbeats, restarts with audio replay); this loop subscribes to the worker's frame bus, encodes
each chunk (H.264 + 16-bit PCM) and sends it down a ROUTER socket secured by
:class:`~soulx_live.remote.security.ServerSecurity`. One thread owns every socket here.

A client opens a session with ``Hello`` (a newer Hello, from the same laptop after a reconnect or from another,
replaces the session); its audio goes to the worker, chunks of the session's current epoch come back. A client
that has not been heard from for ``remote.link_timeout_s`` loses its session (the worker idles until the next).
Every bad message is dropped and counted by name (``wire_<name>`` in :meth:`RemoteServer.counters`).
"""
from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

import zmq
from zmq.utils.monitor import recv_monitor_message

from engine.interface import ChunkSpec, FrameChunk
from soulx_live.bus import EndOfStream, FrameSubscriber
from soulx_live.config import SoulxConfig
from soulx_live.errors import DaemonError
from soulx_live.log_safe import RateLimitedLog
from soulx_live.remote import wire as w
from soulx_live.remote.codec import VideoEncoder, float_to_pcm16, pcm16_to_float
from soulx_live.remote.encoders import EncoderUnavailable, choose_encoder, usable_encoders
from soulx_live.remote.security import ServerSecurity

__all__ = ["RemoteServer"]

log = logging.getLogger(__name__)

POLL_MS = 5
SEND_HWM = 16  # messages queued per client before a chunk is dropped (and the next one is a keyframe)
DRAIN_QUIET_S = 1.0  # after Bye: no chunk for this long and the session is over
HANDSHAKE_EVENTS = {
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "handshake_failed",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "handshake_failed_protocol",
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "handshake_failed_auth",
}


@dataclass
class _Session:
    identity: bytes
    session_id: str
    client_epoch: int
    engine_epoch: int  # chunks of older engine epochs are stale
    encoder: VideoEncoder
    last_heard: float = field(default_factory=time.monotonic)
    seq: int = 0
    force_key: bool = True  # session start: the first chunk is a keyframe
    dropped_base: int = 0  # the worker's dropped-sample count when the session began
    bye_at: float | None = None
    last_chunk_at: float = field(default_factory=time.monotonic)
    last_frame: int = -1


class RemoteServer:
    """The serve loop (:meth:`serve`); ``counters`` for ``StatsReply`` and the log."""

    def __init__(self, config: SoulxConfig) -> None:
        self.config = config
        self.cfg = config.remote
        self.server_id = uuid.uuid4().hex[:12]
        self.counters: Counter[str] = Counter()
        self.security = ServerSecurity(self.cfg, self.counters)
        self.endpoint = ""
        self.spec: ChunkSpec | None = None
        self._session: _Session | None = None
        self._rlog = RateLimitedLog(log)
        self.video_encoder = "libx264"

    def serve(self, stopping: Callable[[], bool], on_listening: Callable[[str], None] | None = None) -> None:
        """Start the engine worker, listen, serve until ``stopping()``; closes everything on the way out."""
        from soulx_live.live_engine import WorkerEngine

        ctx = zmq.Context.instance()
        engine = WorkerEngine(self.config, subscribers=1, on_state=self._on_engine_state)
        frames = FrameSubscriber(engine.frames_address, hwm_chunks=self.config.bus.hwm_chunks)
        sock = ctx.socket(zmq.ROUTER)
        monitor = None
        try:
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
            sock.setsockopt(zmq.SNDHWM, SEND_HWM)
            sock.setsockopt(zmq.RCVHWM, 256)
            sock.setsockopt(zmq.MAXMSGSIZE, w.MAX_VIDEO_BYTES + (1 << 20))  # a bigger frame closes the connection
            mode = self.security.apply(ctx, sock)  # first: a refused configuration fails before the engine loads
            self.video_encoder = _pick_encoder(self.cfg.video_encoder)
            log.info("starting the %s engine", self.config.engine.kind)
            self.spec = engine.start(cancelled=stopping)
            self._warm_up(engine, frames, stopping)
            monitor = sock.get_monitor_socket(sum(HANDSHAKE_EVENTS) | zmq.EVENT_HANDSHAKE_SUCCEEDED)
            sock.bind(f"tcp://{_bind_host(self.cfg.host)}:{self.cfg.port}")
            self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
            spec = self.spec
            log.info("serving the %s engine (%dx%d @ %s fps) on %s, %s", self.config.engine.kind, spec.width,
                     spec.height, spec.fps, self.endpoint, mode)
            if on_listening is not None:
                on_listening(self.endpoint)
            self._loop(sock, monitor, frames, engine, stopping)
        finally:
            if monitor is not None:
                sock.disable_monitor()
                monitor.close(linger=0)
            sock.close(linger=0)
            frames.close()
            self.security.close()
            engine.close(self.config.supervisor.shutdown_grace_s)
            log.info("server stopped: %s", dict(self.counters))

    def _warm_up(self, engine: object, frames: FrameSubscriber, stopping: Callable[[], bool]) -> None:
        """One throw-away session before listening: an engine's first session prepares the avatar (the lite
        engine locates the face, seconds on a busy CPU), and a laptop's audio must not pile up meanwhile."""
        import numpy as np

        spec = self.spec
        assert spec is not None
        t0 = time.monotonic()
        engine.start_session("warmup", seed=self.config.engine.seed, prompt=self.config.engine.prompt,  # type: ignore[attr-defined]
                             avatar=self.config.engine.avatar)
        engine.push_audio(np.zeros(2 * spec.samples_per_chunk, dtype=np.float32))  # type: ignore[attr-defined]
        deadline = t0 + self.config.supervisor.init_timeout_s
        while not stopping() and time.monotonic() < deadline:
            item = frames.recv(timeout_ms=100)
            if isinstance(item, FrameChunk) and item.session_id == "warmup":
                break
        engine.stop_session()  # type: ignore[attr-defined]
        while frames.recv(timeout_ms=200) is not None:  # the rest of the warm-up session
            pass
        log.info("engine warmed up in %.1f s (first session prepared)", time.monotonic() - t0)

    # -- the loop --------------------------------------------------------------------------------

    def _loop(self, sock: zmq.Socket, monitor: zmq.Socket, frames: FrameSubscriber, engine: object,
              stopping: Callable[[], bool]) -> None:
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        while not stopping():
            ready = dict(poller.poll(POLL_MS))
            if monitor in ready:
                self._on_monitor(recv_monitor_message(monitor))
            if sock in ready:
                for _ in range(64):  # bounded: chunks must still go out under a flood
                    try:
                        parts = sock.recv_multipart(flags=zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self._on_message(sock, engine, parts)
            while (item := frames.recv(timeout_ms=0)) is not None:
                if isinstance(item, FrameChunk):
                    self._on_chunk(sock, item, engine.dropped_samples)  # type: ignore[attr-defined]
                elif isinstance(item, EndOfStream):
                    self._maybe_end(sock, final=True)
            self._check_session(sock, engine)

    def _on_monitor(self, event: dict) -> None:
        name = HANDSHAKE_EVENTS.get(event["event"])
        if name is None:
            return
        self.counters[name] += 1
        self._rlog.warning(name, "refused a connection: %s (a client without the right keys: no client key, an "
                           "unknown one, or the wrong server key) [%d so far]", name, self.counters[name])

    def _on_message(self, sock: zmq.Socket, engine: object, parts: list[bytes]) -> None:
        identity, frames = parts[0], parts[1:]
        try:
            msg, payload = w.parse(frames, "up")
        except w.WireError as exc:
            self.counters[f"wire_{exc.name}"] += 1
            self._rlog.warning(f"wire_{exc.name}", "dropped a bad message from a client (%s): %s [%d so far]",
                               exc.name, str(exc)[:200], self.counters[f"wire_{exc.name}"])
            return
        session = self._session
        if isinstance(msg, w.Hello):
            self._hello(sock, engine, identity, msg)
        elif isinstance(msg, w.StatsRequest):
            self._send(sock, identity, w.StatsReply(counters=dict(self.counters)))
        elif isinstance(msg, w.Ping):
            self._send(sock, identity, w.Pong(echo_ns=msg.sent_ns))
            if session is not None and session.identity == identity:
                session.last_heard = time.monotonic()
        elif session is None or session.identity != identity:
            self.counters["stale_client_messages"] += 1  # no session for it (timed out or replaced): dropped
        else:
            session.last_heard = time.monotonic()
            self._session_message(engine, session, msg, payload)

    def _session_message(self, engine: object, session: _Session, msg: w.WireMessage, payload: list[bytes]) -> None:
        if isinstance(msg, w.AudioUp):
            if session.bye_at is None:
                engine.push_audio(pcm16_to_float(payload[0]))  # type: ignore[attr-defined]
        elif isinstance(msg, w.Interrupt):
            if msg.epoch > session.client_epoch:
                session.client_epoch = msg.epoch
                session.engine_epoch = engine.interrupt()  # type: ignore[attr-defined]
                session.force_key = True  # barge-in: the new epoch starts on a keyframe
                self.counters["interrupts"] += 1
        elif isinstance(msg, w.KeyframeRequest):
            session.force_key = True
            self.counters["keyframe_requests"] += 1
        elif isinstance(msg, w.Bye) and session.bye_at is None:
            session.bye_at = time.monotonic()
            engine.stop_session()  # type: ignore[attr-defined]
            log.info("session %s: the client's input ended; draining", session.session_id)

    def _hello(self, sock: zmq.Socket, engine: object, identity: bytes, msg: w.Hello) -> None:
        spec = self.spec
        assert spec is not None
        old = self._session
        if old is not None and old.identity != identity:
            self._send(sock, old.identity, w.Refused(reason="superseded by a newer client"))
        session_id = uuid.uuid4().hex[:12]
        engine.start_session(session_id, seed=self.config.engine.seed, prompt=self.config.engine.prompt,  # type: ignore[attr-defined]
                             avatar=self.config.engine.avatar)
        encoder = VideoEncoder(spec.width, spec.height, Fraction(spec.fps), bitrate=self.cfg.video_bitrate,
                               preset=self.cfg.video_preset, encoder=self.video_encoder)
        self._session = _Session(identity, session_id, msg.epoch, engine.epoch, encoder,  # type: ignore[attr-defined]
                                 dropped_base=engine.dropped_samples)  # type: ignore[attr-defined]
        self.counters["sessions"] += 1
        fps = Fraction(spec.fps)
        self._send(sock, identity, w.Welcome(
            session_id=session_id, server_id=self.server_id, fps_num=fps.numerator, fps_den=fps.denominator,
            sample_rate=spec.sample_rate, frames_per_chunk=spec.frames_per_chunk, height=spec.height,
            width=spec.width, engine=self.config.engine.kind))
        log.info("session %s for client %s (epoch %d)%s", session_id, _safe_name(msg.client), msg.epoch,
                 " (replaces the previous session)" if old is not None else "")

    def _on_chunk(self, sock: zmq.Socket, chunk: FrameChunk, dropped: int = 0) -> None:
        session, spec = self._session, self.spec
        if session is None or spec is None or chunk.session_id != session.session_id:
            return
        if chunk.epoch < session.engine_epoch:
            self.counters["stale_chunks"] += 1
            return
        packets, key = session.encoder.encode(chunk.frames, keyframe=session.force_key)
        fps = Fraction(spec.fps)
        header = w.ChunkDown(
            session_id=session.session_id, seq=session.seq, first_frame=chunk.first_frame, n=chunk.num_frames,
            epoch=session.client_epoch, keyframe=key, packet_sizes=[len(p) for p in packets],
            audio_t0=chunk.audio_t0, audio_samples=int(chunk.audio.shape[0]),
            media_ns=int(chunk.first_frame * 1_000_000_000 / fps), sent_ns=time.monotonic_ns(),
            dropped_samples=max(0, dropped - session.dropped_base))
        video, audio = b"".join(packets), float_to_pcm16(chunk.audio)
        session.seq += 1
        session.last_chunk_at = time.monotonic()
        session.last_frame = chunk.first_frame + chunk.num_frames - 1
        try:
            sock.send_multipart([session.identity, w.encode(header), video, audio], flags=zmq.NOBLOCK)
        except zmq.Again:  # the link is slower than the engine: this chunk is lost, the next one starts afresh
            self.counters["chunks_not_sent"] += 1
            session.force_key = True
            return
        except zmq.ZMQError:  # the client is gone (EHOSTUNREACH): its session times out
            self.counters["chunks_not_sent"] += 1
            return
        session.force_key = session.force_key and not key
        self.counters["chunks_sent"] += 1
        self.counters["keyframes_sent"] += int(key)
        self.counters["video_bytes"] += len(video)
        self.counters["audio_bytes"] += len(audio)

    def _check_session(self, sock: zmq.Socket, engine: object) -> None:
        session = self._session
        if session is None:
            return
        now = time.monotonic()
        if session.bye_at is not None:
            self._maybe_end(sock, final=False)
        elif now - session.last_heard > self.cfg.link_timeout_s:
            log.warning("session %s: nothing heard from the client for %.1f s; ending it (it resumes when the "
                        "client reconnects)", session.session_id, now - session.last_heard)
            self.counters["sessions_timed_out"] += 1
            engine.stop_session()  # type: ignore[attr-defined]
            self._session = None

    def _maybe_end(self, sock: zmq.Socket, *, final: bool) -> None:
        session = self._session
        if session is None or session.bye_at is None:
            return
        if final or time.monotonic() - max(session.bye_at, session.last_chunk_at) > DRAIN_QUIET_S:
            self._send(sock, session.identity, w.EndDown(session_id=session.session_id, last_frame=session.last_frame))
            log.info("session %s ended: %d chunks sent", session.session_id, session.seq)
            self._session = None

    def _send(self, sock: zmq.Socket, identity: bytes, msg: w.WireMessage) -> None:
        try:
            sock.send_multipart([identity, w.encode(msg)], flags=zmq.NOBLOCK)
        except zmq.ZMQError:
            self.counters["control_not_sent"] += 1

    def _on_engine_state(self, state: str, detail: str) -> None:
        if state in ("restarting", "failed"):
            log.warning("engine worker %s: %s", state, detail)


def _pick_encoder(wanted: str) -> str:
    """The H.264 encoder for every session (``remote.video_encoder``), named in the log; DaemonError if unusable."""
    try:
        name = choose_encoder(wanted, usable_encoders())
    except EncoderUnavailable as exc:
        raise DaemonError(str(exc)) from None
    log.info("video: H.264 with %s (remote.video_encoder=%s)", name, wanted)
    return name


def _bind_host(host: str) -> str:
    return "*" if host in ("", "0.0.0.0") else (f"[{host}]" if ":" in host else host)


def _safe_name(text: str) -> str:
    from soulx_live.log_safe import quoted

    return quoted(text, 40)

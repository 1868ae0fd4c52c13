"""The engine on another machine (``run --remote HOST:PORT``): audio goes up the link, frames come down.

:class:`RemoteDriver` is the third :class:`~soulx_live.live.driver.EngineDriver`. The engine thread owns the
link (:class:`~soulx_live.remote.link.RemoteLink`): it sends the intake's audio as 16-bit PCM, barge-in epochs,
keyframe requests and pings, and hands chunks to the decode thread
(:class:`~soulx_live.remote.receiver.Receiver`), which publishes them on the local frame bus. The sinks sit
behind HoldingSinks (as with a worker process), so while the link is down or the server restarts they hold the
last frame, then play the idle loop; the driver reconnects on its own and a new remote session continues the
local frame timeline. Audio captured while the link is down is not sent (live input: it would only add delay).
"""
from __future__ import annotations

import logging
import math
import time

from engine.interface import ChunkSpec
from soulx_live.errors import DaemonError
from soulx_live.live.driver import DriverBase, EngineView, Phonemes, RunParts
from soulx_live.live.intake import AudioIntake, clean_pcm
from soulx_live.live.lifecycle import Phase
from soulx_live.remote import wire as w
from soulx_live.remote.codec import float_to_pcm16
from soulx_live.remote.link import Received, RemoteLink
from soulx_live.remote.receiver import Inbound, Receiver

__all__ = ["RemoteDriver"]

log = logging.getLogger(__name__)

POLL_MS = 10
HELLO_EVERY_S = 0.5
CONNECT_TIMEOUT_S = 20.0  # the first connection: no answer by then is an error (a reconnect tries forever)
DRAIN_SETTLE_S = 1.0


class RemoteDriver(DriverBase):
    """:class:`~soulx_live.live.driver.EngineDriver` for ``remote.address``."""

    isolation = "remote"

    def __init__(self, parts: RunParts) -> None:
        super().__init__(parts)
        self.link: RemoteLink | None = None
        self.receiver: Receiver | None = None
        self.reconnects = 0
        self.link_up = False
        self.reconnect_s: list[float] = []  # how long each outage lasted, link down -> Welcome
        self._session_id: str | None = None  # the remote session
        self._server_id: str | None = None
        self._frame_offset = 0
        self._sent_epoch = 0
        self._audio_seq = 0
        self._hello_due = 0.0
        self._down_since: float | None = None
        self._spec: ChunkSpec | None = None
        self._dropped_base = 0  # fed samples the current remote session's frame 0 comes after

    # -- EngineDriver ----------------------------------------------------------------------------

    def next_epoch(self) -> int:
        return self.parts.session.epoch + 1  # the engine thread sends the Interrupt when it sees it

    def push_phonemes(self, spans: Phonemes) -> None:
        log.debug("phoneme timings are not sent to a remote engine (%d spans ignored)", len(spans))

    def view(self) -> EngineView:
        rx, link = self.receiver, self.link
        chunks = rx.stats.chunks if rx is not None else 0
        frames = rx.stats.frames if rx is not None else 0
        note = None
        if link is not None:
            note = (f"remote {link.cfg.address} {'up' if self.link_up else 'down'} rtt={link.rtt_s * 1000:.1f}ms"
                    + (f" jitter={rx.jitter.stats.jitter_s * 1000:.1f}ms late_dropped={rx.jitter.stats.late_frames}"
                       f" skipped={rx.stats.skipped_frames}" if rx is not None else ""))
        return EngineView(chunks=chunks, frames=frames, restarts=self.reconnects,
                          state=None if self.link_up or self._spec is None else "restarting", note=note)

    @property
    def pid(self) -> int | None:
        return None

    # -- the engine thread -----------------------------------------------------------------------

    def run(self) -> None:
        from soulx_live.runtime_dir import endpoint

        parts, config = self.parts, self.parts.config
        link = self.link = RemoteLink(config.remote)
        parts.fanout.sinks = parts.sink_factory(config)
        address = endpoint("frames", config.bus)
        parts.fanout.start(address, hold=True)
        receiver: Receiver | None = None
        try:
            link.open()
            log.info("connecting to the remote engine at %s (%s)", link.url, link.security.describe())
            welcome = self._first_welcome(link)
            spec = self._spec = _spec_of(welcome)
            parts.session.set_spec(spec)
            intake = self.open_intake(spec)
            receiver = self.receiver = Receiver(address, spec, session_id=welcome.session_id,
                                                hwm_chunks=config.bus.hwm_chunks, jitter_max_s=config.remote.jitter_max_s,
                                                on_dropped=self._dropped)
            parts.threads.start("decode", receiver.run)
            self._welcomed(welcome)
            self.go_live(intake, spec, welcome.session_id)
            log.info("session %s: remote %s engine %dx%d @ %s fps at %s, real-time from %s", welcome.session_id,
                     welcome.engine, spec.width, spec.height, spec.fps, config.remote.address, intake.source.name)
            self._pump(link, intake, receiver)
            parts.session.mark_ended()
            self._drain(link, receiver)
        finally:
            parts.session.mark_ended()
            if receiver is not None:
                receiver.stop()
            parts.session.drained_mono = time.monotonic()
            parts.fanout.await_done()
            parts.push.stop()
            link.close()

    def _first_welcome(self, link: RemoteLink) -> w.Welcome:
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while not self.parts.lifecycle.stopping:
            self._say_hello(link)
            for msg, _, _ in link.receive(POLL_MS * 5):
                if isinstance(msg, w.Welcome):
                    return msg
                if isinstance(msg, w.Refused):
                    raise DaemonError(f"the remote engine refused the session: {msg.reason}")
            if time.monotonic() > deadline:
                raise DaemonError(f"no answer from the remote engine at {link.url} within {CONNECT_TIMEOUT_S:g} s: is "
                                  "`soulx-live serve` running there and reachable, and do the keys match (--server-key is "
                                  "the server's public key; the server must allow this laptop's key, its log names "
                                  "refused keys)?")
        raise DaemonError("stopped while connecting to the remote engine")

    def _say_hello(self, link: RemoteLink) -> None:
        now = time.monotonic()
        if now >= self._hello_due:
            self._hello_due = now + HELLO_EVERY_S
            link.send(w.Hello(client="soulx-live", epoch=self.parts.session.epoch))

    def _welcomed(self, welcome: w.Welcome) -> None:
        """A (new) remote session: its frame 0 continues the local timeline where the fed audio stands."""
        shared, spec = self.parts.session, self._spec
        assert spec is not None
        if _spec_of(welcome) != spec:
            raise DaemonError(f"the remote engine came back with another chunk spec ({_spec_of(welcome)}, was {spec}); "
                              "restart `run --remote` to use it")
        if self._server_id is not None and welcome.server_id != self._server_id:
            log.warning("the remote server restarted (new server id); a new session starts")
        self._session_id, self._server_id = welcome.session_id, welcome.server_id
        spf = spec.samples_per_frame
        self._frame_offset = max(0, math.ceil((shared.fed_samples - shared.timeline_skip) / spf))
        # the remote engine never got the audio between what the old session rendered and this point
        self._dropped_base = shared.fed_samples - shared.timeline_skip - self._frame_offset * spf
        shared.engine_dropped = self._dropped_base
        self._sent_epoch = shared.epoch
        self.link_up = True
        if self._down_since is not None:
            outage = time.monotonic() - self._down_since
            self.reconnect_s.append(outage)
            log.info("remote link back after %.2f s (session %s)", outage, welcome.session_id)
            self._down_since = None
            if self.parts.lifecycle.phase is Phase.RESTARTING:
                self.parts.lifecycle.advance(Phase.RUNNING)
        self.parts.fanout.engine_note = ("running", "")

    def _pump(self, link: RemoteLink, intake: AudioIntake, receiver: Receiver) -> None:
        """Audio up, chunks down, until intake ends (or the run is closing); reconnect when the link drops."""
        parts = self.parts
        while not parts.lifecycle.closing:
            for item in link.receive(POLL_MS):
                self._on_message(link, receiver, item)
            intake_over = intake.over
            with intake.lock:
                pcm = intake.take()
                if pcm.shape[0]:
                    clean = clean_pcm(pcm, parts.session.counters)
                    if self.link_up:
                        self._send_audio(link, clean)
                        parts.session.record_fed(clean, live=intake.source.realtime)
                    else:
                        parts.session.counters.audio_dropped += int(clean.shape[0])
            self._keep_link(link, receiver)
            self.after_feed(intake)
            if intake_over:
                return

    def _send_audio(self, link: RemoteLink, pcm: object) -> None:
        data = float_to_pcm16(pcm)  # type: ignore[arg-type]
        step = w.MAX_AUDIO_SAMPLES * 2
        for start in range(0, len(data), step):
            part = data[start:start + step]
            if not link.send(w.AudioUp(seq=self._audio_seq, n_samples=len(part) // 2), part):
                self.parts.session.counters.audio_dropped += len(part) // 2
            self._audio_seq += 1

    def _keep_link(self, link: RemoteLink, receiver: Receiver) -> None:
        """Interrupts and keyframe requests up, pings; a silent link is declared down and opened afresh."""
        shared = self.parts.session
        if not self.link_up:
            self._say_hello(link)
            return
        if shared.epoch > self._sent_epoch and link.send(w.Interrupt(epoch=shared.epoch)):
            self._sent_epoch = shared.epoch
        if receiver.want_keyframe.is_set():
            receiver.want_keyframe.clear()
            link.send(w.KeyframeRequest(reason="loss"))
        link.ping()
        if link.silent_s > link.cfg.link_timeout_s:
            self._link_down(link, f"nothing heard for {link.silent_s:.1f} s")

    def _link_down(self, link: RemoteLink, why: str) -> None:
        log.warning("remote link down (%s); the sinks hold the picture while it reconnects", why)
        self.link_up = False
        self._down_since = time.monotonic()
        self._session_id = None
        self.reconnects += 1
        self.parts.metrics.observe("add_restart", "link_down")
        self.parts.fanout.engine_note = ("restarting", f"remote link down: {why}")
        self.parts.lifecycle.advance(Phase.RESTARTING)
        link.open()
        self._hello_due = 0.0

    def _on_message(self, link: RemoteLink, receiver: Receiver, item: Received) -> None:
        msg, payload, arrival = item
        if isinstance(msg, w.ChunkDown):
            if msg.session_id == self._session_id:
                self.parts.session.engine_dropped = self._dropped_base + msg.dropped_samples
                receiver.put(Inbound(msg, payload[0], payload[1], arrival, self._frame_offset))
        elif isinstance(msg, w.Welcome):
            if not self.link_up:
                self._welcomed(msg)
        elif isinstance(msg, w.Refused):
            if self.link_up:
                self._link_down(link, f"the server refused the session: {msg.reason}")
        elif isinstance(msg, w.EndDown) and msg.session_id == self._session_id:
            self._session_id = None

    def _drain(self, link: RemoteLink, receiver: Receiver) -> None:
        """Input over: Bye, then take chunks until EndDown or a quiet spell (bounded by the drain deadline)."""
        if not self.link_up:
            return
        link.send(w.Bye())
        spec = self._spec
        window = max(DRAIN_SETTLE_S, 3 * spec.chunk_duration_s) if spec is not None else DRAIN_SETTLE_S
        quiet_since = time.monotonic()
        while not self.parts.lifecycle.closing and self._session_id is not None:
            got = link.receive(POLL_MS)
            for item in got:
                self._on_message(link, receiver, item)
            if got:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > window:
                break

    def _dropped(self, frames: int) -> None:
        self.parts.metrics.observe("add_dropped_frames", "remote", frames)


def _spec_of(welcome: w.Welcome) -> ChunkSpec:
    from fractions import Fraction

    return ChunkSpec(Fraction(welcome.fps_num, welcome.fps_den), welcome.sample_rate, welcome.frames_per_chunk,
                     welcome.height, welcome.width)

"""The daemon's never-blocking client of the engine worker.

:class:`EngineClient` is the thread-safe front the daemon uses to talk to the engine: its calls only
queue messages and the supervisor thread sends them; it keeps the audio a worker has not yet rendered
(``replay_max_s``; beyond it the oldest is dropped and reported), and after every Ready it re-sends the
active StartSession and then that audio first, so the session resumes on a restarted worker where the
dead one stopped. ``EngineClient.interrupt()`` is barge-in: queued audio is
dropped and an Interrupt with the next epoch goes out ahead of any later audio; a restarted worker is
started at the client's current epoch. State changes go to ``on_state(state, detail)``, called from
the supervisor thread.
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import zmq

from soulx_live import protocol as p
from soulx_live.log_safe import RateLimitedLog

__all__ = ["AudioLostCallback", "EngineClient"]

log = logging.getLogger(__name__)

MAX_PENDING_PHONEMES = 64  # PhonemesIn messages kept while the worker is away; the oldest go first


@dataclass
class _Outgoing:
    parts: list[bytes]
    samples: int = 0  # > 0: an AudioIn (may be dropped when over budget)
    kind: str = "ctrl"  # "audio" and "phonemes" are dropped by an interrupt, and with "start" by a new session
    t0: int = 0  # audio: its first sample on the session timeline
    seq: int = 0  # audio: its AudioIn seq (kept when it is sent again)
    pcm: np.ndarray | None = None  # audio: the samples, kept until the worker has rendered them (for a replay)
    replay: bool = False  # audio: sent as owed (AudioIn.replay), beyond the worker's backlog limit

    @property
    def end(self) -> int:
        return self.t0 + self.samples


AudioLostCallback = Callable[[int, int], None]


class EngineClient:
    """Thread-safe, never-blocking sender of StartSession / AudioIn / PhonemesIn / Interrupt /
    StopSession to the worker.

    Audio sent to a worker stays here until the worker's heartbeats say it is in a published chunk
    (``rendered_t``); when the worker dies, that audio goes to its successor first (``AudioIn.replay``), so a
    crash loses no speech. At most ``max_pending_s`` of audio is kept (sent and not rendered, plus not yet
    sent); beyond it the oldest is dropped. Audio that no worker will ever render (dropped here, or by the
    worker because its engine fell behind) is counted in ``dropped_samples`` and reported to
    ``on_audio_lost(start_sample, n_samples)`` (session timeline; any thread, never under the lock).
    Control messages are never dropped; at most ``MAX_PENDING_PHONEMES`` PhonemesIn wait (oldest dropped).
    ``epoch`` starts at 0 and ``interrupt()`` bumps it.
    """

    def __init__(self, sample_rate: int, *, max_pending_s: float = 1.0,
                 on_audio_lost: AudioLostCallback | None = None) -> None:
        self.sample_rate = sample_rate
        self.max_pending_samples = int(max_pending_s * sample_rate)
        self.on_audio_lost = on_audio_lost
        self.dropped_samples = 0  # lost: never rendered by any worker
        self.replayed_samples = 0  # sent again to a replacement worker
        self._lost_log = RateLimitedLog(log)
        self.sent_messages = 0
        self._lock = threading.Lock()
        self._queue: deque[_Outgoing] = deque()
        self._pending_samples = 0  # audio in _queue
        self._sent: deque[_Outgoing] = deque()  # audio the current worker got and has not rendered yet
        self._sent_samples = 0
        self._forgotten: deque[tuple[int, int]] = deque()  # [start, end) sent, not rendered, no longer kept
        self._rendered_t = 0  # the current worker's progress on the session timeline (its heartbeats)
        self._floor = 0  # audio before this was dropped on purpose (barge-in): never replayed, never "lost"
        self._lost: list[tuple[int, int]] = []  # spans to report once the lock is released
        self._owed = False  # a worker died: the audio waiting at the next Ready is owed to the session
        self._start: _Outgoing | None = None  # the active session's StartSession, re-sent after Ready
        self._session_id: str | None = None
        self._timeline_id: str | None = None  # the session whose audio _sent holds (also while it drains)
        self._seq = 0
        self._t0 = 0
        self._epoch = 0
        self.interrupted_samples = 0  # queued audio dropped by interrupts

    @property
    def session_id(self) -> str | None:
        return self._session_id

    @property
    def epoch(self) -> int:
        """The current barge-in epoch: chunks with a lower ``epoch`` are stale (drop them)."""
        return self._epoch

    @property
    def unrendered_samples(self) -> int:
        """Audio kept for the worker: sent and not yet rendered, plus not yet sent."""
        with self._lock:
            return self._sent_samples + self._pending_samples

    def start_session(self, session_id: str, *, seed: int = 0, prompt: str = "", avatar: bytes | None = None,
                      first_frame: int = 0) -> None:
        """Start (or replace) the session; ``avatar`` is an image file's bytes (None: built-in avatar);
        ``first_frame``: where a replacing session's frames continue the frame timeline."""
        import hashlib

        sha = hashlib.sha256(avatar).hexdigest() if avatar is not None else None
        msg = p.StartSession(session_id=session_id, seed=seed, prompt=prompt, avatar_sha256=sha,
                             first_frame=first_frame)
        start = _Outgoing([p.encode(msg)] + ([avatar] if avatar is not None else []), kind="start")
        with self._lock:
            # what is still queued for a replaced session would be refused (or, a stale StartSession
            # re-sent after a restart, would replace this one): only control messages stay
            self._queue = deque(item for item in self._queue if item.kind not in ("start", "audio", "phonemes"))
            self._pending_samples = 0
            self._clear_sent()
            self._start, self._session_id, self._timeline_id, self._seq, self._t0 = start, session_id, session_id, 0, 0
            self._rendered_t = self._floor = 0
            self._queue.append(start)

    def push_audio(self, pcm: np.ndarray) -> None:
        """Queue float32 mono samples for the active session (no-op without one); never blocks."""
        data = np.ascontiguousarray(np.asarray(pcm, dtype="<f4").reshape(-1))
        with self._lock:
            if self._session_id is None:
                return
            n = int(data.shape[0])
            msg = p.AudioIn(session_id=self._session_id, seq=self._seq, t0=self._t0, n_samples=n,
                            sample_rate=self.sample_rate)
            self._queue.append(_Outgoing([p.encode(msg), data.tobytes()], samples=n, kind="audio", t0=self._t0,
                                         seq=self._seq, pcm=data))
            self._seq += 1
            self._t0 += n
            self._pending_samples += n
            self._drop_over_budget()
        self._report_lost()

    def push_phonemes(self, spans: Sequence[tuple[int, int, str]]) -> None:
        """Queue phoneme timings (start/end sample on the session timeline, phoneme) for the active
        session (no-op without one); the worker hands them to sessions that take them."""
        clean = [(int(a), int(b), str(ph)) for a, b, ph in spans]
        with self._lock:
            if self._session_id is None or not clean:
                return
            msg = p.PhonemesIn(session_id=self._session_id, spans=clean)
            self._queue.append(_Outgoing([p.encode(msg)], kind="phonemes"))
            waiting = [item for item in self._queue if item.kind == "phonemes"]
            for item in waiting[:max(0, len(waiting) - MAX_PENDING_PHONEMES)]:
                self._queue.remove(item)

    def interrupt(self) -> int:
        """Barge-in: drop queued audio and phonemes, queue an Interrupt with the next epoch ahead of
        any audio pushed later; returns the new epoch. The sinks should drop chunks of older epochs."""
        with self._lock:
            self._epoch += 1
            dropped = sum(item.samples for item in self._queue if item.kind == "audio")
            self._queue = deque(item for item in self._queue if item.kind not in ("audio", "phonemes"))
            self._pending_samples = 0
            self._clear_sent()  # the worker drops it too: nothing before this point is owed any more
            self._floor = self._t0
            self.interrupted_samples += dropped
            msg = p.Interrupt(session_id=self._session_id or "", epoch=self._epoch)
            self._queue.append(_Outgoing([p.encode(msg)]))
            return self._epoch

    def stop_session(self) -> None:
        """End the active session: the worker turns its remaining audio into chunks, then EndOfStream."""
        with self._lock:
            if self._session_id is None:
                return
            self._queue.append(_Outgoing([p.encode(p.StopSession(session_id=self._session_id))]))
            self._start = self._session_id = None

    # -- used by the supervisor thread -----------------------------------------------------------

    def on_progress(self, beat: p.Heartbeat) -> None:
        """A heartbeat of the current worker: forget the audio it has rendered; report what it dropped."""
        with self._lock:
            if not beat.session_id or beat.session_id != self._timeline_id:
                return  # idle, or a session this client no longer follows
            for start, n in beat.lost:
                self._lose(start, start + n)
            if beat.rendered_t >= 0:
                self._rendered_t = max(self._rendered_t, beat.rendered_t)
                self._trim_rendered()
        self._report_lost()

    def on_worker_gone(self) -> None:
        """The worker died (or was killed): what it had not rendered goes first to its successor. The audio it
        took with it that is no longer kept is lost; without a session to resume, all of it is."""
        with self._lock:
            self._trim_rendered()
            for start, end in self._forgotten:
                self._lose(start, end)
            self._forgotten.clear()
            replay = list(self._sent)
            self._clear_sent()
            self._owed = True  # what waits now, and what comes until the next Ready, is the outage's
            if self._session_id is None:
                for item in replay:
                    self._lose(max(item.t0, self._rendered_t), item.end)
                replay = []
            for item in reversed(replay):
                skip = max(0, min(item.samples, self._rendered_t - item.t0))
                self.replayed_samples += item.samples - skip
                self._pending_samples += item.samples - skip
                self._queue.appendleft(self._replay_item(item, skip))
            self._drop_over_budget()
        self._report_lost()

    def on_ready(self) -> None:
        """A (new) worker is ready: put the active session's StartSession in front of everything else. The audio
        waiting (the dead worker's and what arrived while it was away) goes as owed (``AudioIn.replay``): the
        worker keeps all of it, beyond its backlog limit for a live engine that falls behind."""
        with self._lock:
            self._queue = deque(item for item in self._queue if item is not self._start)
            if self._owed and self._session_id is not None:
                self._queue = deque(self._replay_item(item, 0) if item.samples and not item.replay else item
                                    for item in self._queue)
            self._owed = False
            if self._start is not None:
                self._queue.appendleft(self._start)

    def flush(self, sock: zmq.Socket) -> int:
        """Send queued messages in order until ZeroMQ would block; returns how many were sent."""
        sent = 0
        while True:
            with self._lock:
                if not self._queue:
                    return sent
                item = self._queue[0]
                try:
                    sock.send_multipart(item.parts, flags=zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    return sent
                self._queue.popleft()
                self._pending_samples -= item.samples
                if item.samples:  # kept until the worker says it is rendered
                    self._sent.append(item)
                    self._sent_samples += item.samples
            sent += 1
            self.sent_messages += 1

    # -- internals (under the lock) --------------------------------------------------------------

    def _replay_item(self, item: _Outgoing, skip: int) -> _Outgoing:
        """``item``'s audio without its first ``skip`` samples, as an AudioIn marked ``replay`` (same session)."""
        assert item.pcm is not None
        pcm = item.pcm[skip:]
        t0, n = item.t0 + skip, int(pcm.shape[0])
        msg = p.AudioIn(session_id=self._session_id or "", seq=item.seq, t0=t0, n_samples=n,
                        sample_rate=self.sample_rate, replay=True)
        return _Outgoing([p.encode(msg), pcm.tobytes()], samples=n, kind="audio", t0=t0, seq=item.seq, pcm=pcm,
                         replay=True)

    def _trim_rendered(self) -> None:
        while self._sent and self._sent[0].end <= self._rendered_t:
            self._sent_samples -= self._sent.popleft().samples
        while self._forgotten and self._forgotten[0][1] <= self._rendered_t:
            self._forgotten.popleft()

    def _clear_sent(self) -> None:
        self._sent.clear()
        self._sent_samples = 0
        self._forgotten.clear()

    def _drop_over_budget(self) -> None:
        """Keep at most ``max_pending_samples``: forget the oldest sent audio first (the worker may still render
        it: lost only if it dies first), then drop the oldest unsent audio (lost now)."""
        while self._sent_samples + self._pending_samples > self.max_pending_samples and self._sent:
            item = self._sent.popleft()
            self._sent_samples -= item.samples
            self._forgotten.append((max(item.t0, self._rendered_t), item.end))
        while self._pending_samples > self.max_pending_samples:
            oldest = next((item for item in self._queue if item.samples), None)
            if oldest is None:
                break
            self._queue.remove(oldest)
            self._pending_samples -= oldest.samples
            self._lose(oldest.t0, oldest.end)

    def _lose(self, start: int, end: int) -> None:
        start = max(start, self._floor)
        if end <= start:
            return
        self.dropped_samples += end - start
        self._lost.append((start, end - start))

    def _report_lost(self) -> None:
        """Tell ``on_audio_lost`` about the spans lost meanwhile (outside the lock: it may call anything)."""
        with self._lock:
            spans, self._lost = _merged(self._lost), []
        for start, n in spans:
            self._lost_log.warning("lost", "audio lost: %.2f s from %.2f s of the session (%.2f s in all; the worker "
                                   "was away or behind longer than supervisor.replay_max_s allows)", n / self.sample_rate,
                                   start / self.sample_rate, self.dropped_samples / self.sample_rate)
            if self.on_audio_lost is not None:
                try:
                    self.on_audio_lost(start, n)
                except Exception:  # a broken listener must not stop the audio
                    log.exception("on_audio_lost callback failed")


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(start, n) spans with the adjacent ones joined (one report per stretch of lost audio, not per packet)."""
    out: list[tuple[int, int]] = []
    for start, n in spans:
        if out and out[-1][0] + out[-1][1] == start:
            out[-1] = (out[-1][0], out[-1][1] + n)
        else:
            out.append((start, n))
    return out

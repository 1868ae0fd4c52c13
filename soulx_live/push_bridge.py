"""The daemon's side of the push API: a ``PushHandler`` that places pushed speech on the timeline.

:class:`PushBridge` implements ``soulx_live.push.handler.PushHandler`` for
``soulx_live.push.server.PushServer``:

- ``push_pcm``: float32 mono 16 kHz PCM (the server resamples) is queued on the
  :class:`~soulx_live.audio.push_source.PushSource` at the current timeline position (after speech
  pushed earlier that has not played yet) and registered with the utterance tracker;
- ``say``: text is synthesised with ``soulx_live.tts.build_tts(config.tts)`` (built once, on first
  use), queued the same way, and its phoneme timings are forwarded to the engine session on the
  same timeline;
- ``interrupt``: barge-in through the daemon (new epoch); every unfinished utterance gets an
  ``interrupted`` event with the time it played;
- ``on_played`` (called by the daemon with the sinks' progress) drives ``started``/``finished``.

Bad input (NaN, integer samples, wrong shape, empty, too long) raises ``ValueError``/``TypeError``
naming the problem; the server answers the client with it and the session goes on. Pushed audio waiting
to play is capped at ``push.max_queued_s``: a push beyond it raises ``QueueFullError`` (429 ``queue_full``)
saying how much is queued, so a client cannot make the daemon hold unbounded audio.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from engine.interface import mono_pcm
from soulx_live.audio.push_source import PushSource
from soulx_live.config import SoulxConfig

__all__ = ["PushBridge", "make_tracker"]

log = logging.getLogger(__name__)

try:
    from soulx_live.push.handler import QueueFullError
except ImportError:  # a build without the push package: the server that maps it to a 429 is missing too
    QueueFullError = ValueError  # type: ignore[misc,assignment]


class Tracker(Protocol):
    """What the bridge needs of ``soulx_live.push.utterances.UtteranceTracker``."""

    def add(self, utterance_id: str, start_sample: int, n_samples: int) -> None: ...

    def on_played(self, sample: int) -> None: ...

    def interrupt(self, at_sample: int) -> None: ...

    def lost(self, start_sample: int, n_samples: int) -> None: ...


class _NoTracker:
    """Stands in when this build has no utterance tracker: no speech events."""

    def add(self, utterance_id: str, start_sample: int, n_samples: int) -> None:
        pass

    def on_played(self, sample: int) -> None:
        pass

    def interrupt(self, at_sample: int) -> None:
        pass

    def lost(self, start_sample: int, n_samples: int) -> None:
        pass


def make_tracker(sample_rate: int, emit: Callable[[Any], None]) -> Tracker:
    """``UtteranceTracker(sample_rate, emit)``, or a silent stand-in when the push package is missing."""
    try:
        from soulx_live.push.utterances import UtteranceTracker
    except ImportError as exc:
        log.warning("speech events are not available in this build (%s)", exc)
        return _NoTracker()
    return UtteranceTracker(sample_rate, emit)


@dataclass(frozen=True)
class _Receipt:
    """Same fields as ``soulx_live.push.handler.PushReceipt`` (used when that module is missing)."""

    utterance_id: str
    start_sample: int
    n_samples: int


def _receipt(utterance_id: str, start_sample: int, n_samples: int) -> Any:
    try:
        from soulx_live.push.handler import PushReceipt
    except ImportError:
        return _Receipt(utterance_id, start_sample, n_samples)
    return PushReceipt(utterance_id=utterance_id, start_sample=start_sample, n_samples=n_samples)


class PushBridge:
    """PushHandler over a :class:`PushSource`; thread-safe (the server may call from several threads)."""

    def __init__(self, config: SoulxConfig, source: PushSource, tracker: Tracker, *,
                 interrupt: Callable[[], int], push_phonemes: Callable[[list[tuple[int, int, str]]], None],
                 status: Callable[[], dict[str, object]]) -> None:
        self.config = config
        self.source = source
        self.tracker = tracker
        self.sample_rate = source.sample_rate
        self.max_samples = int(config.push.max_packet_s * self.sample_rate)
        self.max_queued = int(config.push.max_queued_s * self.sample_rate)
        self.pushed = 0  # utterances accepted
        self.rejected = 0  # pushes refused as bad input
        self._interrupt = interrupt
        self._push_phonemes = push_phonemes
        self._status = status
        self._lock = threading.Lock()  # one enqueue + tracker.add at a time: utterances stay in order
        self._tts: Any = None
        self._played = 0

    # -- PushHandler -----------------------------------------------------------------------------

    def push_pcm(self, pcm: np.ndarray, *, utterance_id: str) -> Any:
        """Queue float32 mono PCM at the engine rate; returns the PushReceipt (timeline position)."""
        data = self._check(pcm, utterance_id)
        with self._lock:  # the check and the enqueue under one lock: concurrent pushes cannot overshoot
            self._make_room(int(data.shape[0]), utterance_id)
            start = self.source.enqueue(data)
            self.tracker.add(utterance_id, start, int(data.shape[0]))
            self.pushed += 1
        log.info("push %s: %.2f s of audio at %.2f s", utterance_id, data.shape[0] / self.sample_rate, start / self.sample_rate)
        return _receipt(utterance_id, start, int(data.shape[0]))

    def say(self, text: str, *, voice: str | None, utterance_id: str, synth: Any = None) -> Any:
        """Synthesise ``text`` and queue it like pushed PCM, with its phoneme timings for the engine.
        ``synth``: another synthesizer than the configured one (the Studio's speaking rate)."""
        if not text.strip():
            self.rejected += 1
            raise ValueError(f"utterance {utterance_id}: nothing to say (empty text)")
        with self._lock:  # a full queue is refused before the (slow) synthesis
            self._make_room(0, utterance_id)
        utterance = (synth or self._synth()).synthesize(text, voice)
        if utterance.sample_rate != self.sample_rate:
            raise ValueError(f"the TTS returned {utterance.sample_rate} Hz audio; the engine takes {self.sample_rate} Hz")
        data = self._check(utterance.pcm, utterance_id)
        with self._lock:
            self._make_room(int(data.shape[0]), utterance_id)
            start = self.source.enqueue(data)
            self.tracker.add(utterance_id, start, int(data.shape[0]))
            self.pushed += 1
        spans = [(start + round(p.start_s * self.sample_rate), start + round(p.end_s * self.sample_rate), p.phoneme)
                 for p in utterance.phonemes]
        if spans:
            self._push_phonemes(spans)
        log.info("say %s: %r, %.2f s at %.2f s", utterance_id, text[:60], data.shape[0] / self.sample_rate, start / self.sample_rate)
        return _receipt(utterance_id, start, int(data.shape[0]))

    def interrupt(self) -> int:
        """Barge-in: the new epoch; unfinished utterances are reported ``interrupted``."""
        with self._lock:
            epoch = self._interrupt()
            self.tracker.interrupt(self._played)
        return epoch

    def status(self) -> dict[str, object]:
        return {**self._status(), "queued_s": self.source.queued_samples / self.sample_rate,
                "position_s": self.source.position / self.sample_rate, "played_s": self._played / self.sample_rate,
                "utterances": self.pushed, "rejected": self.rejected}

    # -- driven by the daemon --------------------------------------------------------------------

    def session_ended(self) -> None:
        """The session is over (the daemon stops): unfinished utterances are ``interrupted`` where playback got,
        so no client waits for a ``finished`` that will never come."""
        with self._lock:
            self.tracker.interrupt(self._played)

    def on_played(self, sample: int) -> None:
        """The sinks have played the timeline up to ``sample`` (never goes backwards)."""
        with self._lock:
            if sample > self._played:
                self._played = sample
                self.tracker.on_played(sample)

    # -- helpers ---------------------------------------------------------------------------------

    def _check(self, pcm: np.ndarray, utterance_id: str) -> np.ndarray:
        try:
            data = mono_pcm(pcm)
            if data.shape[0] == 0:
                raise ValueError("the PCM packet is empty")
            if data.shape[0] > self.max_samples:
                raise ValueError(f"the PCM packet is {data.shape[0] / self.sample_rate:.1f} s long; at most "
                                 f"push.max_packet_s={self.config.push.max_packet_s:g} s per push (split it)")
        except (ValueError, TypeError) as exc:
            self.rejected += 1
            log.debug("push %s rejected: %s", utterance_id, exc)  # the server logs it (rate-limited, quoted)
            raise type(exc)(f"utterance {utterance_id}: {exc}") from None
        return data

    def _make_room(self, n: int, utterance_id: str) -> None:
        """Raise QueueFullError when ``n`` more samples would queue more than ``push.max_queued_s`` (lock held)."""
        queued = int(self.source.queued_samples)
        if queued + n <= self.max_queued and (n > 0 or queued < self.max_queued):
            return
        self.rejected += 1
        rate = self.sample_rate
        wait_s = (queued + n - self.max_queued) / rate
        raise QueueFullError(f"utterance {utterance_id}: {queued / rate:.1f} s of pushed audio are queued already and "
                             f"this adds {n / rate:.1f} s; at most push.max_queued_s="
                             f"{self.config.push.max_queued_s:g} s may wait. Push again in {max(wait_s, 0.1):.1f} s "
                             "(it plays in real time; watch for 'finished' events) or interrupt")

    def _synth(self) -> Any:
        if self._tts is None:
            from soulx_live.tts import build_tts

            self._tts = build_tts(self.config.tts)
        return self._tts

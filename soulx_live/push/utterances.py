"""Speech events for pushed utterances, driven by how far the sinks have played the timeline."""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

__all__ = ["SpeechEvent", "UtteranceTracker"]

log = logging.getLogger(__name__)

SpeechKind = Literal["started", "finished", "interrupted", "lost"]


@dataclass(frozen=True)
class SpeechEvent:
    """``position_s``: timeline position of the event (utterance start, end, or where it was cut);
    ``played_s``: how much of the utterance had played then. ``lost``: part of the utterance never reached the
    engine (an engine outage longer than the replay allows); ``position_s`` is where the loss starts, and
    ``played_s`` of the later ``finished`` counts only what really played."""

    kind: SpeechKind
    utterance_id: str
    position_s: float
    played_s: float


@dataclass
class _Entry:
    utterance_id: str
    start: int
    n: int
    started: bool = False
    lost: int = 0  # samples of it that never reached the engine


class UtteranceTracker:
    """Tracks queued utterances on the session timeline; thread-safe. ``emit`` is called outside the lock,
    in timeline order (``started`` always before ``finished``/``interrupted`` of the same utterance...
    except an utterance cut before it began, which gets only ``interrupted`` with ``played_s=0``)."""

    def __init__(self, sample_rate: int, emit: Callable[[SpeechEvent], None]) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        self.sample_rate = sample_rate
        self._emit = emit
        self._entries: list[_Entry] = []
        self._played = 0
        self._lock = threading.Lock()

    @property
    def pending(self) -> int:
        """Utterances not finished yet."""
        with self._lock:
            return len(self._entries)

    def add(self, utterance_id: str, start_sample: int, n_samples: int) -> None:
        if n_samples <= 0:
            raise ValueError(f"utterance {utterance_id}: n_samples must be positive, got {n_samples}")
        with self._lock:
            self._entries.append(_Entry(utterance_id, int(start_sample), int(n_samples)))
            self._entries.sort(key=lambda e: e.start)
        # a position already played past is reported on the next on_played

    def on_played(self, sample: int) -> None:
        """The sinks have played the timeline up to (not including) ``sample``."""
        events: list[SpeechEvent] = []
        with self._lock:
            self._played = max(self._played, int(sample))
            keep: list[_Entry] = []
            for e in self._entries:
                if not e.started and sample > e.start:
                    e.started = True
                    events.append(self._event("started", e, e.start, 0))
                if e.started and sample >= e.start + e.n:
                    events.append(self._event("finished", e, e.start + e.n, e.n - e.lost))
                else:
                    keep.append(e)
            self._entries = keep
        self._send(events)

    def lost(self, start_sample: int, n_samples: int) -> None:
        """Timeline samples ``[start_sample, start_sample + n_samples)`` were dropped before the engine got them:
        each utterance they overlap gets a ``lost`` event now (its position: where the loss starts in it)."""
        end = int(start_sample) + int(n_samples)
        events: list[SpeechEvent] = []
        with self._lock:
            for e in self._entries:
                lo, hi = max(e.start, int(start_sample)), min(e.start + e.n, end)
                if hi > lo:
                    e.lost += hi - lo
                    events.append(self._event("lost", e, lo, min(max(self._played - e.start, 0), e.n)))
        self._send(events)

    def interrupt(self, at_sample: int) -> None:
        """Barge-in at timeline sample ``at_sample``: every unfinished utterance is ``interrupted``."""
        with self._lock:
            entries, self._entries = self._entries, []
            events = [self._event("interrupted", e, at_sample, min(max(at_sample - e.start, 0), e.n)) for e in entries]
        self._send(events)

    def _event(self, kind: SpeechKind, e: _Entry, position: int, played: int) -> SpeechEvent:
        return SpeechEvent(kind, e.utterance_id, position / self.sample_rate, played / self.sample_rate)

    def _send(self, events: list[SpeechEvent]) -> None:
        for event in events:
            try:
                self._emit(event)
            except Exception:
                log.exception("speech event listener failed on %s", event)

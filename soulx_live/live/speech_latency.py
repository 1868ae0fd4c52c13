"""Silence → speech latency: when speech starts after a pause in the audio handed to the engine, and when each
sink first writes a frame that carries it.

Onsets are found on the fed audio timeline (the samples the engine got, in order) with a frame-sized RMS gate
after at least ``min_silence_s`` below it. A sink reaches an onset when it writes a chunk whose audio ends past it
(engine frames map to the fed timeline through the session's skip and drop counts). The latency is the sink's
write time minus the time the onset sample arrived (for a live source the newest sample arrived "now", the rest
``(end - sample) / rate`` earlier).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

__all__ = ["SpeechOnsets"]

THRESHOLD_RMS = 0.01  # -40 dBFS over one frame: above room noise, below any speech
MIN_SILENCE_S = 0.3  # a pause shorter than this is part of the same utterance
MAX_AGE_S = 30.0  # an onset no sink reached by then (dropped, or a restart renumbered frames) is forgotten


@dataclass
class _Onset:
    sample: int  # on the fed timeline
    arrived: float  # monotonic time the sample arrived
    reached_by: set[str] = field(default_factory=set)


class SpeechOnsets:
    """Thread-safe: the engine thread feeds, sink threads ask, a barge-in clears."""

    def __init__(self, sample_rate: int, samples_per_frame: int, *, threshold_rms: float = THRESHOLD_RMS,
                 min_silence_s: float = MIN_SILENCE_S) -> None:
        self.sample_rate = sample_rate
        self._window = samples_per_frame
        self._threshold_sq = threshold_rms * threshold_rms
        self._min_silent = int(min_silence_s * sample_rate)
        self._silent = self._min_silent  # the session starts after silence: its first speech is an onset
        self._onsets: list[_Onset] = []
        self._lock = threading.Lock()

    def feed(self, pcm: np.ndarray, start_sample: int, now: float, *, live: bool = True) -> None:
        """Look for onsets in ``pcm`` (mono float32), which starts at ``start_sample`` of the fed timeline."""
        end = start_sample + pcm.shape[0]
        for offset in range(0, pcm.shape[0] - self._window + 1, self._window):
            window = pcm[offset : offset + self._window]
            if float(np.dot(window, window)) / window.shape[0] < self._threshold_sq:
                self._silent += window.shape[0]
                continue
            if self._silent >= self._min_silent:
                sample = start_sample + offset
                arrived = now - (end - sample) / self.sample_rate if live else now
                with self._lock:
                    self._onsets.append(_Onset(sample, arrived))
            self._silent = 0

    def clear(self) -> None:
        """Barge-in: the queued speech was dropped, so its onsets will never be shown."""
        with self._lock:
            self._onsets.clear()

    def reached(self, sink: str, fed_sample: int, now: float, sinks: int) -> list[float]:
        """Latencies of the onsets ``sink`` reached by writing audio up to ``fed_sample`` (each once per sink);
        an onset is forgotten once all ``sinks`` reached it or it is too old."""
        out = []
        with self._lock:
            for onset in self._onsets:
                if onset.sample < fed_sample and sink not in onset.reached_by:
                    onset.reached_by.add(sink)
                    out.append(now - onset.arrived)
            self._onsets = [o for o in self._onsets if len(o.reached_by) < sinks and now - o.arrived < MAX_AGE_S]
        return out

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._onsets)

"""Audio intake: the intake thread plays the audio source into a ring; the engine thread takes it from there.

A file can wait for the engine (the thread blocks while the ring is full); live input cannot, so the ring
drops the oldest samples instead. A bad packet (NaN, wrong dtype or shape) becomes silence of its length,
counted and logged, so the session and its timeline go on.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import numpy as np

from engine.interface import mono_pcm
from soulx_live.audio.ring import AudioRing
from soulx_live.audio.source import AudioSource
from soulx_live.live.session import Counters

__all__ = ["RING_SECONDS", "AudioIntake", "clean_pcm"]

log = logging.getLogger(__name__)

RING_SECONDS = 10.0  # audio the intake can buffer ahead of the engine before dropping the oldest
FULL_RING_WAIT_S = 0.005


def clean_pcm(pcm: np.ndarray, counters: Counters) -> np.ndarray:
    """Mono float32 ``pcm``; a bad packet becomes silence of the same length (counted in ``counters``)."""
    try:
        return mono_pcm(pcm)
    except (ValueError, TypeError) as exc:
        counters.bad_audio_packets += 1
        log.warning("dropped a bad audio packet of %d samples (%s); playing silence instead", len(pcm), exc)
        return np.zeros(len(pcm), dtype=np.float32)


class AudioIntake:
    """The source, its ring and the intake thread's body (:meth:`run`)."""

    def __init__(self, source: AudioSource, sample_rate: int, stopping: Callable[[], bool],
                 lock: threading.Lock) -> None:
        self.source = source
        self.ring = AudioRing(int(RING_SECONDS * sample_rate))
        self.lock = lock  # taking audio (and handing it on) vs. a barge-in's flush
        self._stopping = stopping
        self._ready = threading.Event()
        self._done = threading.Event()

    @property
    def over(self) -> bool:
        """The source has ended (or was stopped): what the ring holds is all there will be."""
        return self._done.is_set()

    def run(self) -> None:
        """The intake thread: play every block of the source into the ring."""
        ring, source = self.ring, self.source
        try:
            for block in source.blocks():
                while not source.realtime and ring.capacity - ring.available() < block.shape[0]:
                    if self._stopping():
                        return
                    time.sleep(FULL_RING_WAIT_S)
                ring.write(block)
                self._ready.set()
                if self._stopping():
                    return
        finally:
            self._done.set()
            self._ready.set()

    def wait(self, timeout_s: float) -> None:
        """Until new audio arrived, the source ended, or ``timeout_s`` passed."""
        self._ready.wait(timeout_s)
        self._ready.clear()

    def take(self) -> np.ndarray:
        """Everything buffered (call with :attr:`lock` held when the audio is handed on under it)."""
        return self.ring.read(self.ring.available())

    def clear(self) -> int:
        """Barge-in: drop the buffered audio (pushed audio queued in a push source too); samples dropped."""
        clear_source = getattr(self.source, "clear", None)
        if clear_source is not None:
            clear_source()
        return self.ring.clear()

    @property
    def buffered(self) -> int:
        return self.ring.available()

    @property
    def dropped(self) -> int:
        return self.ring.dropped

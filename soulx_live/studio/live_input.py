"""A microphone or loopback input the Studio mixes under the pushed audio, switchable while the daemon runs.

The device source runs on its own thread into a small ring; the push source takes a block from it each block
period (``PushSource.mix``), padding with silence when the device is late, so typed speech and the picked
input share one timeline and neither can stall the other.
"""
from __future__ import annotations

import logging
import threading

import numpy as np

from soulx_live.audio.ring import AudioRing
from soulx_live.audio.source import AudioSource

__all__ = ["LiveInput"]

log = logging.getLogger(__name__)

RING_S = 1.0  # at most this much device audio waits; older is dropped (live input: late is useless)


class LiveInput:
    """Plays ``source`` into a ring on a thread; :meth:`read` is ``PushSource.mix``."""

    def __init__(self, source: AudioSource, sample_rate: int) -> None:
        self.source = source
        self._ring = AudioRing(int(RING_S * sample_rate))
        self._thread = threading.Thread(target=self._run, name="studio-input", daemon=True)
        self.error: str | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.source.stop()
        self._thread.join(2.0)

    def read(self, n: int) -> np.ndarray:
        out = np.zeros(n, dtype=np.float32)
        got = self._ring.read(min(n, self._ring.available()))
        out[: got.shape[0]] = got
        return out

    def _run(self) -> None:
        try:
            for block in self.source.blocks():
                self._ring.write(np.asarray(block, dtype=np.float32).reshape(-1))
        except Exception as exc:  # noqa: BLE001 - a lost device ends this input, never the session
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("studio audio input %s stopped: %s", self.source.name, exc)

"""Play an audio file as if it were a live input: fixed-size blocks, optionally paced in real time.

Used by ``soulx-live demo``/``run`` with a file input and by tests. Pacing uses the monotonic clock
against the *ideal* release time of each block (start + k * block duration), not sleep-per-block,
so scheduling jitter never accumulates into drift.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from soulx_live.audio.file import decode_audio_file

__all__ = ["FileSource"]


class FileSource:
    """Yields float32 mono blocks of ``block_samples`` (the last one may be shorter).

    ``realtime=True`` releases each block when a live microphone would have delivered it: once its
    last sample has been "spoken", i.e. ``end / sample_rate`` seconds after iteration starts; ``realtime=False`` yields as fast as the consumer takes them.
    ``stop()`` (from any thread) ends the iteration at the next block boundary.
    """

    def __init__(
        self,
        audio: str | Path | np.ndarray,
        *,
        sample_rate: int = 16000,
        block_samples: int = 640,
        realtime: bool = True,
    ) -> None:
        if block_samples <= 0:
            raise ValueError(f"block_samples must be positive, got {block_samples}")
        if isinstance(audio, np.ndarray):
            self.pcm = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
            self.name = "<array>"
        else:
            self.pcm = decode_audio_file(audio, sample_rate)
            self.name = str(audio)
        self.sample_rate = sample_rate
        self.block_samples = block_samples
        self.realtime = realtime
        self._stop = threading.Event()

    @property
    def duration_s(self) -> float:
        return self.pcm.shape[0] / self.sample_rate

    @property
    def total_samples(self) -> int:
        return int(self.pcm.shape[0])

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def blocks(self) -> Iterator[np.ndarray]:
        """Iterate over the blocks (views into the decoded file; treat them as read-only)."""
        t0 = time.monotonic()
        for start in range(0, self.total_samples, self.block_samples):
            block = self.pcm[start : start + self.block_samples]
            if self.realtime:
                due = t0 + (start + block.shape[0]) / self.sample_rate
                # Event.wait doubles as an interruptible sleep.
                if self._stop.wait(max(0.0, due - time.monotonic())):
                    return
            elif self._stop.is_set():
                return
            yield block

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.blocks()

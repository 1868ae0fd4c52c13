"""The FIFO of pushed PCM samples a streaming session has not consumed yet (``engine.flashtalk`` sessions)."""
from __future__ import annotations

import numpy as np

__all__ = ["PcmQueue"]


class PcmQueue:
    """FIFO of float32 samples pushed but not yet consumed. Storage is reused (compacted in place); it grows
    only when more audio is queued than ever before (a caller pushing far ahead of consumption)."""

    def __init__(self, initial_capacity: int) -> None:
        self._buf = np.zeros(max(1, initial_capacity), dtype=np.float32)
        self._start = 0
        self._end = 0

    def __len__(self) -> int:
        return self._end - self._start

    def clear(self) -> None:
        self._start = self._end = 0

    def push(self, samples: np.ndarray) -> None:
        n = samples.shape[0]
        if self._end + n > self._buf.shape[0]:
            size = len(self)
            if size + n > self._buf.shape[0]:
                grown = np.zeros(max(2 * self._buf.shape[0], size + n), dtype=np.float32)
                grown[:size] = self._buf[self._start : self._end]
                self._buf = grown
            else:
                self._buf[:size] = self._buf[self._start : self._end]
            self._start, self._end = 0, size
        self._buf[self._end : self._end + n] = samples
        self._end += n

    def pop(self, n: int) -> np.ndarray:
        """The next ``n`` samples (a new array), zero-padded when fewer are queued."""
        out = np.zeros(n, dtype=np.float32)
        take = min(n, len(self))
        out[:take] = self._buf[self._start : self._start + take]
        self._start += take
        if self._start == self._end:
            self._start = self._end = 0
        return out

    def copy(self) -> np.ndarray:
        return self._buf[self._start : self._end].copy()

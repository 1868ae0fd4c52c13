"""A preallocated float32 ring buffer for the daemon's audio intake.

The capture side writes whatever arrives; the engine side reads what it needs. When the engine
falls behind, the ring overwrites the *oldest* samples (live audio that is seconds late is useless)
and counts them in ``dropped`` so the daemon can report ``degraded`` instead of growing memory.
Thread-safe: one lock around index arithmetic and two copies at most.
"""
from __future__ import annotations

import threading

import numpy as np

__all__ = ["AudioRing"]


class AudioRing:
    """Fixed-capacity FIFO of float32 samples with overwrite-oldest semantics."""

    def __init__(self, capacity_samples: int) -> None:
        if capacity_samples <= 0:
            raise ValueError(f"capacity_samples must be positive, got {capacity_samples}")
        self._buf = np.zeros(capacity_samples, dtype=np.float32)
        self._read = 0  # absolute index of the oldest unread sample
        self._write = 0  # absolute index one past the newest sample
        self._dropped = 0
        self._lock = threading.Lock()

    @property
    def capacity(self) -> int:
        return int(self._buf.shape[0])

    @property
    def dropped(self) -> int:
        """Samples overwritten before they were read, since construction."""
        return self._dropped

    @property
    def written(self) -> int:
        """Samples written since construction."""
        return self._write

    def available(self) -> int:
        """Samples that can be read now."""
        with self._lock:
            return self._write - self._read

    def write(self, pcm: np.ndarray) -> int:
        """Append samples; returns how many older samples were overwritten to make room."""
        data = np.asarray(pcm, dtype=np.float32).reshape(-1)
        cap = self.capacity
        with self._lock:
            if data.shape[0] > cap:  # only the newest `cap` samples can survive anyway
                skipped = data.shape[0] - cap
                self._write += skipped
                data = data[skipped:]
            self._copy_in(self._write, data)
            self._write += data.shape[0]
            lost = max(0, (self._write - self._read) - cap)
            self._read += lost
            self._dropped += lost
        return lost

    def read(self, n: int) -> np.ndarray:
        """Remove and return up to ``n`` oldest samples (fewer if fewer are available)."""
        if n < 0:
            raise ValueError(f"n must be non-negative, got {n}")
        with self._lock:
            n = min(n, self._write - self._read)
            out = self._copy_out(self._read, n)
            self._read += n
        return out

    def clear(self) -> int:
        """Discard everything unread; returns how many samples were discarded (not counted as dropped)."""
        with self._lock:
            n = self._write - self._read
            self._read = self._write
        return n

    def _copy_in(self, start: int, data: np.ndarray) -> None:
        cap = self.capacity
        pos = start % cap
        first = min(data.shape[0], cap - pos)
        self._buf[pos : pos + first] = data[:first]
        self._buf[: data.shape[0] - first] = data[first:]

    def _copy_out(self, start: int, n: int) -> np.ndarray:
        cap = self.capacity
        pos = start % cap
        first = min(n, cap - pos)
        out = np.empty(n, dtype=np.float32)
        out[:first] = self._buf[pos : pos + first]
        out[first:] = self._buf[: n - first]
        return out

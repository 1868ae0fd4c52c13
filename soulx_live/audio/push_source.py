"""Audio that external apps push into a running daemon, played out on a real-time timeline.

Same surface as :class:`~soulx_live.audio.file_source.FileSource` (``blocks()``, ``realtime``,
``stop()``, ``name``, ``duration_s``): ``blocks()`` yields one block of ``block_samples`` every
``block_samples / sample_rate`` seconds, for ever. Each block is taken from the pushed audio when
there is any, else it is silence, so the engine keeps running on silence and the avatar stays alive
(idle) between utterances.

Timeline: ``position`` counts the samples yielded so far (the session timeline the daemon feeds the
engine). :meth:`enqueue` places pushed audio at the current position, or right after audio pushed
earlier that has not been played yet, and returns the sample at which it starts. :meth:`clear`
(barge-in) drops everything queued. Pacing is against the ideal release time of each block, so
scheduling jitter does not accumulate into drift.
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator

import numpy as np

__all__ = ["PushSource"]


class PushSource:
    """A live source fed by :meth:`enqueue`; silence while nothing is queued."""

    realtime = True
    duration_s = math.inf

    def __init__(self, *, sample_rate: int = 16000, block_samples: int = 640, name: str = "push") -> None:
        if block_samples <= 0:
            raise ValueError(f"block_samples must be positive, got {block_samples}")
        self.sample_rate = sample_rate
        self.block_samples = block_samples
        self.name = name
        self._lock = threading.Lock()
        self._queue: deque[np.ndarray] = deque()
        self._queued = 0  # samples waiting in _queue
        self._head = 0  # samples of _queue[0] already yielded
        self._position = 0  # samples yielded so far
        self._stop = threading.Event()
        # another live input mixed under the pushed audio (the Studio's microphone pick): (n) -> n samples
        self.mix: Callable[[int], np.ndarray] | None = None

    @property
    def position(self) -> int:
        """Samples yielded so far: the timeline position of the next block."""
        with self._lock:
            return self._position

    @property
    def queued_samples(self) -> int:
        with self._lock:
            return self._queued

    def enqueue(self, pcm: np.ndarray) -> int:
        """Queue float32 mono samples; returns the timeline sample at which they will start."""
        data = np.ascontiguousarray(pcm, dtype=np.float32).reshape(-1)
        with self._lock:
            start = self._position + self._queued
            if data.shape[0]:
                self._queue.append(data)
                self._queued += int(data.shape[0])
        return start

    def clear(self) -> int:
        """Drop all queued audio (barge-in); returns how many samples were dropped."""
        with self._lock:
            dropped = self._queued
            self._queue.clear()
            self._queued = self._head = 0
        return dropped

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def next_block(self) -> np.ndarray:
        """The next block right now (pushed audio, padded with silence), advancing the timeline."""
        out = np.zeros(self.block_samples, dtype=np.float32)
        with self._lock:
            filled = 0
            while filled < self.block_samples and self._queue:
                head = self._queue[0]
                take = min(self.block_samples - filled, head.shape[0] - self._head)
                out[filled:filled + take] = head[self._head:self._head + take]
                filled += take
                self._head += take
                self._queued -= take
                if self._head >= head.shape[0]:
                    self._queue.popleft()
                    self._head = 0
            self._position += self.block_samples
        mix = self.mix
        if mix is not None:
            out += mix(self.block_samples)
        return out

    def blocks(self) -> Iterator[np.ndarray]:
        """Yield a block each block period until :meth:`stop`."""
        t0 = time.monotonic()
        k = 0
        while True:
            due = t0 + (k + 1) * self.block_samples / self.sample_rate
            if self._stop.wait(max(0.0, due - time.monotonic())):
                return
            k += 1
            yield self.next_block()

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.blocks()

"""The laptop's jitter buffer: decoded chunks wait until their play-out time, sized from measured network jitter.

Each chunk carries the server's clock when it was sent (``sent_ns``). Its transit is arrival minus that (the
two machines' clocks differ by a constant, which cancels out); the smallest transit over a recent window is the
path's base delay. The buffer's delay ``target`` is the 90th percentile of (transit - base) over that window
(capped at ``remote.jitter_max_s``): it covers the usual spread of the network but not the rare stall (a TCP
retransmission), which a percentile ignores and a mean would not; ``jitter_s`` is RFC 3550's mean-deviation
estimate, reported for comparison. Measuring from the send time, not from the media clock, leaves the engine's
own pace (a speech chunk takes longer to render than a silent one) to the sinks' hold logic, as with a local
engine, instead of buffering for it. A chunk plays at ``sent + base + target``. A chunk that arrives more than
one chunk past its play-out time is *late*: it is dropped, not queued (queuing it would keep every later chunk
late too), and the timeline re-anchors on it so the next chunks are on time again. A chunk that is late by less
plays at once.
"""
from __future__ import annotations

import collections
import heapq
import itertools
from dataclasses import dataclass, field

__all__ = ["JitterBuffer", "JitterStats"]

TARGET_PERCENTILE = 90.0  # of the arrival spread: what the buffer absorbs; rarer stalls show as a brief hold
BASE_WINDOW = 32  # chunks over which the base transit and the spread are taken (about 6 s at 5 frames/chunk): short
# enough to follow a slow drift of the path delay (a busy host), long enough for a stable percentile


@dataclass
class JitterStats:
    jitter_s: float = 0.0
    target_s: float = 0.0
    released: int = 0
    late_dropped: int = 0  # chunks
    late_frames: int = 0


@dataclass(order=True)
class _Item:
    due: float
    order: int
    payload: object = field(compare=False)
    frames: int = field(compare=False, default=0)


class JitterBuffer:
    """Not thread-safe: the decode thread owns it."""

    def __init__(self, *, max_delay_s: float, chunk_s: float) -> None:
        self.max_delay_s = max_delay_s
        self.chunk_s = chunk_s
        self.stats = JitterStats()
        self._transits: collections.deque[float] = collections.deque(maxlen=BASE_WINDOW)
        self._last_transit: float | None = None
        self._heap: list[_Item] = []
        self._order = itertools.count()

    def reset(self) -> None:
        """A new session or epoch: its media clock starts afresh; what waits is dropped."""
        self._transits.clear()
        self._last_transit = None
        self._heap.clear()

    def push(self, payload: object, sent_s: float, arrival_s: float, frames: int) -> bool:
        """Queue a chunk sent at ``sent_s`` (the sender's clock); False (counted) when it is late and dropped."""
        transit = arrival_s - sent_s
        if self._last_transit is not None:
            # RFC 3550 6.4.1: J += (|D| - J) / 16
            self.stats.jitter_s += (abs(transit - self._last_transit) - self.stats.jitter_s) / 16.0
        self._last_transit = transit
        self._transits.append(transit)
        base = min(self._transits)
        spread = sorted(t - base for t in self._transits)
        rank = min(len(spread) - 1, int(len(spread) * TARGET_PERCENTILE / 100.0))
        target = self.stats.target_s = min(self.max_delay_s, spread[rank])
        due = sent_s + base + target
        if arrival_s > due + self.chunk_s:
            self.stats.late_dropped += 1
            self.stats.late_frames += frames
            self._transits.clear()  # re-anchor on this chunk: the path's delay went up
            self._transits.append(transit)
            return False
        heapq.heappush(self._heap, _Item(max(due, arrival_s), next(self._order), payload, frames))
        return True

    def next_due(self) -> float | None:
        return self._heap[0].due if self._heap else None

    def pop_due(self, now_s: float) -> list[object]:
        """The chunks whose play-out time has come, in order."""
        out = []
        while self._heap and self._heap[0].due <= now_s:
            out.append(heapq.heappop(self._heap).payload)
            self.stats.released += 1
        return out

    def __len__(self) -> int:
        return len(self._heap)

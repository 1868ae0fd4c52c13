"""Memory watermark and leak trend of the engine process, usable as a Supervisor health check.

A days-long session must not grow. :class:`MemoryWatch` samples the resident set size (psutil, so it works on
every OS; children included, because a torchrun launcher's ranks are its children), keeps a bounded history, and
estimates the growth rate with the Theil–Sen slope (median of pairwise slopes: one spike, such as a one-off
allocation at the first chunk, does not move it). ``check(pid)`` returns a restart reason when the RSS is above
``limit_mb`` or the slope stayed above ``leak_mb_per_hour`` over a full window after warm-up (in both of
its halves, so a one-off step is not a leak); otherwise None. The
restart itself is the Supervisor's (the sinks hold the picture meanwhile).
"""
from __future__ import annotations

import logging
import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["MemorySample", "MemoryWatch", "process_rss_bytes", "theil_sen_slope"]

log = logging.getLogger(__name__)

Clock = Callable[[], float]
RssReader = Callable[[int], int]


@dataclass(frozen=True)
class MemorySample:
    t: float  # seconds (the watch's clock)
    rss_mb: float


def process_rss_bytes(pid: int, *, children: bool = True) -> int:
    """Resident memory of ``pid`` (plus its descendants when ``children``); 0 when it is gone."""
    import psutil

    try:
        proc = psutil.Process(pid)
        total = proc.memory_info().rss
        if children:
            for child in proc.children(recursive=True):
                try:
                    total += child.memory_info().rss
                except psutil.Error:
                    continue
        return int(total)
    except psutil.Error:
        return 0


def theil_sen_slope(samples: list[MemorySample], max_points: int = 64) -> float:
    """Median of the pairwise slopes (MB per second) of at most ``max_points`` evenly picked samples."""
    if len(samples) < 2:
        return 0.0
    step = max(1, len(samples) // max_points)
    pts = samples[::step]
    slopes = [(b.rss_mb - a.rss_mb) / (b.t - a.t) for i, a in enumerate(pts) for b in pts[i + 1:] if b.t > a.t]
    return statistics.median(slopes) if slopes else 0.0


class MemoryWatch:
    """Watermark + leak trend of one process tree; ``check`` is a ``Supervisor`` health check.

    ``window_s`` of history after ``warmup_s`` must show a slope above ``leak_mb_per_hour`` before a restart is
    asked for (a warning is logged once when the slope passes half of it). Samples are taken at most every
    ``interval_s``; ``check`` between samples is free.
    """

    def __init__(self, limit_mb: float | None, leak_mb_per_hour: float, *, window_s: float = 1800.0,
                 warmup_s: float = 120.0, interval_s: float = 5.0, clock: Clock = time.monotonic,
                 rss: RssReader = process_rss_bytes) -> None:
        self.limit_mb = limit_mb
        self.leak_mb_per_hour = leak_mb_per_hour
        self.window_s = window_s
        self.warmup_s = warmup_s
        self.interval_s = interval_s
        self._clock = clock
        self._rss = rss
        self._pid: int | None = None
        self._started = 0.0
        self._last = float("-inf")
        self._history: deque[MemorySample] = deque()
        self._warned = False
        self.last_rss_mb = 0.0

    def check(self, pid: int) -> str | None:
        now = self._clock()
        if pid != self._pid:  # a new (restarted) process: its history starts again
            self._pid, self._started, self._warned = pid, now, False
            self._history.clear()
            self._last = float("-inf")
        if now - self._last < self.interval_s:
            return None
        self._last = now
        rss_mb = self._rss(pid) / 2**20
        self.last_rss_mb = rss_mb
        if self.limit_mb is not None and rss_mb > self.limit_mb:
            return f"engine memory {rss_mb:.0f} MB is above supervisor.memory_limit_mb={self.limit_mb:g}"
        if now - self._started < self.warmup_s:
            return None
        self._history.append(MemorySample(now, rss_mb))
        while self._history and now - self._history[0].t > self.window_s:
            self._history.popleft()
        return self._trend_verdict(now)

    def slope_mb_per_hour(self) -> float:
        return theil_sen_slope(list(self._history)) * 3600.0

    def _sustained(self, now: float) -> bool:
        """Growth in both halves of the window: a leak grows all along, a one-off step sits in one half only."""
        middle = self._history[0].t + (now - self._history[0].t) / 2
        halves = ([s for s in self._history if s.t <= middle], [s for s in self._history if s.t >= middle])
        return all(theil_sen_slope(h) * 3600.0 > self.leak_mb_per_hour for h in halves)

    def _trend_verdict(self, now: float) -> str | None:
        if len(self._history) < 3:
            return None
        slope = self.slope_mb_per_hour()
        covered = now - self._history[0].t
        if slope > self.leak_mb_per_hour / 2 and not self._warned:
            self._warned = True
            log.warning("engine memory grows by %.0f MB/h (RSS %.0f MB); a restart follows above "
                        "supervisor.leak_mb_per_hour=%g", slope, self.last_rss_mb, self.leak_mb_per_hour)
        if covered >= self.window_s * 0.9 and slope > self.leak_mb_per_hour and self._sustained(now):
            return (f"engine memory grew {slope:.0f} MB/h for {covered / 60:.0f} min "
                    f"(above supervisor.leak_mb_per_hour={self.leak_mb_per_hour:g})")
        return None

"""Rate-limited warnings for input from outside the process (a socket, a client): the first of each kind is logged,
repeats within ``interval_s`` are counted and summarised in the next line of that kind, so a flood of bad messages
costs a few log lines, never the disk or the log's readability."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

__all__ = ["RateLimitedLog"]


class RateLimitedLog:
    """One logger, one line per kind per ``interval_s`` (thread-safe)."""

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log = logger
        self._interval_s = interval_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()
        self.counts: dict[str, int] = {}  # every occurrence per kind, logged or not

    def warning(self, kind: str, msg: str, *args: object) -> bool:
        """Log ``msg % args`` unless ``kind`` was logged within the interval; True when it was logged."""
        now = self._clock()
        with self._lock:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            last = self._last.get(kind)
            if last is not None and now - last < self._interval_s:
                self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
                return False
            self._last[kind] = now
            suppressed = self._suppressed.pop(kind, 0)
        suffix = f" (and {suppressed} more like it in the last {self._interval_s:g} s)" if suppressed else ""
        self._log.warning(msg + "%s", *args, suffix)
        return True

"""Logging what came from outside the process (the push API's clients, the control and events sockets) without
letting it forge log lines or flood the log.

- :func:`quoted` turns any client-provided value (a path, a header, a JSON field, an exception message
  that embeds one) into one quoted, escaped, length-capped token: a newline, a carriage return, an
  ANSI escape or a Unicode line separator from a client can never start a line of its own.
- :class:`RateLimitedLog` logs one line per kind of failed request and interval, counts the repeats it
  held back and says so on the next line of that kind; tracebacks only when the logger is at DEBUG.
  It is also a :class:`logging.Filter`, for loggers we do not call ourselves (aiohttp's server logger).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["MAX_LOGGED_CHARS", "RateLimitedLog", "quoted"]

MAX_LOGGED_CHARS = 200
_INTERVAL_S = 10.0


def quoted(value: object, limit: int = MAX_LOGGED_CHARS) -> str:
    """``value`` as one safe log token: repr-quoted (control and non-printable characters escaped), at most
    ``limit`` characters of it, and how many were cut."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        text = bytes(value[: limit * 4]).decode("utf-8", "backslashreplace")
        total = len(value)
    else:
        text = value if isinstance(value, str) else str(value)
        total = len(text)
    if len(text) > limit:
        text = text[:limit]
    out = repr(text)  # repr escapes \n, \r, \x1b, \u2028, bidi overrides...: everything not printable
    return f"{out}...(+{total - len(text)} more)" if total > len(text) else out


@dataclass
class _Window:
    since: float
    suppressed: int = 0


class RateLimitedLog(logging.Filter):
    """At most one WARNING per ``kind`` per ``interval_s``; the next one reports how many were held back.

    ``kind`` must come from our code (a fixed word, an error code, an exception class name), never from the
    network, so the table stays small. Held-back lines still go out at DEBUG, without their tracebacks.
    """

    def __init__(self, logger: logging.Logger, interval_s: float = _INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.logger = logger
        self.interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[str, _Window] = {}

    def warning(self, kind: str, msg: str, *args: object, exc: BaseException | None = None) -> None:
        """Log ``msg % args`` as one line (or count it as a repeat); ``exc``'s traceback only at DEBUG."""
        held = self._admit(kind)
        if held is None:
            self.logger.debug(msg + " (repeat, held back)", *args)
            return
        tail = f" [{held} more '{kind}' in the last {self.interval_s:g} s not logged]" if held else ""
        summary = f"; {type(exc).__name__}: {quoted(exc)}" if exc is not None else ""
        self.logger.warning(msg + "%s%s", *args, summary, tail)
        if exc is not None and self.logger.isEnabledFor(logging.DEBUG):
            self.logger.debug("traceback of the '%s' above", kind, exc_info=exc)

    def filter(self, record: logging.LogRecord) -> bool:
        """For a foreign logger: one summary line per exception kind and interval, no traceback below DEBUG."""
        exc = record.exc_info[1] if record.exc_info else None
        if record.levelno < logging.WARNING and exc is None:
            return True
        kind = type(exc).__name__ if exc is not None else f"{record.name}:{record.levelname}"
        held = self._admit(kind)
        if held is None:
            return False
        debug = self.logger.isEnabledFor(logging.DEBUG)
        text = record.getMessage()
        if exc is not None:
            text = f"{text}: {type(exc).__name__}: {quoted(exc)}"
        if held:
            text += f" [{held} more '{kind}' in the last {self.interval_s:g} s not logged]"
        record.msg, record.args = "%s", (text,)
        if not debug:
            record.exc_info, record.exc_text = None, None
        if record.levelno > logging.WARNING:  # a client's bad request is not an error of the daemon
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True

    def _admit(self, kind: str) -> int | None:
        """None: hold this one back; else the number held back since the last line of this kind."""
        now = self._clock()
        with self._lock:
            window = self._windows.get(kind)
            if window is not None and now - window.since < self.interval_s:
                window.suppressed += 1
                return None
            held = window.suppressed if window is not None else 0
            self._windows[kind] = _Window(now)
            return held

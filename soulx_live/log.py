"""Logging setup for every soulx-live process: one line per record, text or JSON.

Each record carries the process name (``daemon``, ``engine-r0``, ``cli``...) so lines from several
processes interleaved in one terminal or journal stay attributable. Nothing in the package prints;
user-facing output of the CLI goes through the ``soulx_live.cli`` logger or explicit ``sys.stdout``
writes for tables.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from typing import Literal, TextIO

__all__ = ["JsonFormatter", "TextFormatter", "setup_logging"]

LogFormat = Literal["text", "json"]

_HANDLER_MARK = "_soulx_live_handler"


class _ProcessNameFilter(logging.Filter):
    def __init__(self, process_name: str) -> None:
        super().__init__()
        self.process_name = process_name

    def filter(self, record: logging.LogRecord) -> bool:
        record.proc = self.process_name
        return True


class TextFormatter(logging.Formatter):
    """``HH:MM:SS.mmm LEVEL proc logger: message``; exceptions appended as usual."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s.%(msecs)03d %(levelname)-7s %(proc)s %(name)s: %(message)s", "%H:%M:%S")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (unix seconds), level, proc, logger, msg, and exc when present."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "proc": getattr(record, "proc", ""),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup_logging(
    level: str | int = "INFO",
    fmt: LogFormat = "text",
    process_name: str = "soulx-live",
    stream: TextIO | None = None,
) -> logging.Handler:
    """Install one handler on the root logger (replacing a previous one from this function).

    Safe to call again, e.g. after a fork or when the CLI learns ``--verbose``. Returns the handler.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    setattr(handler, _HANDLER_MARK, True)
    handler.addFilter(_ProcessNameFilter(process_name))
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    elif fmt == "text":
        formatter = TextFormatter()
        formatter.converter = time.localtime
        handler.setFormatter(formatter)
    else:
        raise ValueError(f"unknown log format {fmt!r}; use 'text' or 'json'")
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    # Third-party libraries that are chatty at INFO or leak secrets there (obsws-python logs its password).
    for noisy in ("obsws_python", "libav", "PIL", "matplotlib", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return handler

"""Sinks the Studio page can switch off and on while the daemon runs.

Each sink sits behind a :class:`SinkGate`. Switching off closes the sink (its camera, file or OBS feed is
released); switching on builds a fresh one (a closed sink object is spent: its threads and files are final)
and opens it with the session's spec. Both happen on the sink's own fan-out thread, at its next write or
hold, so a sink is only ever touched by one thread. While off, the gate drops what it is given.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from engine.interface import ChunkSpec, FrameChunk
from plugins.base import FrameSink

__all__ = ["SinkGate"]

log = logging.getLogger(__name__)


class SinkGate:
    """A :class:`~plugins.base.FrameSink` that forwards to ``inner`` while enabled.

    ``rebuild`` makes a new, unopened sink of the same kind for re-enabling (None: the sink cannot be reopened;
    switching it off is then final for this run). A sink the page switched on that fails to open (no virtual
    camera device, OBS not running) does not end its thread: the gate is off again and ``state`` says why.
    ``inner`` None: a sink the config left off, built by ``rebuild`` when the page switches it on.
    """

    def __init__(self, inner: FrameSink | None, rebuild: Callable[[], FrameSink] | None, *,
                 name: str | None = None, queue_chunks: int = 0) -> None:
        self.name = inner.name if inner is not None else str(name)
        self.inner: FrameSink | None = inner
        self.queue_chunks = int(getattr(inner, "queue_chunks", queue_chunks))
        self._rebuild = rebuild
        self._spec: ChunkSpec | None = None
        self._want = True
        self._open = False
        self._from_page = inner is None  # opened because of the page: a failure is reported, not raised
        self._lock = threading.Lock()
        self.state = "waiting"  # what status shows: waiting, open, disabled, failed: <why>

    # -- any thread ------------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return self._want

    @property
    def can_reopen(self) -> bool:
        return self._rebuild is not None

    def set_enabled(self, enabled: bool) -> None:
        """Ask for the sink open or closed; the sink's thread applies it at its next write (within a chunk)."""
        if enabled and not self._want and self._rebuild is None:
            raise ValueError(f"sink {self.name} cannot be reopened in this run; restart the daemon to enable it")
        with self._lock:
            self._from_page = self._from_page or (enabled and not self._want)
            self._want = enabled

    # -- the sink's thread (FrameSink) -----------------------------------------------------------

    def open(self, spec: ChunkSpec) -> None:
        self._spec = spec
        self._apply()

    def write(self, chunk: FrameChunk) -> None:
        self._apply()
        if self._open and self.inner is not None:
            self.inner.write(chunk)

    def hold(self, reason: str) -> None:
        self._apply()
        if self._open and self.inner is not None:
            self.inner.hold(reason)

    def interrupt(self, epoch: int) -> None:
        method = getattr(self.inner, "interrupt", None) if self._open else None
        if method is not None:
            method(epoch)

    def av_offset_s(self) -> float | None:
        method = getattr(self.inner, "av_offset_s", None) if self._open else None
        return None if method is None else method()

    def on_speech(self, speaking: bool) -> None:
        method = getattr(self.inner, "on_speech", None) if self._open else None
        if method is not None:
            method(speaking)

    def close(self) -> None:
        """The session is over: close the sink if it is open (the page's switch keeps its position)."""
        inner, self.inner, self._open = self.inner, None, False
        if inner is not None:
            inner.close()
        self.state = "closed"

    def __getattr__(self, name: str) -> Any:  # the inner sink's other attributes (stats, path, ...)
        inner = self.__dict__.get("inner")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)

    def _apply(self) -> None:
        with self._lock:
            want = self._want
        if want and not self._open and self._spec is not None:
            try:
                if self.inner is None:
                    self.inner = self._rebuild() if self._rebuild is not None else None
                if self.inner is not None:
                    self.inner.open(self._spec)
                    self._open, self.state = True, "open"
                    log.info("sink %s opened", self.name)
            except Exception as exc:
                if not self._from_page:
                    raise  # a sink of the config that cannot open fails as it always did
                self._failed(exc)
        elif not want and self._open:
            inner, self.inner, self._open = self.inner, None, False
            self.state = "disabled"
            if inner is not None:
                inner.close()
                log.info("sink %s closed", self.name)
        elif not want and not self.state.startswith("failed"):
            self.state = "disabled"

    def _failed(self, exc: Exception) -> None:
        """Switched on from the page but it cannot open: off again, the reason in ``state`` (and the log)."""
        inner, self.inner = self.inner, None
        with self._lock:
            self._want = False
        self.state = f"failed: {exc}"
        log.warning("sink %s could not be switched on: %s", self.name, exc)
        if inner is not None:
            try:
                inner.close()
            except Exception:  # half-open: closing is best effort
                log.debug("closing the half-open sink %s failed", self.name, exc_info=True)

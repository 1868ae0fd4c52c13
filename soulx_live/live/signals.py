"""SIGINT/SIGTERM for the daemon: the handler only counts; the main thread acts on the count.

The first signal starts the drain; a second one exits at once without finalising outputs (``os._exit(1)``).
Nothing is installed off the main thread (embedded use, tests): the caller handles signals there.
"""
from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType

__all__ = ["SignalLatch"]


class SignalLatch:
    """Counts SIGINT/SIGTERM while installed; :meth:`install` returns the function that restores the old ones."""

    def __init__(self) -> None:
        self.count = 0  # written only by the handler

    def install(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum: int, frame: FrameType | None) -> None:
            self.count += 1  # nothing else happens in a handler

        for sig in previous:
            signal.signal(sig, handler)

        def restore() -> None:
            for sig, old in previous.items():
                signal.signal(sig, old)

        return restore

"""The run's named threads: each body runs under one guard that hands its exception to the daemon's policy."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

__all__ = ["ThreadGroup"]

log = logging.getLogger(__name__)

ErrorPolicy = Callable[[str, Exception], None]


class ThreadGroup:
    """Daemon threads by name; ``on_error(name, exc)`` decides what a failure means, ``on_exit(name)`` runs last."""

    def __init__(self, on_error: ErrorPolicy, on_exit: Callable[[str], None] = lambda name: None) -> None:
        self._threads: dict[str, threading.Thread] = {}
        self._on_error = on_error
        self._on_exit = on_exit

    def start(self, name: str, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=self._guard, args=(name, target, *args), name=name, daemon=True)
        self._threads[name] = thread
        thread.start()

    def alive(self, predicate: Callable[[str], bool]) -> bool:
        """Whether any thread whose name satisfies ``predicate`` still runs."""
        return any(t.is_alive() for n, t in list(self._threads.items()) if predicate(n))

    def join_all(self, timeout_s: float) -> None:
        end = time.monotonic() + timeout_s
        for thread in list(self._threads.values()):
            thread.join(max(0.0, end - time.monotonic()))

    def _guard(self, name: str, target: Callable[..., None], *args: object) -> None:
        try:
            target(*args)
        except Exception as exc:
            log.debug("thread %s failed", name, exc_info=True)
            self._on_error(name, exc)
        finally:
            self._on_exit(name)

"""The run's state machine: one phase at a time, moved forward by the threads, read by all of them.

::

    starting -> running <-> restarting
        |          |             |
        +----------+-------------+--> draining --> closing --> stopped

``draining``: intake has stopped; the engine turns the audio it has into chunks and the sinks finalise.
``closing``: the drain deadline passed (or the run failed to start): every thread ends with what it has.
``restarting``: the engine worker is being restarted while the sinks hold the picture. Moves that go back
(a restart reported while draining) are ignored, so a late report can never reopen a finished run.
"""
from __future__ import annotations

import enum
import logging
import threading
import time

__all__ = ["Lifecycle", "Phase"]

log = logging.getLogger(__name__)


class Phase(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    RESTARTING = "restarting"
    DRAINING = "draining"
    CLOSING = "closing"
    STOPPED = "stopped"


_NEXT: dict[Phase, frozenset[Phase]] = {
    Phase.STARTING: frozenset({Phase.RUNNING, Phase.DRAINING, Phase.CLOSING}),
    Phase.RUNNING: frozenset({Phase.RESTARTING, Phase.DRAINING, Phase.CLOSING}),
    Phase.RESTARTING: frozenset({Phase.RUNNING, Phase.DRAINING, Phase.CLOSING}),
    Phase.DRAINING: frozenset({Phase.CLOSING}),
    Phase.CLOSING: frozenset({Phase.STOPPED}),
    Phase.STOPPED: frozenset(),
}


class Lifecycle:
    """Thread-safe phase holder. ``failed`` records that the run ends with an error (exit code 1)."""

    def __init__(self) -> None:
        self._phase = Phase.STARTING
        self._changed = threading.Condition()
        self.failed = False
        self.started = False  # the session reached running once (a later failure is not a startup error)
        self.drain_deadline: float | None = None  # monotonic time the drain must be over by (set when it begins)

    @property
    def phase(self) -> Phase:
        return self._phase

    def advance(self, to: Phase) -> bool:
        """Move to ``to`` when the state machine allows it from here; False (and no change) otherwise."""
        with self._changed:
            if to not in _NEXT[self._phase]:
                return False
            log.debug("lifecycle: %s -> %s", self._phase.value, to.value)
            self._phase = to
            self._changed.notify_all()
            return True

    def session_started(self) -> None:
        """The session runs: later failures are run-time errors, not startup errors."""
        self.started = True
        self.advance(Phase.RUNNING)

    def close(self) -> None:
        """Walk forward to ``stopped`` from wherever the run is (the end of ``Daemon.run``)."""
        for phase in (Phase.DRAINING, Phase.CLOSING, Phase.STOPPED):
            self.advance(phase)

    def drain_left_s(self, default_s: float) -> float:
        """Seconds left until the drain deadline (``default_s`` before a drain began; 0 once closing)."""
        if self.closing:
            return 0.0
        if self.drain_deadline is None:
            return default_s
        return max(0.0, self.drain_deadline - time.monotonic())

    @property
    def stopping(self) -> bool:
        """A stop began: intake ends and the engine drains (what a first Ctrl-C does)."""
        return self._phase in (Phase.DRAINING, Phase.CLOSING, Phase.STOPPED)

    @property
    def closing(self) -> bool:
        """The drain is over or abandoned: every thread finishes now with what it has."""
        return self._phase in (Phase.CLOSING, Phase.STOPPED)

    def wait_stopping(self, timeout_s: float) -> bool:
        """Block until a stop began or ``timeout_s`` passed; whether one began."""
        with self._changed:
            return self._changed.wait_for(lambda: self.stopping, timeout_s)

"""The daemon's own errors, in one place so every part (factories, drivers, the worker, the CLI) can raise or
catch them without importing the daemon."""
from __future__ import annotations

__all__ = ["DaemonError", "DaemonUnavailable"]


class DaemonError(RuntimeError):
    """The daemon cannot start or run as configured; the message says what is missing and the fix."""


class DaemonUnavailable(DaemonError):
    """No daemon answered on the control socket."""

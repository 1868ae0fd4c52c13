"""Where the engine runs: in a supervised worker process or in the daemon's own process."""
from __future__ import annotations

from typing import Literal

from soulx_live.config import SoulxConfig
from soulx_live.errors import DaemonError

__all__ = ["Isolation", "choose_isolation"]

Isolation = Literal["process", "thread", "remote"]


def choose_isolation(config: SoulxConfig, *, injected_engine: bool = False) -> Isolation:
    """``"process"`` (supervised worker), ``"thread"`` (in this process) or ``"remote"`` (``remote.address``: the
    engine of ``soulx-live serve`` on another machine) for this configuration.

    ``auto``: process for live input (mic, loopback, push, a file or script played in real time), in-process
    for a file or script rendered as fast as possible (no process hop, lossless: the engine waits for the
    slowest sink). An injected engine cannot cross a process boundary, so it always runs in-process
    (``isolation=process`` with one is an error).
    """
    mode = config.supervisor.isolation
    if config.remote.address and not injected_engine:
        return "remote"  # the engine runs on the machine `soulx-live serve` runs on
    if injected_engine:
        if mode == "process":
            raise DaemonError("supervisor.isolation=process needs the engine built from the configuration "
                              "(an engine object passed in cannot move to a worker process); use isolation=auto")
        return "thread"
    if mode != "auto":
        return mode
    live = config.audio.source not in ("file", "script") or config.audio.realtime
    return "process" if live else "thread"

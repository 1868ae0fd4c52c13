"""What the push server calls: the daemon implements :class:`PushHandler` (``soulx_live.push_bridge``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

__all__ = ["PushHandler", "PushReceipt", "QueueFullError"]


class QueueFullError(ValueError):
    """The handler holds as much pushed audio as it may (``push.max_queued_s``); the client gets a 429
    ``queue_full`` with this message and should wait for ``finished`` events or interrupt."""


@dataclass(frozen=True)
class PushReceipt:
    """Where a pushed utterance sits on the session timeline (samples at the engine rate)."""

    utterance_id: str
    start_sample: int
    n_samples: int


class PushHandler(Protocol):
    """Called from the server's worker threads (must be thread-safe). Bad input raises ValueError/TypeError
    with a message for the client (QueueFullError when too much audio waits already); the session goes on."""

    def push_pcm(self, pcm: np.ndarray, *, utterance_id: str) -> PushReceipt:
        """Queue float32 mono PCM at 16 kHz (the server has converted and resampled it)."""
        ...

    def say(self, text: str, *, voice: str | None, utterance_id: str) -> PushReceipt:
        """Synthesise ``text`` and queue it."""
        ...

    def interrupt(self) -> int:
        """Barge-in; returns the new epoch."""
        ...

    def status(self) -> dict[str, object]:
        """A JSON-able summary of the daemon's state."""
        ...

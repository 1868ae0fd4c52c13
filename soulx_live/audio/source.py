"""What every audio input offers the daemon: blocks of mono float32 samples, and a way to stop them."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np

__all__ = ["AudioSource"]


class AudioSource(Protocol):
    """A file, a sound device, pushed audio or a TTS script, as the intake thread plays it."""

    name: str
    realtime: bool  # True: blocks come at the speed of speech; False: as fast as they are taken

    @property
    def duration_s(self) -> float: ...

    def blocks(self) -> Iterator[np.ndarray]: ...

    def stop(self) -> None: ...

"""The last fallback of a hold: the lite renderer animating the last engine frame on silence.

When the engine is away and no idle frames were cached yet (it crashed before the avatar was ever silent), a
frozen frame would be all that is left. The lite renderer finds the face in that frame and keeps it alive —
blinks, head sway, breathing, mouth closed — at a few milliseconds per frame on the CPU, without torch. A frame
in which no face is found gives None, and the hold keeps the last frame (never black either way).
"""
from __future__ import annotations

import logging
from fractions import Fraction

import numpy as np

from engine.interface import ChunkSpec, SessionRequest

__all__ = ["LiteIdleAnimator"]

log = logging.getLogger(__name__)


class LiteIdleAnimator:
    """``next_frame()`` gives the next idle frame of ``frame``'s face (None when the face cannot be animated)."""

    def __init__(self, frame: np.ndarray, spec: ChunkSpec, seed: int = 0) -> None:
        self._spf = spec.samples_per_frame
        self._session = None
        fps = Fraction(spec.fps)
        if fps.denominator != 1:
            return  # the lite renderer runs at whole frame rates
        try:
            from engine.lite.engine import LiteConfig, LiteEngine

            engine = LiteEngine(LiteConfig(width=spec.width, height=spec.height, fps=int(fps), frames_per_chunk=1,
                                           sample_rate=spec.sample_rate))
            self._session = engine.start_session(SessionRequest(session_id="hold", avatar=frame, seed=seed))
            self._session.push_audio(np.zeros(2 * self._spf, np.float32))  # covers the renderer's look-ahead
        except Exception as exc:  # noqa: BLE001 - NoFaceError and friends: the hold keeps the last frame instead
            log.info("hold: cannot animate the last frame with the lite renderer (%s); keeping it", exc)
            self._session = None

    @property
    def usable(self) -> bool:
        return self._session is not None

    def next_frame(self) -> np.ndarray | None:
        if self._session is None:
            return None
        self._session.push_audio(np.zeros(self._spf, np.float32))
        return self._session.next_chunk().frames[0]

"""Temporal smoothing of per-frame person probabilities, so still edges stay still.

A segmentation network answers each frame on its own; camera noise, compression and the diffusion engine's
frame-to-frame texture changes make its edge pixels wobble by a few percent, which reads as a shimmering outline.
:class:`TemporalMatte` blends each new answer into the running one with a per-pixel weight: ``rest_weight`` where
the picture did not change (a slow exponential average, flicker filtered out) rising to 1 where it moved by
``motion_full`` grey levels or more (a moving edge follows at once, no ghost trailing behind the head).
"""
from __future__ import annotations

import cv2
import numpy as np

__all__ = ["TemporalMatte"]

MOTION_BLUR_SIGMA = 2.0  # px: pictures are compared blurred this much


class TemporalMatte:
    """Motion-adaptive exponential average of person probabilities (float32 H x W); one per stream."""

    def __init__(self, rest_weight: float = 0.25, motion_full: float = 12.0) -> None:
        if not 0.0 < rest_weight <= 1.0:
            raise ValueError(f"rest_weight must be in (0, 1], got {rest_weight}")
        self.rest_weight = rest_weight
        self.gain = 255.0 / max(motion_full, 1e-3)  # guide is in [0, 1]: this many grey levels of change -> weight 1
        self._prob: np.ndarray | None = None
        self._guide: np.ndarray | None = None
        self.steady: np.ndarray | None = None  # the picture's grey averaged the same way: a noise-free guide for edges

    def reset(self) -> None:
        """Forget the history (a new session or a cut)."""
        self._prob = self._guide = self.steady = None

    def update(self, prob: np.ndarray, guide: np.ndarray) -> np.ndarray:
        """The smoothed probability for this frame; ``guide`` is its grey in [0, 1] (same shape). Afterwards
        :attr:`steady` is the grey averaged with the same weights (fit edges to it, not to the noisy frame)."""
        # Pixel noise is not motion: compare the pictures blurred (noise averages out, edges that moved stay).
        calm = cv2.GaussianBlur(guide, (0, 0), MOTION_BLUR_SIGMA)
        if self._prob is None or self._guide is None or self.steady is None or self._prob.shape != prob.shape:
            self._prob, self._guide = prob.astype(np.float32, copy=True), calm
            self.steady = guide.astype(np.float32, copy=True)
            return self._prob
        motion = cv2.absdiff(calm, self._guide)
        weight = np.clip(self.rest_weight + self.gain * motion, self.rest_weight, 1.0)
        self._prob += weight * (prob - self._prob)
        self.steady += weight * (guide - self.steady)
        self._guide = calm
        return self._prob
